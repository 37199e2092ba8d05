// dtype_test.cpp: element conversions on unaligned data. A valid safetensors file
// whose JSON header has odd length puts every 16-bit element at an odd address;
// reading it must give the same values as an aligned copy (the sanitizer build
// turns a misaligned uint16_t load into a failure, so this also guards the UB).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "engine/dtype.h"
#include "engine/safetensors.h"
#include "engine/synth_checkpoint.h"
#include "engine/weight_source.h"
#include "test_util.h"

namespace dtype_test {

using namespace moebench;

namespace {
// Rewrites a safetensors file with one space appended to its JSON header: the
// header length becomes odd (the writer pads it to a multiple of 8), the file stays valid.
void make_header_odd(const std::string& path) {
  std::string bytes = test::read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  ASSERT_EQ(n % 2, 0u);
  std::string header = bytes.substr(8, n) + " ";
  uint64_t m = header.size();
  std::string out(reinterpret_cast<const char*>(&m), 8);
  test::write_file(path, out + header + bytes.substr(8 + n));
}
}  // namespace

TEST(DType, ConvertsFromAndToOddAddresses) {
  const std::vector<float> values = {1.0f, -2.5f, 0.15625f, 65504.0f, -0.0f, 3.0e-5f, 1.0e30f};
  for (DType t : {DType::bf16, DType::f16}) {
    // One spare byte in front, so element i sits at an odd address.
    std::vector<uint8_t> buf(1 + 2 * values.size());
    from_f32(t, values.data(), buf.data() + 1, values.size());
    std::vector<float> back(values.size());
    to_f32(t, buf.data() + 1, back.data(), values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      uint16_t h = t == DType::bf16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
      float expect = t == DType::bf16 ? bf16_to_f32(h) : f16_to_f32(h);
      EXPECT_EQ(back[i], expect) << dtype_name(t) << " element " << i;
    }
  }
}

TEST(DType, ZeroElementsTouchNothing) {
  // An empty tensor's buffers may be null (std::vector<float>().data()).
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    to_f32(t, nullptr, nullptr, 0);
    from_f32(t, nullptr, nullptr, 0);
  }
}

TEST(DType, CheckpointWithOddHeaderLengthReadsTheSameValues) {
  ModelConfig c = preset_config("micro");
  for (DType t : {DType::bf16, DType::f16}) {
    test::TempDir d;
    write_synthetic_checkpoint(c, 3, t, d.str());
    make_header_odd(d.str("model.safetensors"));
    {
      SafetensorsFile f(d.str("model.safetensors"));
      bool odd = false;
      for (auto& [name, v] : f.tensors()) odd = odd || (reinterpret_cast<uintptr_t>(v.data) & 1u);
      ASSERT_TRUE(odd) << "the rewritten header should leave tensors at odd addresses";
    }
    auto w = WeightSource::checkpoint(d.str());
    auto syn = WeightSource::synthetic(c, 3, t);
    for (auto& s : model_tensor_specs(c)) {
      std::vector<float> a(s.numel()), b(s.numel());
      w.read_f32(s, a.data());
      syn.read_f32(s, b.data());
      ASSERT_EQ(a, b) << dtype_name(t) << " " << s.name;
    }
  }
}

}  // namespace dtype_test
