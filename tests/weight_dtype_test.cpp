// weight_dtype_test.cpp: quantised attention projections (weight_dtype fp8 | int8) on
// the CPU backend (the reference).
//   weight_dtype=F quantises exactly q/k/v/o_proj on load: the logits equal, bit for bit,
//   those of the bf16 model on a checkpoint holding those four matrices as the fp32
//   values of quantize(F) and every other tensor as it was (so norms, the router gate,
//   embeddings, lm_head and the experts stay untouched, and a wrong scale or block
//   would show);
//   a checkpoint that stores them as published fp8 (`.weight` F8_E4M3 +
//   `.weight_scale_inv`) loads as fp8: the same logits as quantising on load, its format
//   reported, quantising it again into int8 refused in one line, no quality pass (no
//   bf16 original);
//   the quality pass covers weight_dtype (top-1 / KL against the bf16 model);
//   bad values are one-line errors naming the setting. (The CUDA model against this
//   reference: tests/cuda_quant_model_test.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "engine/cpu_model.h"
#include "engine/engine.h"
#include "engine/safetensors.h"
#include "engine/synth_checkpoint.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "suites/quality.h"
#include "teacher_forced.h"
#include "test_util.h"

namespace weight_dtype_test {

using namespace moebench;

namespace {

const std::vector<int32_t> kPrompt = {1, 415, 293, 90, 285, 114, 287, 461, 75, 2};

std::vector<float> logits_of(const WeightSource& w, const std::string& weight_dtype) {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.settings.weight_dtype = weight_dtype;
  CpuModel m(ctx);
  return test::teacher_forced_logits(m, kPrompt);
}

// A checkpoint of the synthetic model `c` (seed) whose attention projections are stored
// as `attn`: "f32:F" the fp32 values of quantize(F), "fp8" the published fp8 parts; every
// other tensor bf16 as make-model writes it.
void write_checkpoint(const ModelConfig& c, uint64_t seed, const std::string& attn, const std::string& dir) {
  write_synthetic_checkpoint(c, seed, DType::bf16, dir);  // config.json; the tensors are rewritten below
  const WeightSource src = WeightSource::synthetic(c, seed);
  std::vector<TensorToWrite> out;
  for (const TensorSpec& s : model_tensor_specs(c)) {
    if (!is_attention_projection(s.name)) {
      out.push_back({s.name, DType::bf16, s.shape, [s, seed](uint8_t* dst, size_t) {
                       synth_fill(s, seed, DType::bf16, dst, 0, s.numel());
                     }});
      continue;
    }
    if (attn == "fp8") {
      const QuantMatrix m = src.read_quant(s, QuantFormat::fp8);
      const std::string base = s.name.substr(0, s.name.size() - std::string(".weight").size());
      const auto parts = quant_parts(QuantFormat::fp8, s.shape[0], s.shape[1]);
      out.push_back({base + parts[0].suffix, parts[0].dtype, parts[0].shape,
                     [m](uint8_t* dst, size_t n) { std::memcpy(dst, m.q.data(), n); }});
      out.push_back({base + parts[1].suffix, parts[1].dtype, parts[1].shape,
                     [m](uint8_t* dst, size_t n) { std::memcpy(dst, m.scale.data(), n); }});
      continue;
    }
    const QuantFormat f = parse_quant_format(attn.substr(4), "test");
    std::vector<float> v(static_cast<size_t>(s.numel()));
    dequantize(src.read_quant(s, f), v.data());
    out.push_back({s.name, DType::f32, s.shape, [v](uint8_t* dst, size_t n) { std::memcpy(dst, v.data(), n); }});
  }
  write_safetensors((std::filesystem::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
}

using test::error_of;

}  // namespace

TEST(WeightDtype, QuantisesExactlyTheAttentionProjections) {
  const ModelConfig c = preset_config("micro");
  const WeightSource syn = WeightSource::synthetic(c, 11);
  const auto bf16 = logits_of(syn, "bf16");
  for (const char* d : {"fp8", "int8"}) {
    SCOPED_TRACE(d);
    test::TempDir dir;
    write_checkpoint(c, 11, std::string("f32:") + d, dir.str());
    const WeightSource ck = WeightSource::checkpoint(dir.str());
    const auto q = logits_of(syn, d);
    EXPECT_NE(q, bf16) << "the attention projections were not quantised";
    EXPECT_EQ(q, logits_of(ck, "bf16")) << "not the model whose q/k/v/o hold the format's values";
    for (float x : q) ASSERT_TRUE(std::isfinite(x));
  }
}

TEST(WeightDtype, PublishedFp8AttentionLoadsAsFp8) {
  const ModelConfig c = preset_config("micro");
  test::TempDir dir;
  write_checkpoint(c, 11, "fp8", dir.str());
  const WeightSource ck = WeightSource::checkpoint(dir.str());
  EXPECT_EQ(ck.attention_format(), QuantFormat::fp8);
  EXPECT_EQ(ck.expert_format(), QuantFormat::bf16);
  const WeightSource syn = WeightSource::synthetic(c, 11);
  const auto ref = logits_of(syn, "fp8");
  EXPECT_EQ(logits_of(ck, "fp8"), ref);
  EXPECT_EQ(logits_of(ck, "bf16"), ref);  // dequantised: the same values
  const std::string e = error_of([&] { logits_of(ck, "int8"); });
  EXPECT_NE(e.find("setting weight_dtype=int8: checkpoint:"), std::string::npos) << e;
  EXPECT_NE(e.find("stores its attention projections as fp8, quantising them again is not supported"),
            std::string::npos)
      << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EngineSettings s;
  s.weight_dtype = "fp8";
  EXPECT_FALSE(suites::measure_quality(ck, s, "cpu", kPrompt).has_value());
}

TEST(WeightDtype, QualityPassCoversWeightDtype) {
  const WeightSource w = WeightSource::synthetic(preset_config("tiny"), 5);
  std::vector<int32_t> prompt = {1};
  for (int i = 1; i < 32; ++i) prompt.push_back(3 + (i * 7919) % (w.config().vocab_size - 3));
  for (const char* d : {"fp8", "int8"}) {
    EngineSettings s;
    s.weight_dtype = d;
    auto q = suites::measure_quality(w, s, "cpu", prompt);
    ASSERT_TRUE(q.has_value()) << d;
    EXPECT_EQ(q->reference, "bf16 attention projections");
    EXPECT_EQ(q->positions, 32);
    EXPECT_GT(q->mean_kl, 0) << d;
    EXPECT_TRUE(std::isfinite(q->mean_kl)) << d;
    s.expert_dtype = "int4";
    q = suites::measure_quality(w, s, "cpu", prompt);
    ASSERT_TRUE(q.has_value()) << d;
    EXPECT_EQ(q->reference, "bf16 experts and attention projections");
  }
}

TEST(WeightDtype, BadValuesAreOneLineErrors) {
  EngineSettings s;
  std::string e = error_of([&] { s.set("weight_dtype", "int4"); });
  EXPECT_EQ(e, "setting weight_dtype=int4: expected one of bf16|fp8|int8");
  e = error_of([&] { s.set("weight_dtype", "fp16"); });
  EXPECT_EQ(e, "setting weight_dtype=fp16: expected one of bf16|fp8|int8");
  const WeightSource w = WeightSource::synthetic(preset_config("micro"), 1);
  e = error_of([&] { resolve_weight_format("int4", w); });
  EXPECT_NE(e.find("setting weight_dtype=int4: expected bf16, fp8 or int8"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  e = error_of([&] { logits_of(w, "int4"); });  // set directly, past set()'s check
  EXPECT_NE(e.find("setting weight_dtype=int4"), std::string::npos) << e;
}

}  // namespace weight_dtype_test
