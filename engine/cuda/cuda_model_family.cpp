// cuda_model_family.cpp: the CudaModel parts the MoE families beyond Mixtral add
// (model/config.h): q/k/v bias (Qwen2-MoE), q/k RMSNorm per head (Qwen3-MoE) or over the
// whole projections (OLMoE) on the fp32 projections before RoPE, and the shared expert
// behind its sigmoid gate (Qwen2-MoE) after the routed experts. Same order of operations
// as CpuModel. Mixtral layers have none of them: every step below is then skipped. At a
// decode step the per-head norm, RoPE and store can run inside the attention launch
// (family_decode_attention, MOEBENCH_QK_NORM_IN_ATTENTION=1).
#include <algorithm>

#include "common/error.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/decode_attention.h"
#include "engine/cuda/family_ops.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/weights.h"

namespace moebench::cuda {

uint64_t CudaModel::family_workspace_bytes(const ModelConfig& c, int pool_tokens) {
  const int S = c.shared_expert_intermediate_size;
  if (S <= 0) return 0;
  const uint64_t pool = static_cast<uint64_t>(std::max(1, pool_tokens));
  return round256(pool * c.hidden_size * sizeof(float)) + round256(pool * sizeof(float)) +
         round256(swiglu_scratch_bytes(static_cast<int>(pool), S));
}

void CudaModel::family_alloc_workspace() {
  const int S = cfg_.shared_expert_intermediate_size;
  if (S <= 0) return;
  const uint64_t pool = static_cast<uint64_t>(std::max(1, pool_tokens_));
  shared_y_ = arena_->alloc_n<float>(pool * cfg_.hidden_size, "shared expert output");
  shared_g_ = arena_->alloc_n<float>(pool, "shared expert gate");
  shared_scratch_ = arena_->alloc(swiglu_scratch_bytes(static_cast<int>(pool), S), "shared expert scratch");
}

void CudaModel::family_upload(Layer& L, int l, const std::map<std::string, const bf16*>& dev) {
  const ModelConfig& c = cfg_;
  if (c.qk_norm != QkNorm::none) {
    L.q_norm = dev.at(names::layer(l, "self_attn.q_norm.weight"));
    L.k_norm = dev.at(names::layer(l, "self_attn.k_norm.weight"));
  }
  if (c.qkv_bias) {
    L.bq = dev.at(names::layer(l, "self_attn.q_proj.bias"));
    L.bk = dev.at(names::layer(l, "self_attn.k_proj.bias"));
    L.bv = dev.at(names::layer(l, "self_attn.v_proj.bias"));
  }
  if (c.shared_expert_intermediate_size > 0) {
    L.sw1 = dev.at(names::layer(l, "mlp.shared_expert.gate_proj.weight"));
    L.sw3 = dev.at(names::layer(l, "mlp.shared_expert.up_proj.weight"));
    L.sw2 = dev.at(names::layer(l, "mlp.shared_expert.down_proj.weight"));
    L.shared_gate = dev.at(names::layer(l, "mlp.shared_expert_gate.weight"));
  }
}

void CudaModel::family_attention_rope(const Layer& L, ForwardBuffers& b, int m, const int32_t* pos, const int32_t* slot,
                                      bf16* k_pool, bf16* v_pool) {
  const ModelConfig& c = cfg_;
  const int Q = c.q_dim(), KV = c.kv_dim(), nh = c.num_attention_heads, nkv = c.num_key_value_heads;
  cudaStream_t s = stream_;
  if (L.bq) add_qkv_bias(b.q, L.bq, b.k, L.bk, b.v, L.bv, m, Q, KV, s);
  if (c.qk_norm == QkNorm::per_head) {  // the norm inside the rope + store launch
    qk_norm_rope_kv_store_paged(b.q, b.k, b.v, L.q_norm, L.k_norm, pos, slot, k_pool, v_pool, m, nh, nkv, c.head_dim,
                                c.rope_theta, c.rms_norm_eps, s);
    return;
  }
  if (c.qk_norm == QkNorm::whole) qk_rmsnorm(b.q, L.q_norm, m, Q, b.k, L.k_norm, m, KV, c.rms_norm_eps, s);
  rope_kv_store_paged(b.q, b.k, b.v, pos, slot, k_pool, v_pool, m, nh, nkv, c.head_dim, c.rope_theta, s);
}

bool CudaModel::family_qkv_norm_rope(const Layer& L, ForwardBuffers& b, const int32_t* pos, const int32_t* slot,
                                     bf16* k_pool, bf16* v_pool) {
  const ModelConfig& c = cfg_;
  const int nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  const bool bf16_weights = L.lw[0].format == QuantFormat::bf16 && L.lw[1].format == QuantFormat::bf16 &&
                            L.lw[2].format == QuantFormat::bf16;
  if (!qkv_qk_norm_rope_enabled() || !bf16_weights || c.qk_norm != QkNorm::per_head || L.bq ||
      !qkv_qk_norm_rope_supported(c.hidden_size, nh, nkv, hd, b.h, L.wq, L.wk, L.wv))
    return false;
  qkv_qk_norm_rope(b.x, L.attn_norm, c.rms_norm_eps, b.h, L.wq, L.wk, L.wv, b.q, b.k, b.v, L.q_norm, L.k_norm, pos,
                   slot, k_pool, v_pool, c.hidden_size, nh, nkv, hd, c.rope_theta, stream_);
  return true;
}

bool CudaModel::family_decode_attention(const Layer& L, ForwardBuffers& b, int m, const int32_t* tables,
                                        int table_width, const int32_t* seq_row, const int32_t* pos, bf16* k_pool,
                                        bf16* v_pool, int block_size, float* workspace) {
  const ModelConfig& c = cfg_;
  const int nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  // Off unless MOEBENCH_QK_NORM_IN_ATTENTION=1 (the same bits either way): measured on an
  // H200 (Qwen3-30B-A3B shape, batch 1), the folded launch made the single-sequence decode
  // slower, 281.1 tok/s against 296.9 with the two launches.
  static const bool enabled = env_choice("MOEBENCH_QK_NORM_IN_ATTENTION", {0, 1}, 0) == 1;
  if (!enabled || c.qk_norm != QkNorm::per_head || L.bq ||
      !decode_attention_qk_norm_supported(nh, nkv, hd, k_pool, v_pool))
    return false;
  // Each row's new key goes to the row its block table gives its position: the slot
  // family_attention_rope would store it at.
  decode_attention_qk_norm(b.q, b.k, b.v, L.q_norm, L.k_norm, c.rope_theta, c.rms_norm_eps, k_pool, v_pool, tables,
                           table_width, seq_row, pos, b.att, m, nh, nkv, hd, block_size, workspace, stream_);
  return true;
}

void CudaModel::family_shared_expert(const Layer& L, ForwardBuffers& b, int m) {
  if (!L.sw1) return;
  const int H = cfg_.hidden_size, S = cfg_.shared_expert_intermediate_size;
  if (m > pool_tokens_) fail("shared expert: a forward of {} tokens exceeds the {}-token pool", m, pool_tokens_);
  cudaStream_t s = stream_;
  // b.h still holds the MoE's input (the routed experts read it and leave it).
  swiglu_expert(b.h, L.sw1, L.sw3, L.sw2, shared_y_, shared_scratch_, m, H, S, false, blas_->get(), s);
  linear(b.h, L.shared_gate, shared_g_, m, H, 1, false, blas_->get(), s);
  add_sigmoid_gated(b.x, shared_y_, shared_g_, m, H, s);
}

}  // namespace moebench::cuda
