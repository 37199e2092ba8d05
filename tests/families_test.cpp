// families_test.cpp: the MoE families beyond Mixtral (Qwen3-MoE, OLMoE, Qwen2-MoE) on the
// host: config.json parsing and its one-line errors, the presets' shapes, each family's
// tensor-name table, the router without renormalisation, the CPU model on tiny random
// shapes of each family (checkpoint round trip, prefill = decode, every family tensor
// used, strategies agree), and the fine-grained-locality routing source's calibration.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/cpu_model.h"
#include "engine/generate.h"
#include "engine/ops/ops.h"
#include "engine/safetensors.h"
#include "engine/synth_checkpoint.h"
#include "engine/tokenizer.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "model/config.h"
#include "teacher_forced.h"
#include "test_util.h"
#include "variants/routing.h"

namespace families_test {

using namespace moebench;
using nlohmann::json;

namespace {

const char* kTiny[] = {"tiny-qwen3", "tiny-olmoe", "tiny-qwen2-moe"};
const std::vector<int32_t> kPrompt = {1, 415, 293, 90, 285, 114, 287, 461, 75, 2};

std::string config_error(const json& j) {
  try {
    config_from_json(j, "m/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<float> logits_of(const WeightSource& w, const EngineSettings& s = {}) {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.settings = s;
  ctx.settings.expert_tier = "resident";
  CpuModel m(ctx);
  return test::teacher_forced_logits(m, kPrompt);
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

}  // namespace

TEST(Families, ConfigJsonRoundTripsEachFamily) {
  for (const char* name : {"qwen3-30b-a3b", "olmoe-1b-7b", "qwen2-moe-a2.7b", "mixtral-8x22b", "tiny-qwen3",
                           "tiny-olmoe", "tiny-qwen2-moe"}) {
    SCOPED_TRACE(name);
    const ModelConfig c = preset_config(name);
    const ModelConfig d = config_from_json(config_to_json(c), "x");
    EXPECT_EQ(d.model_type, c.model_type);
    EXPECT_EQ(d.num_local_experts, c.num_local_experts);
    EXPECT_EQ(d.intermediate_size, c.intermediate_size);
    EXPECT_EQ(d.head_dim, c.head_dim);
    EXPECT_EQ(d.norm_topk_prob, c.norm_topk_prob);
    EXPECT_EQ(d.qk_norm, c.qk_norm);
    EXPECT_EQ(d.qkv_bias, c.qkv_bias);
    EXPECT_EQ(d.shared_expert_intermediate_size, c.shared_expert_intermediate_size);
    EXPECT_EQ(d.total_params(), c.total_params());
  }
}

// The fields as the published config.json files name them.
TEST(Families, ParsesEachFamilysOwnFields) {
  json q3 = {{"model_type", "qwen3_moe"}, {"vocab_size", 151936}, {"hidden_size", 2048}, {"intermediate_size", 6144},
             {"moe_intermediate_size", 768}, {"num_hidden_layers", 48}, {"num_attention_heads", 32},
             {"num_key_value_heads", 4}, {"head_dim", 128}, {"num_experts", 128}, {"num_experts_per_tok", 8},
             {"norm_topk_prob", true}, {"decoder_sparse_step", 1}, {"mlp_only_layers", json::array()},
             {"rope_theta", 1000000.0}, {"rms_norm_eps", 1e-6}, {"max_position_embeddings", 40960},
             {"bos_token_id", 151643}, {"eos_token_id", 151645}, {"tie_word_embeddings", false},
             {"use_sliding_window", false}, {"attention_bias", false}, {"hidden_act", "silu"}};
  ModelConfig c = config_from_json(q3, "q");
  EXPECT_EQ(c.intermediate_size, 768);
  EXPECT_EQ(c.dense_intermediate_size, 6144);
  EXPECT_EQ(c.q_dim(), 4096);  // head_dim 128 x 32 heads, not hidden 2048
  EXPECT_EQ(c.qk_norm, QkNorm::per_head);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.total_params(), preset_config("qwen3-30b-a3b").total_params());

  json ol = {{"model_type", "olmoe"}, {"vocab_size", 50304}, {"hidden_size", 2048}, {"intermediate_size", 1024},
             {"num_hidden_layers", 16}, {"num_attention_heads", 16}, {"num_key_value_heads", 16},
             {"num_experts", 64}, {"num_experts_per_tok", 8}, {"norm_topk_prob", false}, {"clip_qkv", nullptr},
             {"rope_theta", 10000.0}, {"max_position_embeddings", 4096}, {"bos_token_id", nullptr},
             {"eos_token_id", 50279}};
  c = config_from_json(ol, "o");
  EXPECT_EQ(c.intermediate_size, 1024);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.qk_norm, QkNorm::whole);
  EXPECT_FALSE(c.norm_topk_prob);
  ol.erase("norm_topk_prob");  // OlmoeConfig's default
  EXPECT_FALSE(config_from_json(ol, "o").norm_topk_prob);

  json q2 = config_to_json(preset_config("qwen2-moe-a2.7b"));
  q2.erase("qkv_bias");  // Qwen2-MoE's q/k/v carry a bias unless told otherwise
  c = config_from_json(q2, "q2");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_EQ(c.shared_expert_intermediate_size, 5632);
  EXPECT_EQ(c.qk_norm, QkNorm::none);
}

TEST(Families, UnsupportedValuesAreOneClearLine) {
  json j = config_to_json(preset_config("tiny-qwen3"));
  j["model_type"] = "deepseek_v3";
  EXPECT_EQ(config_error(j), "m/config.json: field 'model_type' is \"deepseek_v3\", expected one of \"mixtral\", "
                             "\"qwen3_moe\", \"olmoe\", \"qwen2_moe\"");
  j = config_to_json(preset_config("tiny-qwen3"));
  j["mlp_only_layers"] = {1};
  EXPECT_EQ(config_error(j), "m/config.json: layer 1 is a dense MLP layer (decoder_sparse_step 1, mlp_only_layers "
                             "[1]); expected every layer to be sparse (dense layers are not supported)");
  j = config_to_json(preset_config("tiny-qwen2-moe"));
  j["decoder_sparse_step"] = 2;
  EXPECT_EQ(config_error(j), "m/config.json: layer 0 is a dense MLP layer (decoder_sparse_step 2, mlp_only_layers "
                             "[]); expected every layer to be sparse (dense layers are not supported)");
  j = config_to_json(preset_config("tiny-olmoe"));
  j["clip_qkv"] = 8.0;
  EXPECT_EQ(config_error(j), "m/config.json: field 'clip_qkv' is 8.0, expected null (no q/k/v clipping)");
  j = config_to_json(preset_config("tiny-qwen3"));
  j["norm_topk_prob"] = "yes";
  EXPECT_EQ(config_error(j), "m/config.json: field 'norm_topk_prob' is \"yes\", expected true or false");
  j = config_to_json(preset_config("tiny-qwen3"));
  j["use_sliding_window"] = true;
  EXPECT_EQ(config_error(j), "m/config.json: field 'use_sliding_window' is true, expected false (full attention only)");
  j = config_to_json(preset_config("tiny-qwen3"));
  j.erase("moe_intermediate_size");
  EXPECT_EQ(config_error(j), "m/config.json: missing field 'moe_intermediate_size' (expected an integer)");
  j = config_to_json(preset_config("tiny-qwen2-moe"));
  j.erase("shared_expert_intermediate_size");
  EXPECT_EQ(config_error(j), "m/config.json: missing field 'shared_expert_intermediate_size' (expected an integer)");
  j = config_to_json(preset_config("tiny-qwen3"));
  j["num_experts"] = 300;
  EXPECT_EQ(config_error(j), "m/config.json: field 'num_experts' is 300, expected at most 256");
  j = config_to_json(preset_config("tiny-qwen3"));
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e6}};
  EXPECT_EQ(config_error(j), "m/config.json:rope_parameters: field 'rope_type' is \"yarn\", expected \"default\" "
                             "(only plain RoPE is supported)");
}

// Published parameter counts: Qwen3-30B-A3B 30.5B, OLMoE-1B-7B 6.9B, Qwen1.5-MoE-A2.7B
// 14.3B, Mixtral-8x22B 141B (each model card's total).
TEST(Families, PresetShapesMatchThePublishedModels) {
  auto billions = [](const char* n) { return static_cast<double>(preset_config(n).total_params()) / 1e9; };
  EXPECT_NEAR(billions("qwen3-30b-a3b"), 30.5, 0.1);
  EXPECT_NEAR(billions("olmoe-1b-7b"), 6.9, 0.1);
  EXPECT_NEAR(billions("qwen2-moe-a2.7b"), 14.3, 0.1);
  EXPECT_NEAR(billions("mixtral-8x22b"), 140.6, 0.5);
  const auto names = preset_names();
  for (const char* n : {"qwen3-30b-a3b", "olmoe-1b-7b", "qwen2-moe-a2.7b", "mixtral-8x22b", "tiny-qwen3", "tiny-olmoe",
                        "tiny-qwen2-moe"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
}

TEST(Families, TensorNameTables) {
  const ModelConfig q3 = preset_config("tiny-qwen3"), mx = preset_config("micro");
  EXPECT_EQ(hf_tensor_name(q3, names::expert(3, 5, "w1")), "model.layers.3.mlp.experts.5.gate_proj.weight");
  EXPECT_EQ(hf_tensor_name(q3, names::expert(0, 15, "w2")), "model.layers.0.mlp.experts.15.down_proj.weight");
  EXPECT_EQ(hf_tensor_name(q3, names::expert(1, 0, "w3")), "model.layers.1.mlp.experts.0.up_proj.weight");
  EXPECT_EQ(hf_tensor_name(q3, names::layer(1, "block_sparse_moe.gate.weight")), "model.layers.1.mlp.gate.weight");
  EXPECT_EQ(hf_tensor_name(q3, "model.layers.0.block_sparse_moe.experts.2.w1.weight_scale"),
            "model.layers.0.mlp.experts.2.gate_proj.weight_scale");
  EXPECT_EQ(hf_tensor_name(q3, names::layer(1, "self_attn.q_norm.weight")), "model.layers.1.self_attn.q_norm.weight");
  EXPECT_EQ(hf_tensor_name(mx, names::expert(3, 5, "w1")), names::expert(3, 5, "w1"));
  // Every tensor of every family: found by tensor_spec exactly as listed, names unique.
  for (const char* n : kTiny) {
    const ModelConfig c = preset_config(n);
    std::set<std::string> hf;
    for (const TensorSpec& s : model_tensor_specs(c)) {
      const TensorSpec t = tensor_spec(c, s.name);
      EXPECT_EQ(t.shape, s.shape) << s.name;
      EXPECT_EQ(t.init_scale, s.init_scale) << s.name;
      EXPECT_TRUE(hf.insert(hf_tensor_name(c, s.name)).second) << s.name;
    }
  }
  const ModelConfig q2 = preset_config("tiny-qwen2-moe");
  EXPECT_EQ(tensor_spec(q2, names::layer(0, "mlp.shared_expert_gate.weight")).shape, (std::vector<int64_t>{1, 64}));
  EXPECT_EQ(tensor_spec(q2, names::layer(1, "self_attn.k_proj.bias")).shape, (std::vector<int64_t>{q2.kv_dim()}));
  const ModelConfig ol = preset_config("tiny-olmoe");
  EXPECT_EQ(tensor_spec(ol, names::layer(0, "self_attn.q_norm.weight")).shape, (std::vector<int64_t>{ol.q_dim()}));
  EXPECT_EQ(tensor_spec(q3, names::layer(0, "self_attn.k_norm.weight")).shape, (std::vector<int64_t>{q3.head_dim}));
  EXPECT_THROW(tensor_spec(mx, names::layer(0, "self_attn.q_norm.weight")), Error);
}

TEST(Families, RouterWithoutRenormalisationKeepsTheSoftmaxWeights) {
  const int E = 16, K = 4;
  std::vector<float> logits(E);
  for (int e = 0; e < E; ++e) logits[e] = std::sin(1.7f * e);
  std::vector<int32_t> ids(K), ids2(K);
  std::vector<float> w(K), wn(K);
  cpu::router_topk(logits.data(), ids.data(), w.data(), 1, E, K, false);
  cpu::router_topk(logits.data(), ids2.data(), wn.data(), 1, E, K, true);
  EXPECT_EQ(ids, ids2);
  double z = 0, sum = 0, sumn = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l));
  for (int j = 0; j < K; ++j) {
    EXPECT_NEAR(w[j], std::exp(static_cast<double>(logits[ids[j]])) / z, 1e-6);
    sum += w[j];
    sumn += wn[j];
  }
  EXPECT_LT(sum, 0.95);
  EXPECT_NEAR(sumn, 1.0, 1e-6);
  for (int j = 0; j < K; ++j) EXPECT_NEAR(wn[j], w[j] / sum, 1e-6);
  std::vector<float> rw(K);
  cpu::router_reweight(logits.data(), ids.data(), rw.data(), 1, E, K, false);
  for (int j = 0; j < K; ++j) EXPECT_FLOAT_EQ(rw[j], w[j]);
}

// make-model writes each family's HF names; the checkpoint reads back through the name
// table to the same logits as the synthetic source it was written from.
TEST(Families, CheckpointRoundTripThroughTheNameTable) {
  for (const char* n : kTiny) {
    SCOPED_TRACE(n);
    const ModelConfig c = preset_config(n);
    test::TempDir d;
    write_synthetic_checkpoint(c, 11, DType::f32, d.str());
    const json cj = json::parse(test::read_file(d.str("config.json")));
    EXPECT_EQ(cj.at("model_type"), c.model_type);
    Checkpoint raw(d.str());
    EXPECT_NE(raw.find("model.layers.1.mlp.experts.3.gate_proj.weight"), nullptr);
    EXPECT_EQ(raw.find(names::expert(1, 3, "w1")), nullptr);
    const WeightSource ck = WeightSource::checkpoint(d.str());
    EXPECT_EQ(ck.config().model_type, c.model_type);
    const WeightSource syn = WeightSource::synthetic(c, 11, DType::f32);
    const auto a = logits_of(ck), b = logits_of(syn);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(max_abs_diff(a, b), 0.0f);
    for (float v : a) ASSERT_TRUE(std::isfinite(v));
  }
}

// A prompt in one prefill equals the same tokens decoded one by one (the per-row family
// ops: bias, per-head or whole q/k norm, the shared expert's per-token gate).
TEST(Families, PrefillMatchesTokenByTokenDecode) {
  for (const char* n : kTiny) {
    SCOPED_TRACE(n);
    const WeightSource w = WeightSource::synthetic(preset_config(n), 5, DType::f32);
    CpuModel a(w, 64), b(w, 64);
    const int V = w.config().vocab_size, N = static_cast<int>(kPrompt.size());
    std::vector<float> pre(V), step(V);
    a.forward(kPrompt.data(), N, 0, pre.data());
    for (int i = 0; i < N; ++i) b.forward(&kPrompt[i], 1, i, step.data());
    EXPECT_LT(max_abs_diff(pre, step), 1e-4f);
  }
}

// Every family tensor takes part: perturbing any one of them (in a copy of the
// checkpoint) changes the logits.
TEST(Families, EveryFamilyTensorIsUsed) {
  for (const char* n : kTiny) {
    SCOPED_TRACE(n);
    const ModelConfig c = preset_config(n);
    test::TempDir d;
    write_synthetic_checkpoint(c, 3, DType::f32, d.str());
    const auto base = logits_of(WeightSource::checkpoint(d.str()));
    std::vector<std::string> extras;
    for (const TensorSpec& s : model_tensor_specs(c))
      if (s.name.find("norm.weight") != std::string::npos && s.name.find("self_attn") != std::string::npos)
        extras.push_back(s.name);
      else if (s.name.find(".bias") != std::string::npos || s.name.find("shared_expert") != std::string::npos)
        extras.push_back(s.name);
    ASSERT_FALSE(extras.empty());
    for (const std::string& name : {extras.front(), extras.back()}) {
      SCOPED_TRACE(name);
      test::TempDir e;
      const TensorSpec s = tensor_spec(c, name);
      // The same model with this one tensor scaled by 1.5: another synthetic checkpoint.
      std::vector<TensorToWrite> tw;
      const WeightSource src = WeightSource::checkpoint(d.str());
      auto vals = std::make_shared<std::vector<std::vector<float>>>();
      for (const TensorSpec& t : model_tensor_specs(c)) {
        vals->emplace_back(static_cast<size_t>(t.numel()));
        src.read_f32(t, vals->back().data());
        if (t.name == name)
          for (float& v : vals->back()) v *= 1.5f;
        const size_t i = vals->size() - 1;
        tw.push_back({hf_tensor_name(c, t.name), DType::f32, t.shape,
                      [vals, i](uint8_t* dst, size_t bytes) { std::memcpy(dst, (*vals)[i].data(), bytes); }});
      }
      write_safetensors(e.str("model.safetensors"), tw);
      test::write_file(e.str("config.json"), config_to_json(c).dump());
      EXPECT_GT(max_abs_diff(base, logits_of(WeightSource::checkpoint(e.str()))), 1e-4f);
    }
  }
}

// Strategies never change what is computed: every dispatch gives the same greedy tokens
// with top-4 of 16 experts and the family extras.
TEST(Families, EveryStrategyGivesTheSameGreedyTokens) {
  for (const char* n : kTiny) {
    SCOPED_TRACE(n);
    const WeightSource w = WeightSource::synthetic(preset_config(n), 9);
    std::vector<int32_t> first;
    for (const char* dispatch : {"serial", "grouped", "fused"}) {
      EngineContext ctx;
      ctx.weights = &w;
      ctx.settings.expert_tier = "resident";
      ctx.settings.dispatch = dispatch;
      ctx.settings.combine = std::string(dispatch) == "fused" ? "fused" : "index_add";
      CpuModel m(ctx);
      GenerateOptions opt;
      opt.max_new_tokens = 12;
      opt.stop_at_eos = false;
      const auto out = generate(m, kPrompt, opt).output;
      if (first.empty()) first = out;
      EXPECT_EQ(out, first) << dispatch;
    }
  }
}

// fine-grained-locality at 128 experts, top-8 reproduces the published Qwen3-30B-A3B
// selection counts it is calibrated on (variants/routing.h): per layer, 65 of 128 experts
// carry 90 % of the selections and the concentration 1 - H / log E is 0.111.
TEST(Families, FineGrainedLocalityMatchesThePublishedQwen3Counts) {
  RoutingParams p{4, 128, 8, 7, ""};
  auto src = make_routing_source(parse_routing_spec("fine-grained-locality"), p);
  EXPECT_EQ(src->describe(), "fine-grained-locality seed=7");
  const int tokens = 8000;
  const RoutingTrace t = generate_trace(*src, p, tokens);
  for (int l = 0; l < p.n_layers; ++l) {
    SCOPED_TRACE(l);
    std::vector<double> share(128, 0.0);
    double reuse = 0;
    for (int s = 0; s < tokens; ++s) {
      const auto ids = t.ids(s, l);
      std::set<int> seen;
      for (int32_t e : ids) {
        share[e] += 1.0 / (tokens * 8.0);
        EXPECT_TRUE(seen.insert(e).second);
      }
      if (s > 0)
        for (int32_t e : t.ids(s - 1, l)) reuse += seen.count(e) / (8.0 * (tokens - 1));
    }
    std::sort(share.begin(), share.end(), std::greater<double>());
    double mass = 0, h = 0;
    int cover = 0;
    while (mass < 0.9) mass += share[cover++];
    for (double x : share)
      if (x > 0) h -= x * std::log(x);
    EXPECT_NEAR(cover, 65, 3);
    EXPECT_NEAR(1 - h / std::log(128.0), 0.111, 0.012);
    EXPECT_NEAR(share[0], 0.033, 0.006);  // published 4.3 %: not reproduced that high
    // No rule beyond the skew: a token shares what independent draws give (uniform
    // top-8 of 128 would share 6.25 %).
    EXPECT_GT(reuse, 0.08);
    EXPECT_LT(reuse, 0.20);
  }
  // Another seed favours other experts; the same seed repeats itself.
  RoutingParams q = p;
  q.seed = 8;
  auto other = make_routing_source(parse_routing_spec("fine-grained-locality"), q);
  auto again = make_routing_source(parse_routing_spec("fine-grained-locality"), p);
  const RoutingTrace u = generate_trace(*other, q, 50), v = generate_trace(*again, p, 50);
  EXPECT_NE(std::vector<int32_t>(u.ids(0, 0).begin(), u.ids(0, 0).end()),
            std::vector<int32_t>(t.ids(0, 0).begin(), t.ids(0, 0).end()));
  for (int s = 0; s < 50; ++s)
    EXPECT_EQ(std::vector<int32_t>(v.ids(s, 1).begin(), v.ids(s, 1).end()),
              std::vector<int32_t>(t.ids(s, 1).begin(), t.ids(s, 1).end()));
}

// Quantised experts go through the same name table: a tiny Qwen3 checkpoint with int8
// experts (make-model --dtype int8) stores its parts under the family's names and reads
// back as int8 experts, with the logits of the synthetic source it was written from.
TEST(Families, QuantisedExpertsUseTheFamilyNames) {
  const ModelConfig c = preset_config("tiny-qwen3");
  test::TempDir d;
  write_synthetic_checkpoint(c, 4, DType::bf16, d.str(), 4ULL << 30, QuantFormat::int8);
  Checkpoint raw(d.str());
  EXPECT_NE(raw.find("model.layers.0.mlp.experts.5.down_proj.weight_scale"), nullptr);
  const json q = json::parse(test::read_file(d.str("config.json"))).at("quantization_config");
  EXPECT_EQ(q.at("modules"), "mlp.experts");
  const WeightSource ck = WeightSource::checkpoint(d.str());
  EXPECT_EQ(ck.expert_format(), QuantFormat::int8);
  EngineSettings s;
  s.expert_dtype = "int8";
  const auto a = logits_of(ck, s), b = logits_of(WeightSource::synthetic(c, 4, DType::bf16, QuantFormat::int8), s);
  EXPECT_EQ(max_abs_diff(a, b), 0.0f);
}

// transformers 5.17 writes Qwen3-MoE's expert count as num_local_experts: either spelling
// is read in every family; neither is one line naming both.
TEST(Families, ExpertCountUnderEitherName) {
  json j = config_to_json(preset_config("tiny-qwen3"));
  j["num_local_experts"] = j.at("num_experts");
  j.erase("num_experts");
  EXPECT_EQ(config_from_json(j, "q").num_local_experts, 16);
  j.erase("num_local_experts");
  EXPECT_EQ(config_error(j), "m/config.json: missing field 'num_experts' (expected an integer; 'num_local_experts' "
                             "is accepted too)");
  json m = config_to_json(preset_config("micro"));
  m["num_experts"] = m.at("num_local_experts");
  m.erase("num_local_experts");
  EXPECT_EQ(config_from_json(m, "m").num_local_experts, 4);
}

// A family model run from text through its own kind of tokenizer: tiny-qwen3 (32,000 rows) with
// the Qwen3 fixture's byte-level file (8,282 tokens), a chat-template prompt whose added
// tokens are matched. The random model emits ids past the tokenizer's vocabulary; the
// streamed text skips them, as HF's decode does, and is the decode of prompt + output.
TEST(Families, GeneratesFromTextThroughAByteLevelTokenizer) {
  test::TempDir d;
  const std::string file = test::fixture("qwen3/tokenizer.json");
  const std::string prompt = "<|im_start|>user\nHello, na\u00efve caf\u00e9<|im_end|>";
  test::CliRun r = test::run_moebench({"generate", "--model", "synthetic:tiny-qwen3", "--tokenizer", file, "--backend",
                                       "cpu", "--prompt", prompt, "--max-new-tokens", "8", "--print-ids"},
                                      d);
  ASSERT_EQ(r.code, 0) << r.err;
  const size_t at = r.out.find("# ids [");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::vector<int32_t> ids = json::parse(r.out.substr(at + 6, r.out.find(']', at) - at - 5)).get<std::vector<int32_t>>();
  ASSERT_EQ(ids.size(), 8u);
  const Tokenizer tok = Tokenizer::load(file);
  EXPECT_TRUE(std::any_of(ids.begin(), ids.end(), [&](int32_t id) { return id >= tok.vocab_size(); }))
      << "no id past the tokenizer's vocabulary: the skip is not exercised";
  std::vector<int32_t> all = tok.encode(prompt, true);
  ASSERT_EQ(all.front(), tok.token_id("<|im_start|>"));
  all.insert(all.end(), ids.begin(), ids.end());
  EXPECT_EQ(r.out.substr(0, r.out.find("\n# settings")), tok.decode(all));
}

}  // namespace families_test
