// cpu_model.cpp: see cpu_model.h. The forward pass mirrors HF MixtralForCausalLM:
// embed -> N x [rmsnorm -> attention -> residual -> rmsnorm -> sparse MoE -> residual]
// -> rmsnorm -> lm_head.
#include "engine/cpu_model.h"

#include <algorithm>
#include <map>
#include <cstring>

#include "engine/error.h"
#include "engine/log.h"
#include "engine/ops/ops.h"

namespace moebench {


CpuModel::CpuModel(const WeightSource& src, int max_seq_len) : cfg_(src.config()), max_len_(max_seq_len) {
  const ModelConfig& c = cfg_;
  if (max_len_ <= 0 || max_len_ > c.max_position_embeddings)
    fail("max sequence length {} must be in 1..{} (max_position_embeddings)", max_len_, c.max_position_embeddings);
  const double gib = static_cast<double>(c.total_params()) * 4 / (1ULL << 30);
  if (gib > 16) fail("model {} needs {:.1f} GiB as fp32 on the CPU backend; the CPU backend is for small models (use the cuda backend)", c.name, gib);
  std::map<std::string, TensorSpec> specs;
  for (auto& s : model_tensor_specs(c)) specs.emplace(s.name, s);
  auto get = [&](const std::string& name) {
    const TensorSpec& s = specs.at(name);
    std::vector<float> v(static_cast<size_t>(s.numel()));
    src.read_f32(s, v.data());
    return v;
  };
  w_.embed = get(names::embed());
  w_.layers.resize(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    auto& L = w_.layers[l];
    L.attn_norm = get(names::layer(l, "input_layernorm.weight"));
    L.wq = get(names::layer(l, "self_attn.q_proj.weight"));
    L.wk = get(names::layer(l, "self_attn.k_proj.weight"));
    L.wv = get(names::layer(l, "self_attn.v_proj.weight"));
    L.wo = get(names::layer(l, "self_attn.o_proj.weight"));
    L.ffn_norm = get(names::layer(l, "post_attention_layernorm.weight"));
    L.gate = get(names::layer(l, "block_sparse_moe.gate.weight"));
    for (int e = 0; e < c.num_local_experts; ++e) {
      L.w1.push_back(get(names::expert(l, e, "w1")));
      L.w2.push_back(get(names::expert(l, e, "w2")));
      L.w3.push_back(get(names::expert(l, e, "w3")));
    }
  }
  w_.norm = get(names::final_norm());
  if (!c.tie_word_embeddings) w_.lm_head = get(names::lm_head());
  k_cache_.assign(c.num_hidden_layers, std::vector<float>(static_cast<size_t>(max_len_) * c.kv_dim()));
  v_cache_.assign(c.num_hidden_layers, std::vector<float>(static_cast<size_t>(max_len_) * c.kv_dim()));
}

size_t CpuModel::weight_bytes() const { return static_cast<size_t>(cfg_.total_params()) * 4; }

void CpuModel::moe(int layer, const float* x, float* out, int n, int pos0) {
  const ModelConfig& c = cfg_;
  const int H = c.hidden_size, I = c.intermediate_size, E = c.num_local_experts, K = c.num_experts_per_tok;
  auto& L = w_.layers[layer];
  std::vector<float> logits(static_cast<size_t>(n) * E);  // (n, E)
  std::vector<int32_t> ids(static_cast<size_t>(n) * K);   // (n, K)
  std::vector<float> wts(static_cast<size_t>(n) * K);     // (n, K)
  cpu::linear(x, L.gate.data(), logits.data(), n, H, E);
  cpu::router_topk(logits.data(), ids.data(), wts.data(), n, E, K);
  if (observer_) observer_(layer, pos0, n, ids.data(), wts.data());
  if (log::enabled(log::Level::debug))
    for (int i = 0; i < n; ++i) {
      std::string s;
      for (int j = 0; j < K; ++j) s += fmt::format(" e{}:{:.3f}", ids[i * K + j], wts[i * K + j]);
      log::debug("layer {} pos {} experts{}", layer, pos0 + i, s);
    }
  // Grouped dispatch: gather each expert's tokens, run the expert once on them,
  // keep per (token, slot) outputs, then combine in slot order.
  std::vector<float> y(static_cast<size_t>(n) * K * H);  // (n, K, H)
  std::vector<int> rows;
  std::vector<float> xin, yout, scratch;
  for (int e = 0; e < E; ++e) {
    rows.clear();
    for (int r = 0; r < n * K; ++r)
      if (ids[r] == e) rows.push_back(r);
    if (rows.empty()) continue;
    const int m = static_cast<int>(rows.size());
    xin.resize(static_cast<size_t>(m) * H);
    yout.resize(static_cast<size_t>(m) * H);
    scratch.resize(static_cast<size_t>(m) * 2 * I);
    for (int i = 0; i < m; ++i) std::memcpy(&xin[static_cast<size_t>(i) * H], x + static_cast<size_t>(rows[i] / K) * H, H * 4);
    cpu::swiglu_expert(xin.data(), L.w1[e].data(), L.w3[e].data(), L.w2[e].data(), yout.data(), scratch.data(), m, H, I);
    for (int i = 0; i < m; ++i) std::memcpy(&y[static_cast<size_t>(rows[i]) * H], &yout[static_cast<size_t>(i) * H], H * 4);
  }
  for (int t = 0; t < n; ++t) {
    float* o = out + static_cast<size_t>(t) * H;
    std::fill(o, o + H, 0.0f);
    for (int j = 0; j < K; ++j) {
      const float wj = wts[t * K + j];
      const float* yj = &y[(static_cast<size_t>(t) * K + j) * H];
      for (int d = 0; d < H; ++d) o[d] += wj * yj[d];
    }
  }
}

void CpuModel::forward(const int32_t* tokens, int n, int pos0, float* logits, float* all_logits) {
  const ModelConfig& c = cfg_;
  if (n <= 0) fail("forward: no tokens");
  if (pos0 + n > max_len_) fail("sequence length {} exceeds max_model_len {}", pos0 + n, max_len_);
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) fail("token id {} out of range 0..{}", tokens[i], c.vocab_size - 1);
  const int H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim();
  std::vector<float> x(static_cast<size_t>(n) * H), h(static_cast<size_t>(n) * H);  // (n, H)
  std::vector<float> q(static_cast<size_t>(n) * Q), att(static_cast<size_t>(n) * Q);  // (n, Q)
  std::vector<int32_t> pos(n);
  for (int i = 0; i < n; ++i) pos[i] = pos0 + i;
  cpu::embedding(w_.embed.data(), tokens, x.data(), n, H);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    auto& L = w_.layers[l];
    cpu::rmsnorm(x.data(), L.attn_norm.data(), h.data(), n, H, c.rms_norm_eps);
    float* kc = k_cache_[l].data() + static_cast<size_t>(pos0) * KV;  // (n, n_kv, hd) slice
    float* vc = v_cache_[l].data() + static_cast<size_t>(pos0) * KV;
    cpu::linear(h.data(), L.wq.data(), q.data(), n, H, Q);
    cpu::linear(h.data(), L.wk.data(), kc, n, H, KV);
    cpu::linear(h.data(), L.wv.data(), vc, n, H, KV);
    cpu::rope(q.data(), pos.data(), n, c.num_attention_heads, c.head_dim, c.rope_theta);
    cpu::rope(kc, pos.data(), n, c.num_key_value_heads, c.head_dim, c.rope_theta);
    cpu::attention(q.data(), k_cache_[l].data(), v_cache_[l].data(), att.data(), n, pos0, c.num_attention_heads,
                   c.num_key_value_heads, c.head_dim);
    cpu::linear(att.data(), L.wo.data(), h.data(), n, Q, H);
    cpu::add_inplace(x.data(), h.data(), n, H);
    cpu::rmsnorm(x.data(), L.ffn_norm.data(), h.data(), n, H, c.rms_norm_eps);
    std::vector<float> m(static_cast<size_t>(n) * H);
    moe(l, h.data(), m.data(), n, pos0);
    cpu::add_inplace(x.data(), m.data(), n, H);
  }
  const float* head = c.tie_word_embeddings ? w_.embed.data() : w_.lm_head.data();
  if (all_logits) {
    cpu::rmsnorm(x.data(), w_.norm.data(), h.data(), n, H, c.rms_norm_eps);
    cpu::linear(h.data(), head, all_logits, n, H, c.vocab_size);
    if (logits) std::memcpy(logits, all_logits + static_cast<size_t>(n - 1) * c.vocab_size, c.vocab_size * 4);
  } else {
    cpu::rmsnorm(x.data() + static_cast<size_t>(n - 1) * H, w_.norm.data(), h.data(), 1, H, c.rms_norm_eps);
    cpu::linear(h.data(), head, logits, 1, H, c.vocab_size);
  }
}

}  // namespace moebench
