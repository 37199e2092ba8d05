// fp8_scale_dtype_test.cpp: block-fp8 checkpoints whose `weight_scale_inv` is stored in BF16
// or F16 instead of F32, as some of Qwen's published FP8 files store it (Qwen3-32B-FP8 in
// BF16, Qwen3-4B-Instruct-2507-FP8 in F16, as other engines report), here on the Qwen3-MoE
// names. Such a file runs in fp8 with the scales held as F32, exactly: its expert bytes,
// logits (fp8 and bf16, resident, pinned, the CPU disk tier) and host store are those of the
// same file with the scales written as F32. The CUDA disk tier, which copies stored bytes,
// refuses it in one line; a scale in any other dtype is refused in one line. int4 scales in
// F16 read as their BF16 copy.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/dtype.h"
#include "engine/expert_host_store.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "engine/synth_checkpoint.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "published_checkpoint.h"
#include "teacher_forced.h"
#include "test_util.h"

namespace fp8_scale_dtype_test {

using namespace moebench;

namespace {

// Writes the Qwen3-MoE model `c` as a published block-fp8 checkpoint into dir: every
// linear layer but the router gate and lm_head as the seed-5 synthetic model's fp8 codes,
// `weight_scale_inv` in `scale_dtype`. The scales are first rounded to bf16 (and so are
// exact in F16 too for these magnitudes), so every scale dtype stores the same values.
void write_fp8(const ModelConfig& c, DType scale_dtype, const std::string& dir) {
  const WeightSource ref = WeightSource::synthetic(c, 5, DType::bf16);
  test::write_published_tensors(c, dir, [&](const TensorSpec& sp, const std::string& base, std::vector<TensorToWrite>& out) {
    const QuantMatrix m = ref.read_quant(sp, QuantFormat::fp8);
    const auto parts = quant_parts(QuantFormat::fp8, sp.shape[0], sp.shape[1]);
    out.push_back(test::tensor_of(base + ".weight", DType::f8_e4m3, parts[0].shape, m.q));
    const size_t n = m.scale.size() / 4;
    std::vector<float> s(n);
    std::memcpy(s.data(), m.scale.data(), m.scale.size());
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) {
      s[i] = bf16_to_f32(f32_to_bf16(s[i]));
      h[i] = scale_dtype == DType::f16 ? f32_to_f16(s[i]) : f32_to_bf16(s[i]);
    }
    // 4-byte dtypes get the F32 bits (I32: a dtype no reader takes), 2-byte ones their own.
    if (dtype_size(scale_dtype) == 4) out.push_back(test::tensor_of(base + ".weight_scale_inv", scale_dtype, parts[1].shape, s));
    else out.push_back(test::tensor_of(base + ".weight_scale_inv", scale_dtype, parts[1].shape, h));
  });
  auto cj = config_to_json(c);
  cj["quantization_config"] = {
      {"quant_method", "fp8"}, {"activation_scheme", "dynamic"}, {"fmt", "e4m3"}, {"weight_block_size", {128, 128}}};
  test::write_file(dir + "/config.json", cj.dump());
}

}  // namespace

TEST(Fp8ScaleDtype, Bf16AndF16ScalesRunAsTheirF32Copy) {
  const ModelConfig c = preset_config("tiny-qwen3");
  test::TempDir f32dir;
  write_fp8(c, DType::f32, f32dir.str());
  const WeightSource want = WeightSource::checkpoint(f32dir.str());
  ASSERT_EQ(want.expert_format(), QuantFormat::fp8);
  for (DType d : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(d));
    test::TempDir dir;
    write_fp8(c, d, dir.str());
    const WeightSource ck = WeightSource::checkpoint(dir.str());
    EXPECT_EQ(ck.expert_format(), QuantFormat::fp8);
    EXPECT_EQ(ck.attention_format(), QuantFormat::fp8);
    // The stored format's bytes: the codes as they are, the scales as F32 of the same values.
    for (const std::string& n : {names::expert(1, 3, "w2"), names::layer(0, "self_attn.o_proj.weight")}) {
      const TensorSpec s = tensor_spec(c, n);
      const QuantMatrix got = ck.read_quant(s, QuantFormat::fp8), ref = want.read_quant(s, QuantFormat::fp8);
      EXPECT_EQ(got.q, ref.q) << n;
      EXPECT_EQ(got.scale, ref.scale) << n;
      std::vector<float> a(static_cast<size_t>(s.numel())), b(a.size());
      ck.read_f32(s, a.data());
      want.read_f32(s, b.data());
      EXPECT_EQ(a, b) << n;
    }
    // The model: the same logits in fp8 and bf16, resident and pinned, and the same host store.
    test::expect_generates_as_copy(ck, want, QuantFormat::fp8);
    test::expect_host_store_as_copy(ck, want, QuantFormat::fp8);
    EngineSettings s = test::with_expert_dtype("fp8");
    s.weight_dtype = "fp8";
    EXPECT_EQ(test::checkpoint_logits(ck, s), test::checkpoint_logits(want, s));
    // The CPU backend's disk tier reads the stored parts and converts them as the loader does.
    s.expert_tier = "disk";
    s.cache_policy = "lru";
    s.cache_slots = c.num_experts_per_tok + 1;
    EXPECT_EQ(test::checkpoint_logits(ck, s), test::checkpoint_logits(want, s));
    // The CUDA backend's disk tier copies stored bytes: refused in one line naming the tensor's dtype.
    const std::string e = test::error_of([&] { ExpertHostStore::disk(ck, {}, QuantFormat::fp8); });
    EXPECT_NE(e.find(std::string("weight_scale_inv in ")), std::string::npos) << e;
    EXPECT_NE(e.find(std::string(" is ") + dtype_name(d) + ", expected F32 (the disk tier copies expert bytes"),
              std::string::npos)
        << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST(Fp8ScaleDtype, AScaleInAnotherDtypeIsOneLine) {
  const ModelConfig c = preset_config("tiny-qwen3");
  test::TempDir dir;
  write_fp8(c, DType::i32, dir.str());
  const std::string e = test::error_of([&] { WeightSource::checkpoint(dir.str()); });
  EXPECT_NE(e.find(".weight_scale_inv' has dtype I32, expected F32, BF16 or F16 (fp8 weights)"), std::string::npos) << e;
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

// The same conversion for int4: scales given as F16 instead of BF16 are held as BF16 (here
// values both dtypes hold exactly, so the bytes are the BF16 file's).
TEST(Fp8ScaleDtype, Int4ScalesInF16ReadAsTheirBf16Copy) {
  const ModelConfig c = preset_config("micro");
  test::TempDir d;
  write_synthetic_checkpoint(c, 3, DType::bf16, d.str(), 1ull << 30, QuantFormat::int4);
  const WeightSource want = WeightSource::checkpoint(d.str());
  std::vector<TensorToWrite> out;
  {
    SafetensorsFile f(d.str("model.safetensors"));
    for (auto& [name, v] : f.tensors()) {
      if (name.size() > 13 && name.compare(name.size() - 13, 13, ".weight_scale") == 0 && v.dtype == DType::bf16) {
        std::vector<uint16_t> h(static_cast<size_t>(v.numel()));
        for (size_t i = 0; i < h.size(); ++i) h[i] = f32_to_f16(bf16_to_f32(reinterpret_cast<const uint16_t*>(v.data)[i]));
        out.push_back(test::tensor_of(name, DType::f16, v.shape, h));
      } else {
        out.push_back(test::tensor_of(name, v.dtype, v.shape, std::vector<uint8_t>(v.data, v.data + v.nbytes)));
      }
    }
  }
  test::TempDir e;
  write_safetensors(e.str("model.safetensors"), out);
  std::filesystem::copy_file(d.str("config.json"), e.str("config.json"));
  const WeightSource ck = WeightSource::checkpoint(e.str());
  const TensorSpec s = tensor_spec(c, names::expert(1, 2, "w2"));
  std::vector<const TensorView*> parts;
  ASSERT_EQ(ck.stored_format(s, &parts), QuantFormat::int4);
  ASSERT_EQ(parts.at(1)->dtype, DType::f16);
  const QuantMatrix got = ck.read_quant(s, QuantFormat::int4), ref = want.read_quant(s, QuantFormat::int4);
  EXPECT_EQ(got.q, ref.q);
  EXPECT_EQ(got.scale, ref.scale);
}

}  // namespace fp8_scale_dtype_test
