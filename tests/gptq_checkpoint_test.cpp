// gptq_checkpoint_test.cpp: published 4-bit GPTQ and AWQ checkpoints (quant_method "gptq",
// "awq" in its GEMM layout).
//   every quantised tensor reads back as the codes it was written from: the values
//   (u - z) x scale, exactly, through read_f32; as int4 (group_size 128, inputs in order)
//   the same nibbles in moebench's row order, the scales as bf16, the zero points kept
//   when sym is false; checkpoint_format gptq (zero points stored minus 1) and gptq_v2; AWQ
//   (codes packed along the outputs in its nibble order, zero points as they are);
//   the model generates as the same model written in moebench's int4 layout, at
//   expert_dtype int4 and bf16, resident and pinned; the disk tier refuses it in one line;
//   other group sizes and act-order g_idx run dequantised (expert_dtype=bf16) and are
//   refused as int4 in one line; a malformed config or tensor is one line naming it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/cpu_model.h"
#include "engine/engine.h"
#include "engine/expert_host_store.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "gptq_checkpoint.h"
#include "teacher_forced.h"
#include "test_util.h"

namespace gptq_checkpoint_test {

using namespace moebench;
using test::GptqOptions;

namespace {

std::vector<float> logits_of(const WeightSource& w, const EngineSettings& s) { return test::checkpoint_logits(w, s); }
EngineSettings with_dtype(const std::string& dtype) { return test::with_expert_dtype(dtype); }

// The tensors every check reads: an expert of each shape and an attention projection.
std::vector<std::string> probes(const ModelConfig&) {
  return {names::expert(1, 2, "w1"), names::expert(0, 3, "w2"), names::layer(1, "self_attn.o_proj.weight")};
}

void expect_values(const WeightSource& ck, const ModelConfig& c, const GptqOptions& o) {
  for (const std::string& n : probes(c)) {
    const TensorSpec s = tensor_spec(c, n);
    const test::GptqCodes k = test::gptq_codes(s, o);
    std::vector<float> got(static_cast<size_t>(s.numel()));
    ck.read_f32(s, got.data());
    int bad = 0;
    for (int64_t r = 0; r < k.rows; ++r)
      for (int64_t i = 0; i < k.cols; ++i)
        if (got[r * k.cols + i] != k.value(r, i) && ++bad < 4)
          ADD_FAILURE() << n << " [" << r << ", " << i << "]: " << got[r * k.cols + i] << " != " << k.value(r, i);
    EXPECT_EQ(bad, 0) << n;
  }
}

// Rewrites the checkpoint's config.json with quantization_config[key] = value.
void set_config(const std::string& dir, const std::string& key, const nlohmann::json& value) {
  auto j = nlohmann::json::parse(test::read_file(dir + "/config.json"));
  if (value.is_null()) j["quantization_config"].erase(key);
  else j["quantization_config"][key] = value;
  test::write_file(dir + "/config.json", j.dump());
}

}  // namespace

TEST(GptqCheckpoint, ReadsAsTheCodesItWasWrittenFrom) {
  const ModelConfig c = preset_config("tiny");  // w2 rows of 256 inputs: two groups of 128
  for (bool v1 : {true, false}) {
    const GptqOptions o{.v1 = v1};
    test::TempDir d;
    test::write_gptq_checkpoint(c, o, d.str());
    const WeightSource ck = WeightSource::checkpoint(d.str());
    EXPECT_EQ(ck.expert_format(), QuantFormat::int4);
    EXPECT_EQ(ck.attention_format(), QuantFormat::int4);
    EXPECT_FALSE(ck.expert_zero_points());
    expect_values(ck, c, o);
    for (const std::string& n : probes(c)) {
      const TensorSpec s = tensor_spec(c, n);
      const test::GptqCodes k = test::gptq_codes(s, o);
      const QuantMatrix m = ck.read_quant(s, QuantFormat::int4);
      ASSERT_EQ(m.rows, k.rows);
      ASSERT_EQ(m.cols, k.cols);
      EXPECT_FALSE(m.zero_points) << n;
      const int64_t groups = (k.cols + kInt4Group - 1) / kInt4Group;
      for (int64_t r = 0; r < k.rows; ++r) {
        for (int64_t i = 0; i < k.cols; ++i) {  // moebench's byte order: input 2b low nibble, 2b + 1 high
          const uint8_t b = m.q[static_cast<size_t>(r * k.cols / 2 + i / 2)];
          ASSERT_EQ((i % 2 ? b >> 4 : b & 15), k.u[r * k.cols + i]) << n << " [" << r << ", " << i << "]";
        }
        for (int64_t g = 0; g < groups; ++g) {
          uint16_t h;
          std::memcpy(&h, m.scale.data() + 2 * (r * groups + g), 2);
          ASSERT_EQ(bf16_to_f32(h), f16_to_f32(k.scale[g * k.rows + r])) << n;  // 8 significant bits: exact
        }
      }
      std::vector<float> deq(static_cast<size_t>(s.numel())), want(deq.size());
      dequantize(m, deq.data());
      ck.read_f32(s, want.data());
      EXPECT_EQ(deq, want) << n;
    }
    // The experts are int4: run as int4 or dequantised, never quantised again.
    EXPECT_EQ(resolve_expert_format("int4", ck), QuantFormat::int4);
    EXPECT_EQ(resolve_expert_format("bf16", ck), QuantFormat::bf16);
    EXPECT_NE(test::error_of([&] { resolve_expert_format("int8", ck); }).find("quantising them again"), std::string::npos);
    EXPECT_EQ(resolve_weight_format("bf16", ck), QuantFormat::bf16);
  }
}

TEST(GptqCheckpoint, AsymmetricZeroPointsInBothCheckpointFormatsAndAwq) {
  const ModelConfig c = preset_config("tiny");
  for (const GptqOptions& o : {GptqOptions{.v1 = true, .sym = false}, GptqOptions{.v1 = false, .sym = false},
                               GptqOptions{.v1 = false, .sym = false, .awq = true}}) {
    SCOPED_TRACE(o.awq ? "awq" : o.v1 ? "gptq v1" : "gptq v2");
    test::TempDir d;
    test::write_gptq_checkpoint(c, o, d.str());
    const WeightSource ck = WeightSource::checkpoint(d.str());
    EXPECT_TRUE(ck.expert_zero_points());
    expect_values(ck, c, o);
    const TensorSpec s = tensor_spec(c, names::expert(0, 3, "w2"));
    const test::GptqCodes k = test::gptq_codes(s, o);
    const QuantMatrix m = ck.read_quant(s, QuantFormat::int4);
    ASSERT_TRUE(m.zero_points);
    for (int64_t r = 0; r < k.rows; ++r)
      for (int64_t g = 0; g < k.groups; ++g) ASSERT_EQ(m.zero[r * k.groups + g], k.z[g * k.rows + r]) << r << " " << g;
    for (int64_t r = 0; r < k.rows; ++r)
      for (int64_t i = 0; i < k.cols; ++i) {
        const uint8_t b = m.q[static_cast<size_t>(r * k.cols / 2 + i / 2)];
        ASSERT_EQ((i % 2 ? b >> 4 : b & 15), k.u[r * k.cols + i]) << " [" << r << ", " << i << "]";
      }
    std::vector<float> deq(static_cast<size_t>(s.numel())), want(deq.size());
    dequantize(m, deq.data());
    ck.read_f32(s, want.data());
    EXPECT_EQ(deq, want);
  }
}

// Scales with more bits than bf16 holds: read_f32 (expert_dtype=bf16) uses them as
// stored, int4 rounds them to bf16 (moebench's int4 scale type), to nearest even.
TEST(GptqCheckpoint, Fp16ScalesRoundToBf16OnlyAsInt4) {
  const ModelConfig c = preset_config("micro");
  const GptqOptions o{.wide_scales = true};
  test::TempDir d;
  test::write_gptq_checkpoint(c, o, d.str());
  const WeightSource ck = WeightSource::checkpoint(d.str());
  expect_values(ck, c, o);
  const TensorSpec s = tensor_spec(c, names::expert(1, 0, "w2"));
  const test::GptqCodes k = test::gptq_codes(s, o);
  const QuantMatrix m = ck.read_quant(s, QuantFormat::int4);
  int rounded = 0;
  for (int64_t r = 0; r < k.rows; ++r) {
    uint16_t h;
    std::memcpy(&h, m.scale.data() + 2 * r * k.groups, 2);
    const float exact = f16_to_f32(k.scale[r]);
    ASSERT_EQ(h, f32_to_bf16(exact));
    rounded += bf16_to_f32(h) != exact;
  }
  EXPECT_GT(rounded, k.rows / 2);  // the test's scales do need rounding
}

// A GPTQ checkpoint (asymmetric, so zero points too) and an AWQ one of `micro`, each with
// its copy in moebench's int4 layout.
void for_each_gptq_and_copy(const std::function<void(const WeightSource&, const WeightSource&, const GptqOptions&)>& f) {
  for (const GptqOptions& o : {GptqOptions{.sym = false}, GptqOptions{.v1 = false, .sym = false, .awq = true}}) {
    SCOPED_TRACE(o.awq ? "awq" : "gptq");
    test::TempDir d, e;
    test::write_gptq_checkpoint(preset_config("micro"), o, d.str());
    const WeightSource ck = WeightSource::checkpoint(d.str());
    test::write_moebench_copy(ck, QuantFormat::int4, e.str());
    f(ck, WeightSource::checkpoint(e.str()), o);
  }
}

TEST(GptqCheckpoint, GeneratesAsTheSameModelInMoebenchsInt4Layout) {
  for_each_gptq_and_copy([](const WeightSource& ck, const WeightSource& mine, const GptqOptions& o) {
    test::expect_generates_as_copy(ck, mine, QuantFormat::int4);
    // The disk tier copies stored bytes; GPTQ's are converted when read.
    EngineSettings s = with_dtype("int4");
    s.expert_tier = "disk";
    s.cache_slots = 3;
    EXPECT_NE(test::error_of([&] { logits_of(ck, s); })
                  .find(std::string("is stored in ") + (o.awq ? "AWQ" : "GPTQ") + "'s layout (qweight, qzeros, scales)"),
              std::string::npos);
  });
}

// The CUDA backend's pinned tier is the host store: it holds a GPTQ or AWQ checkpoint's
// experts as the same bytes as its copy in moebench's int4 layout, at int4 and at bf16
// (dequantised when read; the tensors are stored under other names than '.weight').
TEST(GptqCheckpoint, HostStoreHoldsTheBytesOfItsMoebenchInt4Copy) {
  for_each_gptq_and_copy([](const WeightSource& ck, const WeightSource& mine, const GptqOptions&) {
    test::expect_host_store_as_copy(ck, mine, QuantFormat::int4);
  });
}

TEST(GptqCheckpoint, OtherGroupsAndActOrderRunDequantisedOnly) {
  const ModelConfig c = preset_config("tiny");  // w2: 256 inputs, two groups of 128
  for (const GptqOptions& o : {GptqOptions{.group = 64}, GptqOptions{.group = -1}, GptqOptions{.act_order = true}}) {
    test::TempDir d;
    test::write_gptq_checkpoint(c, o, d.str());
    const WeightSource ck = WeightSource::checkpoint(d.str());
    expect_values(ck, c, o);  // read_f32 follows the groups and g_idx as stored
    const TensorSpec s = tensor_spec(c, names::expert(0, 0, "w2"));
    const std::string why = test::error_of([&] { ck.read_quant(s, QuantFormat::int4); });
    EXPECT_NE(why.find(o.act_order ? "act-order" : "with group_size " + std::to_string(o.group)), std::string::npos) << why;
    EXPECT_NE(why.find("expert_dtype=bf16"), std::string::npos) << why;
    for (float x : logits_of(ck, with_dtype("bf16"))) ASSERT_TRUE(std::isfinite(x));
  }
}

TEST(GptqCheckpoint, MalformedConfigOrTensorsNameTheField) {
  const ModelConfig c = preset_config("micro");
  test::TempDir d;
  test::write_gptq_checkpoint(c, GptqOptions{}, d.str());
  const std::string cfg = d.str("config.json");
  auto fails_with = [&](const std::string& want) {
    const std::string why = test::error_of([&] { WeightSource::checkpoint(d.str()); });
    EXPECT_NE(why.find(want), std::string::npos) << why;
  };
  set_config(d.str(), "bits", 8);
  fails_with(cfg + ": quantization_config.bits is 8, expected 4");
  set_config(d.str(), "bits", 4);
  set_config(d.str(), "group_size", 0);
  fails_with(cfg + ": quantization_config.group_size is 0, expected a positive number of inputs or -1");
  set_config(d.str(), "group_size", 128);
  set_config(d.str(), "checkpoint_format", "awq");
  fails_with(cfg + ": quantization_config.checkpoint_format is \"awq\", expected \"gptq\" or \"gptq_v2\"");
  set_config(d.str(), "checkpoint_format", nullptr);  // absent: gptq (v1)
  set_config(d.str(), "sym", "yes");
  fails_with(cfg + ": quantization_config.sym is \"yes\", expected true or false");
  set_config(d.str(), "sym", true);
  EXPECT_NO_THROW(WeightSource::checkpoint(d.str()));
  {  // AWQ: the GEMM layout with zero points only
    test::TempDir a;
    test::write_gptq_checkpoint(c, GptqOptions{.v1 = false, .sym = false, .awq = true}, a.str());
    EXPECT_NO_THROW(WeightSource::checkpoint(a.str()));
    const std::string acfg = a.str("config.json");
    set_config(a.str(), "version", "gemv");
    std::string why = test::error_of([&] { WeightSource::checkpoint(a.str()); });
    EXPECT_NE(why.find(acfg + ": quantization_config.version is \"gemv\", expected \"gemm\""), std::string::npos) << why;
    set_config(a.str(), "version", "gemm");
    set_config(a.str(), "zero_point", false);
    why = test::error_of([&] { WeightSource::checkpoint(a.str()); });
    EXPECT_NE(why.find(acfg + ": quantization_config.zero_point is false, expected true"), std::string::npos) << why;
  }
  // GPTQ tensors without the config that says how to read them.
  {
    auto j = nlohmann::json::parse(test::read_file(cfg));
    j.erase("quantization_config");
    test::write_file(cfg, j.dump());
    fails_with("tensor 'model.layers.0.self_attn.q_proj.qweight' is in a GPTQ or AWQ layout but config.json has no "
               "quantization_config with quant_method \"gptq\" or \"awq\"");
  }
  // A tensor of the wrong shape or dtype; zero points that are not 8 under sym.
  auto rewrite = [&](const std::string& victim, const std::function<void(TensorToWrite&)>& change) {
    test::write_gptq_checkpoint(c, GptqOptions{}, d.str());
    SafetensorsFile f(d.str("model.safetensors"));
    std::vector<TensorToWrite> out;
    for (auto& [name, v] : f.tensors()) {
      const TensorView* pv = &v;
      TensorToWrite t{name, v.dtype, v.shape, [pv](uint8_t* dst, size_t n) { std::memcpy(dst, pv->data, n); }};
      if (name == victim) change(t);
      out.push_back(std::move(t));
    }
    write_safetensors(d.str("model2.safetensors"), out);
    std::filesystem::rename(d.str("model2.safetensors"), d.str("model.safetensors"));
  };
  const std::string w2 = "model.layers.1.block_sparse_moe.experts.2.w2";
  rewrite(w2 + ".qzeros", [](TensorToWrite& t) { t.shape = {t.shape[1], t.shape[0]}; });
  fails_with("tensor '" + w2 + ".qzeros' has shape [8, 1], expected [1, 8]");
  rewrite(w2 + ".scales", [](TensorToWrite& t) { t.dtype = DType::bf16; });
  EXPECT_NO_THROW(WeightSource::checkpoint(d.str()));  // BF16 scales are accepted
  rewrite(w2 + ".scales", [](TensorToWrite& t) {
    t.dtype = DType::i32;
    t.fill = [](uint8_t* dst, size_t n) { std::memset(dst, 0, n); };
  });
  fails_with("tensor '" + w2 + ".scales' has dtype I32, expected F16, BF16 or F32 (GPTQ)");
  rewrite(w2 + ".g_idx", [](TensorToWrite& t) {
    t.fill = [](uint8_t* dst, size_t n) {
      std::memset(dst, 0, n);
      const int32_t g = 5;
      std::memcpy(dst + 4 * 3, &g, 4);
    };
  });
  fails_with(".g_idx' holds 5 at input 3, expected a group in [0, 1)");
  rewrite(w2 + ".qzeros", [](TensorToWrite& t) { t.fill = [](uint8_t* dst, size_t n) { std::memset(dst, 0x77, n); dst[0] = 0x75; }; });
  const WeightSource ck = WeightSource::checkpoint(d.str());
  const std::string why = test::error_of([&] { ck.read_quant(tensor_spec(c, names::expert(1, 2, "w2")), QuantFormat::int4); });
  EXPECT_NE(why.find(w2 + ".qzeros' holds zero point 6 for output 0, group 0, but quantization_config says sym"),
            std::string::npos)
      << why;
}

}  // namespace gptq_checkpoint_test
