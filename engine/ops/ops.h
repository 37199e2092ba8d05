// ops.h: the CPU reference ops (fp32, OpenMP). Each op lives in its own file
// engine/ops/<op>.cpp; its CUDA twin (bf16 weights, fp32 accumulation) lives in
// engine/cuda/<op>.cu with the same argument order (engine/cuda/ops.cuh).
// Shapes are row-major; a comment on every buffer gives its shape.
#pragma once
#include <cstddef>
#include <cstdint>

namespace moebench::cpu {

// table (vocab, dim), ids (n) -> out (n, dim)
void embedding(const float* table, const int32_t* ids, float* out, int n, int dim);

// x (n, dim), w (dim) -> out (n, dim); out = x / sqrt(mean(x^2) + eps) * w. out may alias x.
void rmsnorm(const float* x, const float* w, float* out, int n, int dim, float eps);

// x (n, in), w (out, in) -> y (n, out) = x @ w^T. y must not alias x.
void linear(const float* x, const float* w, float* y, int n, int in, int out);
// Test hook of the CI gate (MOEBENCH_INJECT_SLOWDOWN, GenerateOptions::inject_slowdown):
// with factor F > 1, linear() on the calling thread also recomputes (F - 1) of its
// output rows (whole rows; the fraction carried from call to call, so over a pass
// the extra rows are (F - 1) of all rows to within one) into a scratch sum that
// nothing reads. Its results are unchanged; its work grows by about F. 1 = off.
void set_extra_work(double factor);
double extra_work();

// x (n, heads, head_dim) rotated in place, token i at position pos[i].
// Rotate-half convention (HF Llama/Mixtral): pairs (j, j + head_dim/2),
// inv_freq[j] = theta^(-2j/head_dim).
void rope(float* x, const int32_t* pos, int n, int heads, int head_dim, float theta);

// Causal GQA attention for n new tokens at positions pos0 .. pos0+n-1.
// q (n, n_heads, head_dim); k_cache, v_cache (>= pos0+n, n_kv, head_dim) already
// holding the new tokens' keys/values; out (n, n_heads * head_dim).
void attention(const float* q, const float* k_cache, const float* v_cache, float* out, int n, int pos0,
               int n_heads, int n_kv, int head_dim);

// Paged KV cache (engine/scheduler.h): k_pool, v_pool (n_blocks, block_size, n_kv, head_dim);
// the slot of position p of a sequence is block_table[p / block_size] * block_size + p % block_size.
// Batched causal GQA attention over m tokens of several sequences: token i belongs to the
// sequence whose block table is row seq_row[i] of block_tables (rows, table_width) and
// attends keys 0 .. pos[i] of it. q (m, n_heads, head_dim); out (m, n_heads * head_dim).
// (engine/ops/paged_attention.cpp; twin engine/cuda/paged_attention.cu.)
void paged_attention(const float* q, const float* k_pool, const float* v_pool, const int32_t* block_tables,
                     int table_width, const int32_t* seq_row, const int32_t* pos, float* out, int m, int n_heads,
                     int n_kv, int head_dim, int block_size);
// RoPE of q (m, n_heads, head_dim) in place and of k (m, n_kv, head_dim) on the way into
// the pool: k_pool/v_pool slot slot[i] (n_kv, head_dim) = rope(k_i), v_i. (paged_kv.cpp)
void rope_kv_store_paged(float* q, const float* k, const float* v, const int32_t* pos, const int32_t* slot,
                         float* k_pool, float* v_pool, int m, int n_heads, int n_kv, int head_dim, float theta);

// Router: logits (n, n_experts) -> softmax (fp32) -> top-k (descending; ties to the
// lower index) -> weights renormalised to sum 1 (Mixtral; norm_topk_prob), or left as
// the full softmax's probabilities (renormalise false: OLMoE, Qwen2-MoE). ids (n, k),
// weights (n, k).
void router_topk(const float* logits, int32_t* ids, float* weights, int n, int n_experts, int k,
                 bool renormalise = true);

// One SwiGLU expert: x (n, hidden) -> out (n, hidden) = w2 @ (silu(w1 @ x) * (w3 @ x)).
// w1, w3 (inter, hidden); w2 (hidden, inter); scratch (n, 2 * inter).
void swiglu_expert(const float* x, const float* w1, const float* w3, const float* w2, float* out,
                   float* scratch, int n, int hidden, int inter);

// x (n, dim) += y (n, dim)
void add_inplace(float* x, const float* y, int n, int dim);

}  // namespace moebench::cpu

namespace moebench::cpu {
// Weights of already-chosen experts (another routing source picked ids): softmax of
// the gate's logits (n, n_experts) at ids (n, k), renormalised to sum 1 unless told not — the same
// arithmetic as router_topk, so choosing the gate's own top-k gives identical weights.
void router_reweight(const float* logits, const int32_t* ids, float* weights, int n, int n_experts, int k,
                     bool renormalise = true);
}  // namespace moebench::cpu
