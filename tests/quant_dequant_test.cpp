// quant_dequant_test.cpp: the device dequantisation prefill uses for quantised experts
// (engine/cuda/quant_dequant.h) is bit-identical to the CPU's definition: dequantize()
// (engine/quant.h) rounded to bf16, for fp8 (partial 128x128 blocks), int8, int4
// symmetric and with zero points (partial groups), int4 codes reordered into the
// decode GEMV's paired word order too, into an output 16-byte aligned (8 codes a thread)
// and not (one element a thread); and the SwiGLU product of decode
// agrees with silu(g) * u within bf16 rounding plus the fast exponential's error.
// Skipped, with a message, when no GPU is present.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/quant_dequant.h"
#include "engine/dtype.h"
#include "engine/quant.h"

namespace quant_dequant_test {

using namespace moebench;

namespace {

// Device copies of host bytes, freed at scope exit.
struct Dev {
  std::vector<void*> ptrs;
  ~Dev() {
    for (void* p : ptrs) cudaFree(p);
  }
  void* alloc(size_t n) {
    void* d = nullptr;
    CUDA_CHECK(cudaMalloc(&d, std::max<size_t>(n, 16)));
    ptrs.push_back(d);
    return d;
  }
  const uint8_t* up(const std::vector<uint8_t>& v) {
    if (v.empty()) return nullptr;
    void* d = alloc(v.size());
    CUDA_CHECK(cudaMemcpy(d, v.data(), v.size(), cudaMemcpyHostToDevice));
    return static_cast<const uint8_t*>(d);
  }
};

// Elements of got (bf16 bits) that are not ref rounded to bf16 (none: ""), with the first's place.
std::string mismatches(const std::vector<uint16_t>& got, const std::vector<float>& ref, int64_t cols) {
  int64_t wrong = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != f32_to_bf16(ref[i]) && wrong++ == 0) first = static_cast<int64_t>(i);
  if (wrong == 0) return "";
  return std::to_string(wrong) + " wrong, the first at (" + std::to_string(first / cols) + ", " +
         std::to_string(first % cols) + ")";
}

class QuantDequantCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA dequantisation tests skipped";
  }
};

}  // namespace

TEST_F(QuantDequantCuda, EveryFormatIsBitIdenticalToTheCpuDefinitionRoundedToBf16) {
  for (const int offset : {0, 1}) {  // out + 1 element: not 16-byte aligned, one element a thread
    SCOPED_TRACE("output offset " + std::to_string(offset));
    const int64_t rows = 200, cols = 328;  // partial fp8 blocks and int4 groups
    std::mt19937 g(5);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    std::vector<float> w(static_cast<size_t>(rows * cols));
    for (auto& v : w) v = nd(g) + (nd(g) > 0.08f ? 0.3f : 0.0f);  // some outliers
    struct Case {
      QuantFormat f;
      bool zp;
    };
    for (Case c : {Case{QuantFormat::bf16, false}, Case{QuantFormat::fp8, false}, Case{QuantFormat::int8, false},
                   Case{QuantFormat::int4, false}, Case{QuantFormat::int4, true}}) {
      SCOPED_TRACE(std::string(quant_format_name(c.f)) + (c.zp ? " zero points" : ""));
      const QuantMatrix m = quantize(c.f, w.data(), rows, cols, c.zp);
      std::vector<float> ref(w.size());
      dequantize(m, ref.data());
      Dev dev;
      auto* out = static_cast<__nv_bfloat16*>(dev.alloc(w.size() * 2 + 16)) + offset;
      cuda::dequantize_bf16(c.f, rows, cols, dev.up(m.q), dev.up(m.scale), c.zp ? dev.up(m.zero) : nullptr, out,
                            nullptr);
      std::vector<uint16_t> got(w.size());
      CUDA_CHECK(cudaMemcpy(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost));
      EXPECT_EQ(mismatches(got, ref, cols), "");
    }
  }
}

// int4 codes reordered into the paired word order on the device (int4_pair_words) and
// dequantised as paired: the same bf16 values as the codes as stored (a wrong nibble
// slot shows at once); a part that is not whole 32-bit words is a one-line Error.
TEST_F(QuantDequantCuda, PairedInt4DequantisesToTheSameValues) {
  for (const int offset : {0, 1}) {
    SCOPED_TRACE("output offset " + std::to_string(offset));
    const int64_t rows = 200, cols = 328;
    std::mt19937 g(6);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    std::vector<float> w(static_cast<size_t>(rows * cols));
    for (auto& v : w) v = nd(g);
    for (bool zp : {false, true}) {
      SCOPED_TRACE(zp ? "zero points" : "symmetric");
      const QuantMatrix m = quantize(QuantFormat::int4, w.data(), rows, cols, zp);
      std::vector<float> ref(w.size());
      dequantize(m, ref.data());
      Dev dev;
      auto* out = static_cast<__nv_bfloat16*>(dev.alloc(w.size() * 2 + 16)) + offset;
      auto* q = const_cast<uint8_t*>(dev.up(m.q));
      cuda::int4_pair_words(q, static_cast<int64_t>(m.q.size()), nullptr);
      std::vector<uint8_t> paired(m.q.size());
      CUDA_CHECK(cudaMemcpy(paired.data(), q, paired.size(), cudaMemcpyDeviceToHost));
      EXPECT_NE(paired, m.q);  // reordered
      cuda::dequantize_bf16(QuantFormat::int4, rows, cols, q, dev.up(m.scale), zp ? dev.up(m.zero) : nullptr, out,
                            nullptr, true);
      std::vector<uint16_t> got(w.size());
      CUDA_CHECK(cudaMemcpy(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost));
      EXPECT_EQ(mismatches(got, ref, cols), "");
    }
  }
  try {
    Dev dev;
    cuda::int4_pair_words(static_cast<uint8_t*>(dev.alloc(16)), 6, nullptr);
    ADD_FAILURE() << "no error for 6 bytes";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
}

TEST_F(QuantDequantCuda, SiluMulMatchesTheReferenceWithinBf16Rounding) {
  const int64_t n = 10000;
  std::mt19937 g(9);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> a(n), b(n);
  for (int64_t i = 0; i < n; ++i) a[i] = nd(g), b[i] = nd(g);
  Dev dev;
  auto* ga = static_cast<float*>(dev.alloc(n * 4));
  auto* gb = static_cast<float*>(dev.alloc(n * 4));
  auto* h = static_cast<__nv_bfloat16*>(dev.alloc(n * 2));
  CUDA_CHECK(cudaMemcpy(ga, a.data(), n * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(gb, b.data(), n * 4, cudaMemcpyHostToDevice));
  cuda::silu_mul_bf16(ga, gb, h, n, nullptr);
  std::vector<uint16_t> got(n);
  CUDA_CHECK(cudaMemcpy(got.data(), h, n * 2, cudaMemcpyDeviceToHost));
  for (int64_t i = 0; i < n; ++i) {
    const double ref = a[i] / (1.0 + std::exp(-static_cast<double>(a[i]))) * b[i];
    // bf16 rounding (2^-9 relative) plus __expf's few-ulp error, relative to the value.
    EXPECT_NEAR(bf16_to_f32(got[i]), ref, std::fabs(ref) * (1.0 / 256) + 1e-30) << i;
  }
}

}  // namespace quant_dequant_test

#endif  // MOEBENCH_HAVE_CUDA
