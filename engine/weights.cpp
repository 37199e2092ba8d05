// weights.cpp: see weights.h.
#include "engine/weights.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fmt/format.h>

#include "common/error.h"

namespace moebench {

namespace names {
std::string embed() { return "model.embed_tokens.weight"; }
std::string final_norm() { return "model.norm.weight"; }
std::string lm_head() { return "lm_head.weight"; }
std::string layer(int l, const char* suffix) { return fmt::format("model.layers.{}.{}", l, suffix); }
std::string expert(int l, int e, const char* w) {
  return fmt::format("model.layers.{}.block_sparse_moe.experts.{}.{}.weight", l, e, w);
}
}  // namespace names

const std::vector<NameRule>& family_name_rules(const std::string& model_type) {
  static const std::vector<NameRule> mixtral;  // the internal names
  // Qwen3-MoE, OLMoE and Qwen2-MoE name their MoE block alike.
  static const std::vector<NameRule> mlp = {{".block_sparse_moe.gate.", ".mlp.gate."},
                                            {".block_sparse_moe.experts.", ".mlp.experts."},
                                            {".w1.", ".gate_proj."},
                                            {".w2.", ".down_proj."},
                                            {".w3.", ".up_proj."}};
  if (model_type == "mixtral") return mixtral;
  if (model_type == "qwen3_moe" || model_type == "olmoe" || model_type == "qwen2_moe") return mlp;
  fail("model_type '{}' has no tensor-name table, expected mixtral|qwen3_moe|olmoe|qwen2_moe", model_type);
}

std::string hf_tensor_name(const ModelConfig& c, const std::string& internal) {
  std::string n = internal;
  for (const NameRule& r : family_name_rules(c.model_type))
    if (auto at = n.find(r.internal); at != std::string::npos) n.replace(at, std::strlen(r.internal), r.hf);
  return n;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

namespace {

// Linear weights: uniform with variance 1/fan_in keeps activations O(1).
float lin(int64_t fan_in) { return static_cast<float>(std::sqrt(3.0 / static_cast<double>(fan_in))); }

TensorSpec expert_spec(const ModelConfig& c, int l, int e, int w) {  // w: 0 w1, 1 w2, 2 w3
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  static const char* kW[3] = {"w1", "w2", "w3"};
  if (w == 1) return {names::expert(l, e, kW[w]), {H, I}, lin(I), 0};
  return {names::expert(l, e, kW[w]), {I, H}, lin(H), 0};
}

// The tensors of layer l in file order.
void append_layer_specs(const ModelConfig& c, int l, std::vector<TensorSpec>& s) {
  const int64_t H = c.hidden_size, E = c.num_local_experts;
  s.push_back({names::layer(l, "input_layernorm.weight"), {H}, 0.1f, 1.0f});
  s.push_back({names::layer(l, "self_attn.q_proj.weight"), {c.q_dim(), H}, lin(H), 0});
  s.push_back({names::layer(l, "self_attn.k_proj.weight"), {c.kv_dim(), H}, lin(H), 0});
  s.push_back({names::layer(l, "self_attn.v_proj.weight"), {c.kv_dim(), H}, lin(H), 0});
  if (c.qkv_bias) {
    s.push_back({names::layer(l, "self_attn.q_proj.bias"), {c.q_dim()}, 0.1f, 0});
    s.push_back({names::layer(l, "self_attn.k_proj.bias"), {c.kv_dim()}, 0.1f, 0});
    s.push_back({names::layer(l, "self_attn.v_proj.bias"), {c.kv_dim()}, 0.1f, 0});
  }
  if (c.qk_norm != QkNorm::none) {
    const bool per_head = c.qk_norm == QkNorm::per_head;
    s.push_back({names::layer(l, "self_attn.q_norm.weight"), {per_head ? c.head_dim : c.q_dim()}, 0.1f, 1.0f});
    s.push_back({names::layer(l, "self_attn.k_norm.weight"), {per_head ? c.head_dim : c.kv_dim()}, 0.1f, 1.0f});
  }
  s.push_back({names::layer(l, "self_attn.o_proj.weight"), {H, c.q_dim()}, lin(c.q_dim()), 0});
  s.push_back({names::layer(l, "post_attention_layernorm.weight"), {H}, 0.1f, 1.0f});
  s.push_back({names::layer(l, "block_sparse_moe.gate.weight"), {E, H}, lin(H), 0});
  for (int e = 0; e < E; ++e)
    for (int w = 0; w < 3; ++w) s.push_back(expert_spec(c, l, e, w));
  if (const int64_t S = c.shared_expert_intermediate_size; S > 0) {
    s.push_back({names::layer(l, "mlp.shared_expert.gate_proj.weight"), {S, H}, lin(H), 0});
    s.push_back({names::layer(l, "mlp.shared_expert.up_proj.weight"), {S, H}, lin(H), 0});
    s.push_back({names::layer(l, "mlp.shared_expert.down_proj.weight"), {H, S}, lin(S), 0});
    s.push_back({names::layer(l, "mlp.shared_expert_gate.weight"), {1, H}, lin(H), 0});
  }
}

}  // namespace

std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c) {
  const int64_t H = c.hidden_size, V = c.vocab_size;
  std::vector<TensorSpec> s;
  s.push_back({names::embed(), {V, H}, 1.0f, 0.0f});
  for (int l = 0; l < c.num_hidden_layers; ++l) append_layer_specs(c, l, s);
  s.push_back({names::final_norm(), {H}, 0.1f, 1.0f});
  if (!c.tie_word_embeddings) s.push_back({names::lm_head(), {V, H}, lin(H), 0});
  return s;
}

TensorSpec tensor_spec(const ModelConfig& c, const std::string& name) {
  // Found without listing the whole model (Qwen3-30B-A3B has 18432 expert matrices): an
  // expert's spec directly, another layer tensor among its layer's.
  int l = -1, e = -1, w = -1, used = 0;
  if (std::sscanf(name.c_str(), "model.layers.%d.block_sparse_moe.experts.%d.w%d.weight%n", &l, &e, &w, &used) == 3 &&
      used == static_cast<int>(name.size()) && l >= 0 && l < c.num_hidden_layers && e >= 0 &&
      e < c.num_local_experts && w >= 1 && w <= 3)
    return expert_spec(c, l, e, w - 1);
  std::vector<TensorSpec> specs;
  if (std::sscanf(name.c_str(), "model.layers.%d.", &l) == 1 && l >= 0 && l < c.num_hidden_layers)
    append_layer_specs(c, l, specs);
  else
    specs = model_tensor_specs(c);
  for (auto& t : specs)
    if (t.name == name) return t;
  fail("tensor '{}' is not part of a {} model with {} layers and {} experts", name, c.model_type,
       c.num_hidden_layers, c.num_local_experts);
}

}  // namespace moebench
