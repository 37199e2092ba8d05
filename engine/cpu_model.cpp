// cpu_model.cpp: see cpu_model.h. The forward pass mirrors HF MixtralForCausalLM:
// embed -> N x [rmsnorm -> attention -> residual -> rmsnorm -> sparse MoE -> residual]
// -> rmsnorm -> lm_head, with each family's changes: q/k/v bias and the gated shared
// expert (Qwen2MoeForCausalLM), q/k RMSNorm before RoPE per head (Qwen3MoeForCausalLM) or
// over the whole projections (OlmoeForCausalLM), top-k weights left unnormalised.
#include "engine/cpu_model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <cstring>

#include "common/error.h"
#include "common/log.h"
#include "engine/cpu_expert_provider.h"
#include "engine/ops/ops.h"
#include "engine/sampler.h"
#include "profiler/counters.h"
#include "profiler/cpu_trace.h"

namespace moebench {


CpuModel::CpuModel(const WeightSource& src, int max_seq_len)
    : cfg_(src.config()), max_len_(max_seq_len), max_batch_tokens_(std::max(1, max_seq_len)) {
  EngineSettings s;
  s.expert_tier = "resident";
  init(src, s);
}

CpuModel::CpuModel(const EngineContext& ctx)
    : cfg_(ctx.weights->config()),
      max_len_(std::min(ctx.settings.max_model_len, ctx.weights->config().max_position_embeddings)),
      max_batch_tokens_(std::max(1, std::min(ctx.settings.max_num_batched_tokens, max_len_))),
      prof_(ctx.prof) {
  init(*ctx.weights, ctx.settings);
}

void CpuModel::init(const WeightSource& src, const EngineSettings& settings) {
  const ModelConfig& c = cfg_;
  if (max_len_ <= 0 || max_len_ > c.max_position_embeddings)
    fail("max sequence length {} must be in 1..{} (max_position_embeddings)", max_len_, c.max_position_embeddings);
  const double gib = static_cast<double>(c.total_params()) * 4 / (1ULL << 30);
  if (gib > 16)
    fail("model {} needs {:.1f} GiB as fp32 on the CPU backend; the CPU backend is for small models (use the cuda backend)",
         c.name, gib);
  strategy_ = {settings.dispatch, settings.combine, settings.buffers};
  validate_strategy(strategy_);
  std::map<std::string, TensorSpec> specs;
  for (auto& s : model_tensor_specs(c)) specs.emplace(s.name, s);
  // The attention projections in weight_dtype (dequantised: the format's values, fp32).
  const QuantFormat attn_fmt = resolve_weight_format(settings.weight_dtype, src);
  auto get = [&](const std::string& name) {
    const TensorSpec& s = specs.at(name);
    std::vector<float> v(static_cast<size_t>(s.numel()));
    src.read_f32_as(s, is_attention_projection(name) ? attn_fmt : QuantFormat::bf16, v.data());
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
    if (c.qk_norm != QkNorm::none) {
      L.q_norm = get(names::layer(l, "self_attn.q_norm.weight"));
      L.k_norm = get(names::layer(l, "self_attn.k_norm.weight"));
    }
    if (c.qkv_bias) {
      L.bq = get(names::layer(l, "self_attn.q_proj.bias"));
      L.bk = get(names::layer(l, "self_attn.k_proj.bias"));
      L.bv = get(names::layer(l, "self_attn.v_proj.bias"));
    }
    if (c.shared_expert_intermediate_size > 0) {
      L.sw1 = get(names::layer(l, "mlp.shared_expert.gate_proj.weight"));
      L.sw3 = get(names::layer(l, "mlp.shared_expert.up_proj.weight"));
      L.sw2 = get(names::layer(l, "mlp.shared_expert.down_proj.weight"));
      L.shared_gate = get(names::layer(l, "mlp.shared_expert_gate.weight"));
    }
  }
  w_.norm = get(names::final_norm());
  if (!c.tie_word_embeddings) w_.lm_head = get(names::lm_head());
  k_cache_.assign(c.num_hidden_layers, std::vector<float>(static_cast<size_t>(max_len_) * c.kv_dim()));
  v_cache_.assign(c.num_hidden_layers, std::vector<float>(static_cast<size_t>(max_len_) * c.kv_dim()));

  routing_ = RoutingDriver::for_model(settings, c);
  if (prof_) prof_->experts.configure(c.num_hidden_layers, c.num_local_experts);
  if (settings.expert_tier == "resident")
    provider_ = std::make_unique<CpuResidentProvider>(src, resolve_expert_format(settings.expert_dtype, src), prof_);
  else
    provider_ = std::make_unique<CpuCachedProvider>(src, settings, prof_, routing_ ? routing_->trace() : nullptr);
  expert_ptrs_.assign(c.num_local_experts, {});
  log::info("cpu model {}: attention projections {}, experts {}, moe {}, routing {}", c.name,
            quant_format_name(attn_fmt), provider_->describe(), strategy_.describe(),
            routing_name());
}

std::string CpuModel::routing_name() const { return routing_ ? routing_->describe() : "model"; }

size_t CpuModel::weight_bytes() const { return static_cast<size_t>(cfg_.total_params()) * 4; }

int64_t CpuModel::engine_host_bytes() const {
  auto bytes = [](const auto& v) { return static_cast<int64_t>(v.capacity() * sizeof(v[0])); };
  int64_t n = static_cast<int64_t>(weight_bytes());
  for (size_t l = 0; l < k_cache_.size(); ++l) n += bytes(k_cache_[l]) + bytes(v_cache_[l]);
  if (paged_)
    for (size_t l = 0; l < paged_->k.size(); ++l) n += bytes(paged_->k[l]) + bytes(paged_->v[l]);
  n += bytes(moe_ws_.y) + bytes(moe_ws_.xin) + bytes(moe_ws_.yout) + bytes(moe_ws_.scratch) + bytes(moe_ws_.order) +
       bytes(moe_ws_.offsets);
  return n;
}

void CpuModel::moe(int layer, const float* x, float* out, int n, int pos0) {
  const ModelConfig& c = cfg_;
  const int H = c.hidden_size, I = c.intermediate_size, E = c.num_local_experts, K = c.num_experts_per_tok;
  auto& L = w_.layers[layer];
  std::vector<float> logits(static_cast<size_t>(n) * E);  // (n, E)
  std::vector<int32_t> ids(static_cast<size_t>(n) * K);   // (n, K)
  std::vector<float> wts(static_cast<size_t>(n) * K);     // (n, K)
  {
    profiler::ScopedRange r(prof_ ? &prof_->trace : nullptr, profiler::RangeKind::router, layer);
    cpu::linear(x, L.gate.data(), logits.data(), n, H, E);
    cpu::router_topk(logits.data(), ids.data(), wts.data(), n, E, K, c.norm_topk_prob);
    if (routing_) {  // another routing source picks the experts; the gate's softmax weighs them
      routing_->route(step_, layer, n, ids);
      cpu::router_reweight(logits.data(), ids.data(), wts.data(), n, E, K, c.norm_topk_prob);
    }
  }
  if (observer_) observer_(layer, pos0, n, ids.data(), wts.data());
  if (counting_) {
    std::vector<int32_t> distinct(ids);
    std::sort(distinct.begin(), distinct.end());
    step_count_.experts += std::unique(distinct.begin(), distinct.end()) - distinct.begin();
  }
  if (log::enabled(log::Level::debug))
    for (int i = 0; i < n; ++i) {
      std::string s;
      for (int j = 0; j < K; ++j) s += fmt::format(" e{}:{:.3f}", ids[i * K + j], wts[i * K + j]);
      log::debug("layer {} pos {} experts{}", layer, pos0 + i, s);
    }
  {
    profiler::ScopedRange r(prof_ ? &prof_->trace : nullptr, profiler::RangeKind::expert_load, layer);
    provider_->acquire(step_, layer, ids.data(), n * K, expert_ptrs_.data(), nullptr);
  }
  if (provider_->wants_prediction() && layer + 1 < c.num_hidden_layers) {
    std::vector<int32_t> nid(static_cast<size_t>(n) * K);
    if (routing_) {  // the routing source's next choice, degraded to prefetch_accuracy
      routing_->predict(step_, layer + 1, n, nid);
    } else {  // speculation: the next layer's gate applied to this layer's MoE input
      std::vector<float> nl(static_cast<size_t>(n) * E), nw(static_cast<size_t>(n) * K);
      cpu::linear(x, w_.layers[layer + 1].gate.data(), nl.data(), n, H, E);
      cpu::router_topk(nl.data(), nid.data(), nw.data(), n, E, K);
    }
    provider_->prefetch(step_, layer + 1, nid.data(), n * K);
  }
  profiler::ScopedRange r(prof_ ? &prof_->trace : nullptr, profiler::RangeKind::expert_compute, layer);
  moe_cpu(strategy_, x, ids.data(), wts.data(), expert_ptrs_.data(), out, n, H, I, E, K, moe_ws_);
  if (c.shared_expert_intermediate_size > 0) shared_expert(layer, x, out, n);
}

void CpuModel::shared_expert(int layer, const float* x, float* out, int n) {
  const int H = cfg_.hidden_size, S = cfg_.shared_expert_intermediate_size;
  const auto& L = w_.layers[layer];
  std::vector<float> y(static_cast<size_t>(n) * H), scratch(static_cast<size_t>(n) * 2 * S), g(n);
  cpu::swiglu_expert(x, L.sw1.data(), L.sw3.data(), L.sw2.data(), y.data(), scratch.data(), n, H, S);
  cpu::linear(x, L.shared_gate.data(), g.data(), n, H, 1);
  for (int i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + std::exp(-g[i]));
    for (int d = 0; d < H; ++d) out[static_cast<size_t>(i) * H + d] += s * y[static_cast<size_t>(i) * H + d];
  }
}

void CpuModel::qkv(int l, const float* x, float* h, float* q, float* k, float* v, int n) {
  const ModelConfig& c = cfg_;
  const int H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim();
  const auto& L = w_.layers[l];
  cpu::rmsnorm(x, L.attn_norm.data(), h, n, H, c.rms_norm_eps);
  cpu::linear(h, L.wq.data(), q, n, H, Q);
  cpu::linear(h, L.wk.data(), k, n, H, KV);
  cpu::linear(h, L.wv.data(), v, n, H, KV);
  if (c.qkv_bias) {
    for (int i = 0; i < n; ++i) {
      for (int d = 0; d < Q; ++d) q[static_cast<size_t>(i) * Q + d] += L.bq[d];
      for (int d = 0; d < KV; ++d) {
        k[static_cast<size_t>(i) * KV + d] += L.bk[d];
        v[static_cast<size_t>(i) * KV + d] += L.bv[d];
      }
    }
  }
  if (c.qk_norm == QkNorm::per_head) {  // in place, each head's head_dim values
    cpu::rmsnorm(q, L.q_norm.data(), q, n * c.num_attention_heads, c.head_dim, c.rms_norm_eps);
    cpu::rmsnorm(k, L.k_norm.data(), k, n * c.num_key_value_heads, c.head_dim, c.rms_norm_eps);
  } else if (c.qk_norm == QkNorm::whole) {  // over the whole projection, before the head split
    cpu::rmsnorm(q, L.q_norm.data(), q, n, Q, c.rms_norm_eps);
    cpu::rmsnorm(k, L.k_norm.data(), k, n, KV, c.rms_norm_eps);
  }
}

void CpuModel::finish_layer(int l, float* x, float* h, const float* att, int n, int pos0) {
  const ModelConfig& c = cfg_;
  const int H = c.hidden_size;
  const auto& L = w_.layers[l];
  cpu::linear(att, L.wo.data(), h, n, c.q_dim(), H);
  cpu::add_inplace(x, h, n, H);
  cpu::rmsnorm(x, L.ffn_norm.data(), h, n, H, c.rms_norm_eps);
  std::vector<float> m(static_cast<size_t>(n) * H);
  moe(l, h, m.data(), n, pos0);
  cpu::add_inplace(x, m.data(), n, H);
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
    float* kc = k_cache_[l].data() + static_cast<size_t>(pos0) * KV;  // (n, n_kv, hd) slice
    float* vc = v_cache_[l].data() + static_cast<size_t>(pos0) * KV;
    qkv(l, x.data(), h.data(), q.data(), kc, vc, n);
    cpu::rope(q.data(), pos.data(), n, c.num_attention_heads, c.head_dim, c.rope_theta);
    cpu::rope(kc, pos.data(), n, c.num_key_value_heads, c.head_dim, c.rope_theta);
    cpu::attention(q.data(), k_cache_[l].data(), v_cache_[l].data(), att.data(), n, pos0, c.num_attention_heads,
                   c.num_key_value_heads, c.head_dim);
    finish_layer(l, x.data(), h.data(), att.data(), n, pos0);
  }
  ++step_;
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

void CpuModel::setup_kv_blocks(int block_size, int num_blocks, int max_seqs) {
  if (block_size <= 0 || num_blocks <= 0 || max_seqs <= 0)
    fail("setup_kv_blocks: block_size {}, num_blocks {}, max_seqs {} (expected all positive)", block_size, num_blocks,
         max_seqs);
  const size_t floats = static_cast<size_t>(num_blocks) * block_size * cfg_.kv_dim();
  const double gib = static_cast<double>(floats) * 4 * 2 * cfg_.num_hidden_layers / (1ULL << 30);
  if (gib > 16)
    fail("paged KV cache of {} blocks x {} tokens x {} layers needs {:.1f} GiB as fp32 on the CPU backend; lower the "
         "blocks or the tokens",
         num_blocks, block_size, cfg_.num_hidden_layers, gib);
  auto p = std::make_unique<Paged>();
  p->block_size = block_size;
  p->num_blocks = num_blocks;
  p->max_seqs = max_seqs;
  p->k.assign(cfg_.num_hidden_layers, std::vector<float>(floats));
  p->v.assign(cfg_.num_hidden_layers, std::vector<float>(floats));
  paged_ = std::move(p);
}

bool CpuModel::set_step_expert_count(bool on) {
  if (on && !step_count_on_) step_count_ = {};
  step_count_on_ = on;
  return true;
}

void CpuModel::forward_batch(const std::vector<BatchSeq>& seqs, int32_t* next, float* logits) {
  if (!paged_) fail("forward_batch: no paged KV pool (call setup_kv_blocks first)");
  const Paged& P = *paged_;
  const ModelConfig& c = cfg_;
  const int n_seqs = static_cast<int>(seqs.size());
  // A step may sample nothing: a chunk of a prompt longer than the step's token budget.
  const BatchShape shape = check_batch(seqs, {.max_seqs = P.max_seqs, .block_size = P.block_size,
                                              .num_blocks = P.num_blocks, .max_len = max_len_,
                                              .vocab = c.vocab_size, .max_tokens = max_batch_tokens_});
  const int m = shape.m, n_out = shape.n_out, width = shape.max_blocks;  // at least 1: check_batch

  std::vector<int32_t> tok(m), pos(m), slot(m), seq_row(m), out_row(n_out);
  std::vector<int32_t> tables(static_cast<size_t>(n_seqs) * width);
  pack_batch_rows(seqs, P.block_size, width, tok.data(), pos.data(), slot.data(), seq_row.data(), out_row.data(),
                  tables.data());

  const int H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim();
  std::vector<float> x(static_cast<size_t>(m) * H), h(static_cast<size_t>(m) * H);  // (m, H)
  std::vector<float> q(static_cast<size_t>(m) * Q), att(static_cast<size_t>(m) * Q);  // (m, Q)
  std::vector<float> k(static_cast<size_t>(m) * KV), v(static_cast<size_t>(m) * KV);  // (m, KV)
  counting_ = step_count_on_ && shape.all_decode && m > 1;
  struct CountEnd {  // counting_ ends with this forward, however it leaves
    bool& on;
    ~CountEnd() { on = false; }
  } count_end{counting_};
  cpu::embedding(w_.embed.data(), tok.data(), x.data(), m, H);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    qkv(l, x.data(), h.data(), q.data(), k.data(), v.data(), m);
    float* kp = paged_->k[l].data();
    float* vp = paged_->v[l].data();
    cpu::rope_kv_store_paged(q.data(), k.data(), v.data(), pos.data(), slot.data(), kp, vp, m, c.num_attention_heads,
                             c.num_key_value_heads, c.head_dim, c.rope_theta);
    cpu::paged_attention(q.data(), kp, vp, tables.data(), width, seq_row.data(), pos.data(), att.data(), m,
                         c.num_attention_heads, c.num_key_value_heads, c.head_dim, P.block_size);
    finish_layer(l, x.data(), h.data(), att.data(), m, pos[0]);
  }
  if (counting_) ++step_count_.steps;
  ++step_;
  const float* head = c.tie_word_embeddings ? w_.embed.data() : w_.lm_head.data();
  // The sampled rows through the final norm and lm_head together (one read of lm_head).
  for (int i = 0; i < n_out; ++i)
    cpu::rmsnorm(x.data() + static_cast<size_t>(out_row[i]) * H, w_.norm.data(), h.data() + static_cast<size_t>(i) * H,
                 1, H, c.rms_norm_eps);
  std::vector<float> own;
  if (!logits) own.resize(static_cast<size_t>(n_out) * c.vocab_size);
  float* out = logits ? logits : own.data();
  if (n_out > 0) cpu::linear(h.data(), head, out, n_out, H, c.vocab_size);
  for (int i = 0; i < n_out; ++i) next[i] = argmax(out + static_cast<size_t>(i) * c.vocab_size, c.vocab_size);
}

}  // namespace moebench
