// weights.cpp: see weights.h.
#include "engine/weights.h"

#include <cmath>
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

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, E = c.num_local_experts;
  // Linear weights: uniform with variance 1/fan_in keeps activations O(1).
  auto lin = [](int64_t fan_in) { return static_cast<float>(std::sqrt(3.0 / static_cast<double>(fan_in))); };
  std::vector<TensorSpec> s;
  s.push_back({names::embed(), {V, H}, 1.0f, 0.0f});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    s.push_back({names::layer(l, "input_layernorm.weight"), {H}, 0.1f, 1.0f});
    s.push_back({names::layer(l, "self_attn.q_proj.weight"), {c.q_dim(), H}, lin(H), 0});
    s.push_back({names::layer(l, "self_attn.k_proj.weight"), {c.kv_dim(), H}, lin(H), 0});
    s.push_back({names::layer(l, "self_attn.v_proj.weight"), {c.kv_dim(), H}, lin(H), 0});
    s.push_back({names::layer(l, "self_attn.o_proj.weight"), {H, c.q_dim()}, lin(c.q_dim()), 0});
    s.push_back({names::layer(l, "post_attention_layernorm.weight"), {H}, 0.1f, 1.0f});
    s.push_back({names::layer(l, "block_sparse_moe.gate.weight"), {E, H}, lin(H), 0});
    for (int e = 0; e < E; ++e) {
      s.push_back({names::expert(l, e, "w1"), {I, H}, lin(H), 0});
      s.push_back({names::expert(l, e, "w2"), {H, I}, lin(I), 0});
      s.push_back({names::expert(l, e, "w3"), {I, H}, lin(H), 0});
    }
  }
  s.push_back({names::final_norm(), {H}, 0.1f, 1.0f});
  if (!c.tie_word_embeddings) s.push_back({names::lm_head(), {V, H}, lin(H), 0});
  return s;
}

TensorSpec tensor_spec(const ModelConfig& c, const std::string& name) {
  for (auto& t : model_tensor_specs(c))
    if (t.name == name) return t;
  fail("tensor '{}' is not part of a Mixtral model with {} layers and {} experts", name, c.num_hidden_layers,
       c.num_local_experts);
}

}  // namespace moebench
