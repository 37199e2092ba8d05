// ops.cuh: the CUDA ops (twins of engine/ops/ops.h, same argument order, plus a
// stream). One op per file in engine/cuda/<op>.cu. Every launcher checks its launch
// and opens an NVTX range (domain "moebench"). Includable from host C++.
//
// Numeric conventions (document once, hold everywhere):
//   * weights, norm weights and the KV cache are bf16;
//   * the residual stream and every matmul *output* are fp32 (fp32 accumulation);
//   * every matmul *input* is bf16 (as HF computes Mixtral in bf16): rmsnorm writes
//     bf16, attention writes bf16, the SwiGLU product is bf16;
//   * embedding gathers the bf16 table into fp32 (it is the residual stream).
// All pointers are device pointers unless said otherwise; no launcher allocates.
#pragma once
#include <cublas_api.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moebench::cuda {

using bf16 = __nv_bfloat16;

// ---- embedding.cu ----
// table (vocab, dim) bf16, ids (n) -> out (n, dim) fp32.
void embedding(const bf16* table, const int32_t* ids, float* out, int n, int dim, cudaStream_t stream);
// x (n, dim) += y (n, dim), fp32.
void add_inplace(float* x, const float* y, int n, int dim, cudaStream_t stream);
// dst (count) bf16 = src (count) fp32, round to nearest even.
void to_bf16(const float* src, bf16* dst, int64_t count, cudaStream_t stream);

// ---- rmsnorm.cu ----
// x (n, dim) fp32, w (dim) bf16 -> out (n, dim) bf16 = x * rsqrt(mean(x^2) + eps) * w.
void rmsnorm(const float* x, const bf16* w, bf16* out, int n, int dim, float eps, cudaStream_t stream);

// ---- rope.cu ----
// x (n, heads, head_dim) fp32 rotated in place; token i at position pos[i] (device).
// Rotate-half; inv_freq[j] = 1 / theta^(2j/head_dim) in fp32, as engine/ops/rope.cpp.
void rope(float* x, const int32_t* pos, int n, int heads, int head_dim, float theta, cudaStream_t stream);
// Writes the new tokens' keys/values into the bf16 cache rows pos0 .. pos0+n-1.
// k, v (n, n_kv, head_dim) fp32; k_cache, v_cache (max_len, n_kv, head_dim) bf16.
void kv_store(const float* k, const float* v, bf16* k_cache, bf16* v_cache, int n, int pos0, int n_kv,
              int head_dim, cudaStream_t stream);

// ---- attention.cu ----
// Causal GQA attention for n new tokens at positions pos0 .. pos0+n-1 of one sequence.
// q (n, n_heads, head_dim) fp32; k_cache, v_cache (>= pos0+n, n_kv, head_dim) bf16 already
// holding the new tokens; out (n, n_heads * head_dim) bf16. head_dim <= 128.
// Tiled over keys (32 per shared-memory tile) with an online softmax; no score matrix in
// global memory. When few blocks would run (decode), the key range is split over
// blocks (flash-decoding) and partials are merged by a second kernel; `workspace` must
// hold attention_workspace_floats(...) floats (may be null when that is 0).
size_t attention_workspace_floats(int n, int pos0, int n_heads, int n_kv, int head_dim);
void attention(const float* q, const bf16* k_cache, const bf16* v_cache, bf16* out, int n, int pos0, int n_heads,
               int n_kv, int head_dim, float* workspace, cudaStream_t stream);

// ---- paged_attention.cu ----
// Batched causal GQA attention over a paged KV cache (engine/scheduler.h). m tokens of
// several sequences: token i reads the block table in row seq_row[i] of block_tables
// (rows, table_width) and attends keys 0 .. pos[i]. q (m, n_heads, head_dim) fp32;
// k_pool, v_pool (n_blocks, block_size, n_kv, head_dim) bf16; out (m, n_heads * head_dim)
// bf16. One block per (token, KV head), its warps splitting the keys (online softmax per
// warp, merged in warp order); head_dim <= 128, n_heads / n_kv <= 8. When m x n_kv
// blocks are too few to fill the GPU and `workspace` is given, the keys are also split
// over paged_attention_splits(m, n_kv, table_width * block_size) blocks (flash-decoding;
// chunks computed on the device from the positions, partials merged in split order by a
// second kernel); `workspace` must then hold paged_attention_workspace_floats(...)
// floats. Null workspace: no key split. The launches depend only on the shapes, nothing
// on the host on the positions (CUDA-graph safe). A contiguous cache (max_len, n_kv,
// head_dim) is one block: block_tables = seq_row = {0} (width 1), block_size = max_len.
int paged_attention_splits(int m, int n_kv, int max_keys);
size_t paged_attention_workspace_floats(int m, int n_heads, int n_kv, int head_dim, int max_keys);
void paged_attention(const float* q, const bf16* k_pool, const bf16* v_pool, const int32_t* block_tables,
                     int table_width, const int32_t* seq_row, const int32_t* pos, bf16* out, int m, int n_heads,
                     int n_kv, int head_dim, int block_size, float* workspace, cudaStream_t stream);

// ---- paged_kv.cu ----
// rope() of q (m, n_heads, head_dim) in place and of k (m, n_kv, head_dim) on its way to
// the pool: k_pool / v_pool slot slot[i] (n_kv, head_dim) bf16 = rope(k_i), v_i. Same
// arithmetic as rope() + kv_store() (bit-identical), one launch of one block per (token,
// head). A contiguous cache (max_len, n_kv, head_dim) is the pool with slot = pos.
void rope_kv_store_paged(float* q, const float* k, const float* v, const int32_t* pos, const int32_t* slot,
                         bf16* k_pool, bf16* v_pool, int m, int n_heads, int n_kv, int head_dim, float theta,
                         cudaStream_t stream);
// out (n, dim) = x[rows[i]] (x (?, dim) fp32; rows (n) device).
void gather_rows(const float* x, const int32_t* rows, float* out, int n, int dim, cudaStream_t stream);

// ---- router.cu ----
// logits (n, n_experts) fp32 -> softmax (fp32) -> top-k (descending; ties to the lower
// index) -> renormalised weights (renormalise false: the softmax's probabilities, as
// norm_topk_prob false). ids (n, k) int32, weights (n, k) fp32. n_experts <= 256, k <= 8.
void router_topk(const float* logits, int32_t* ids, float* weights, int n, int n_experts, int k,
                 cudaStream_t stream, bool renormalise = true);

// ---- linear.cu ----
// y (n, out) fp32 = x (n, in) bf16 @ w (out, in)^T bf16  [+ y if accumulate].
// `accumulate` folds a residual add into the matmul (y += x @ w^T).
enum class LinearAlgo {
  automatic,  // GEMV for n <= kGemvAutoMaxRows (when `in` is a multiple of 8), cuBLAS above
  gemv,       // own kernel: 16-byte weight loads, several rows per warp, n <= 8
  cublas,     // cublasGemmEx bf16 x bf16 -> fp32, fp32 compute
  gemv_tc,    // gemv_tc below: the tensor-core GEMV, n <= 8, `in` % 8 == 0, 16-byte aligned x and w
};
// `blas` may be null when the GEMV path is taken.
void linear(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool accumulate, cublasHandle_t blas,
            cudaStream_t stream, LinearAlgo algo = LinearAlgo::automatic);
// y[s] (n, out[s]) = x (n, in) @ w[s]^T for n_mats <= 4 matrices sharing x (q/k/v): one
// GEMV launch when n == 1 (per row bit-identical to linear()), else one linear() each.
void linear_multi(const bf16* x, const bf16* const* w, float* const* y, const int* out, int n_mats, int n, int in,
                  cublasHandle_t blas, cudaStream_t stream);
// The GEMV kernel alone (n <= 8; any `in`, fastest when in % 8 == 0 and pointers 16-byte aligned).
void gemv(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool accumulate, cudaStream_t stream);
constexpr int kGemvMaxRows = 8;
// The GEMV of one activation row (n = 1) with its launch shape given: rows_per_warp weight
// rows per warp, depth 16-byte chunks of each row in flight per lane, warps per block.
// Every shape gives gemv's bits (per row the same lane order); the benchmarks time them
// side by side. gemv_shapes() lists the compiled ones; another shape, an `in` not a
// multiple of 8 or unaligned x/w is an Error.
// prefetch > 0: each warp also asks L2 for its rows' chunks that many iterations ahead of
// its loads (more bytes in flight than registers hold; the same bits).
struct GemvShape {
  int rows_per_warp, depth, warps;
  int prefetch = 0;
};
const std::vector<GemvShape>& gemv_shapes();
void gemv_shaped(const bf16* x, const bf16* w, float* y, int in, int out, bool accumulate, GemvShape shape,
                 cudaStream_t stream);
// The shape gemv takes at n = 1 for `out` rows.
GemvShape gemv_default_shape(int out);
// linear_multi's one launch (n = 1) with its shape given; the same bits as linear_multi.
void linear_multi_shaped(const bf16* x, const bf16* const* w, float* const* y, const int* out, int n_mats, int in,
                         GemvShape shape, cudaStream_t stream);
// Decode's attention entry in one launch: h (in) bf16 = rmsnorm(x) * norm_w (bit for bit
// rmsnorm()'s, written to h) and y[s] (out[s]) = h @ w[s]^T (bit for bit linear_multi's),
// for one token x (in) fp32. Where rmsnorm_linear_multi_supported says so (1..4 matrices,
// in % 8 == 0, h kept in shared memory: in * 2 <= kRmsnormGemvMaxSharedBytes, 16-byte
// aligned h and w); else an Error.
constexpr size_t kRmsnormGemvMaxSharedBytes = 48 * 1024;
//
// With `predict` (its n_experts > 0), the launch also scores the MoE block's experts on
// this x, before attention has added to it: n_experts more blocks write
// logits[e] = sum_i x_i * norm_w_i * gate[e][i] (fp32; the router's logits on x without
// its positive factor 1/rms, so in the same order). L2 is then asked for the first rows of
// the experts these rank first while attention and the router run (l2_prefetch_predicted
// on the side stream, or moe_decode_fused's pred_logits). A hint only: h and y are the same
// bits with or without it.
struct ExpertPredict {
  const bf16* norm_w = nullptr;  // (in) the MoE block's norm weights
  const bf16* gate = nullptr;    // (n_experts, in) the router's gate
  float* logits = nullptr;       // (n_experts) out
  int n_experts = 0;             // 0: no prediction; at most kExpertPredictMax
};
constexpr int kExpertPredictMax = 32;
// Whether rmsnorm_linear_multi takes `predict` with this x: none (n_experts 0), or at most
// kExpertPredictMax experts with logits and 16-byte aligned x, norm and gate.
bool expert_predict_supported(const float* x, const ExpertPredict& predict);
bool rmsnorm_linear_multi_supported(const void* h, const bf16* const* w, const int* out, int n_mats, int in);
void rmsnorm_linear_multi(const float* x, const bf16* norm_w, float eps, bf16* h, const bf16* const* w, float* const* y,
                          const int* out, int n_mats, int in, cudaStream_t stream, const ExpertPredict& predict = {});
// The same product on the tensor cores (defined in quant_gemv.cu, the dequantising GEMV's
// tile with bf16 weights as their own codes): 16 weight rows x the n <= 8 rows of x per
// mma, fp32 sums, the row length split over a block's warps and added in warp order
// (deterministic; rounding differs from gemv's). in % 8 == 0, x and w 16-byte aligned.
void gemv_tc(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool accumulate, cudaStream_t stream);
// Where `automatic` (and swiglu_expert) take the GEMV path. Measured on an H200
// (reports/baselines/kernels_h200_2026-11-28.json): at M = 1 the GEMV beats cuBLAS on
// the large Mixtral shapes (14336x4096: 3.36 vs 2.81 TB/s; lm_head 3.71 vs 3.49), at
// M = 2..8 cuBLAS streams ~2.8 TB/s while this GEMV drops to 2.4 / 1.7 / 1.1 TB/s.
constexpr int kGemvAutoMaxRows = 1;

// ---- swiglu.cu ----
// One SwiGLU expert: x (n, hidden) bf16 -> out (n, hidden) fp32 = w2 @ (silu(w1 @ x) * (w3 @ x))
// [+ out if accumulate]. w1, w3 (inter, hidden); w2 (hidden, inter); all bf16.
// Decode (n <= kGemvAutoMaxRows): one fused kernel reads w1 and w3 rows together and writes
// h = silu(g) * u (bf16) to scratch, then the GEMV of w2. Larger n: cuBLAS.
// scratch must hold swiglu_scratch_bytes(n, inter) bytes.
size_t swiglu_scratch_bytes(int n, int inter);
void swiglu_expert(const bf16* x, const bf16* w1, const bf16* w3, const bf16* w2, float* out, void* scratch, int n,
                   int hidden, int inter, bool accumulate, cublasHandle_t blas, cudaStream_t stream);
// The fused gate/up kernel alone: h (n, inter) bf16 = silu(x @ w1^T) * (x @ w3^T), n <= 8.
void swiglu_gate_up(const bf16* x, const bf16* w1, const bf16* w3, bf16* h, int n, int hidden, int inter,
                    cudaStream_t stream);

// ---- moe_fused.cu ----
// The "fused" dispatch/combine for decode: all top-k experts of n <= 8 tokens in two launches.
// x (n, hidden) bf16; ids, weights (n, k) from router_topk; w1s, w3s, w2s: device arrays of
// n_experts device pointers (the expert slots of this layer; unused experts may be null);
// h scratch (n * k, inter) bf16; out (n, hidden) fp32 += sum_j weights[i,j] * expert_{ids[i,j]}(x_i),
// summed in j order (deterministic). Launch 1 groups tokens by expert so each used
// expert's w1/w3 rows are read once; launch 2 reads w2 rows per (token, slot) and
// applies the routing weights.
// Launch 2 variants (bit-identical results): per_pair reads w2 rows once per (token, slot)
// pair, one warp walking the pairs in turn; grouped reads them once per used expert with
// the (row group, expert) items spread over a block's warps, and lets the next kernel's
// blocks start (programmatic launch, pdl.h) once its dot products are done, or right
// after its wait with MOEBENCH_DOWN_TRIGGER=1 (launch_env.h), and with
// MOEBENCH_DOWN_PRELOAD=1 loads each warp's first w2 chunks before that wait;
// grouped_early_trigger and grouped_preload are grouped with the one or the other
// whatever the environment says.
// pred_logits (n == 1, n_experts <= kExpertPredictMax; rmsnorm_linear_multi's
// ExpertPredict scores) with pred_bytes > 0: before its wait, each gate/up block that
// starts while the router still runs asks L2 for the first pred_bytes of its w1 rows and
// of its w3 rows (each a contiguous range of moe_gate_up_block_rows rows) in the expert
// ranked y-th by the scores (y: its slot). Right guesses are then read from L2; the
// results are the same bits whatever the guess.
enum class MoeDownAlgo { grouped, per_pair, grouped_early_trigger, grouped_preload };
// Rows of w1 (and of w3) one block of the fused gate/up launch takes at one token.
int moe_gate_up_block_rows(int inter);
void moe_decode_fused(const bf16* x, const int32_t* ids, const float* weights, const bf16* const* w1s,
                      const bf16* const* w3s, const bf16* const* w2s, bf16* h, float* out, int n, int k,
                      int n_experts, int hidden, int inter, cudaStream_t stream,
                      MoeDownAlgo down = MoeDownAlgo::grouped, const float* pred_logits = nullptr,
                      unsigned pred_bytes = 0);

// The same experts without the combine: y (n * k, hidden) fp32, row p = t * k + j holds
// expert_{ids[p]}(x_t) unweighted (for the loop / index_add combines). Same launch 1.
void moe_decode_experts(const bf16* x, const int32_t* ids, const bf16* const* w1s, const bf16* const* w3s,
                        const bf16* const* w2s, bf16* h, float* y, int n, int k, int n_experts, int hidden, int inter,
                        cudaStream_t stream);

// ---- moe_dispatch.cu ----
// Pairs p = t * k + j of ids (n_pairs) sorted by (expert, p): perm (n_pairs) sorted -> pair,
// inv (n_pairs) pair -> sorted row, offsets (n_experts + 1) start of each expert's rows.
// One block, stable, deterministic. n_experts <= 1024.
void moe_sort_by_expert(const int32_t* ids, int n_pairs, int n_experts, int32_t* perm, int32_t* inv, int32_t* offsets,
                        cudaStream_t stream);
// Serial dispatch's mask select of one expert: its pairs, in order, go to perm[base ..],
// inv is set for them, and their number to *count (device).
void moe_select_expert(const int32_t* ids, int n_pairs, int expert, int base, int32_t* perm, int32_t* inv,
                       int32_t* count, cudaStream_t stream);
// xin (rows, hidden) bf16: row r = x[perm[r] / k] (x (n, hidden) bf16).
void moe_gather_rows(const bf16* x, const int32_t* perm, int k, bf16* xin, int rows, int hidden, cudaStream_t stream);
// Loop combine, one (token, slot) pair p per launch: out[p / k] = fma(weights[p], y[row], out[p / k]),
// row = inv ? inv[p] : p. y (rows, hidden) fp32; out (n, hidden) fp32.
void moe_combine_pair(const float* y, const int32_t* inv, const float* weights, int p, int k, float* out, int hidden,
                      cudaStream_t stream);
// All pairs in one launch: out[t] += sum_j weights[t,j] * y[row(t,j)] (fma chain from 0, slot order).
void moe_combine_all(const float* y, const int32_t* inv, const float* weights, int n, int k, float* out, int hidden,
                     cudaStream_t stream);

// ---- sampling.cu ----
// logits (n, vocab) fp32 -> ids (n) = argmax (ties to the lower index); -1 for a row
// holding a NaN or an infinity (no token is made up from non-finite logits).
void argmax(const float* logits, int32_t* ids, int n, int vocab, cudaStream_t stream);
// The same ids from a block per 4096-logit slice of a row, the row's last block reducing
// (argmax takes it where supported for 65536 logits and more; MOEBENCH_ARGMAX_SPLIT=0
// never, =1 for any): 1..8 rows, 4097..524288 logits.
bool argmax_sliced_supported(int n, int vocab);
void argmax_sliced(const float* logits, int32_t* ids, int n, int vocab, cudaStream_t stream);

// ---- synth_fill.cu ----
// dst[i] = bf16(synth::value(key, begin + i, scale, offset)) for i < count: bit-identical
// to moebench::synth_fill on the host. key = synth::tensor_key(seed, synth::name_hash(name)).
void synth_fill_bf16(bf16* dst, uint64_t key, int64_t begin, int64_t count, float scale, float offset,
                     cudaStream_t stream);

// ---- family_ops.cu ----
// What the MoE families beyond Mixtral add to a layer (model/config.h), one launch each.
// q (n, q_dim), k and v (n, kv_dim) fp32 += their bias (bf16): Qwen2-MoE's q/k/v bias.
void add_qkv_bias(float* q, const bf16* bq, float* k, const bf16* bk, float* v, const bf16* bv, int n, int q_dim,
                  int kv_dim, cudaStream_t stream);
// q (q_rows, q_dim) and k (k_rows, k_dim) fp32 RMSNorm'd in place with wq (q_dim) and wk
// (k_dim) bf16, the variance in fp32: per head (rows = tokens x heads, dim = head_dim:
// Qwen3-MoE) or over the whole projection (rows = tokens, dim = q_dim / kv_dim: OLMoE).
// One warp per row, q's and k's rows in one launch.
void qk_rmsnorm(float* q, const bf16* wq, int q_rows, int q_dim, float* k, const bf16* wk, int k_rows, int k_dim,
                float eps, cudaStream_t stream);
// qk_rmsnorm per head (wq, wk of head_dim) and rope_kv_store_paged in one launch, bit for
// bit the two in sequence (Qwen3-MoE), except that k is not written back (only the pool).
void qk_norm_rope_kv_store_paged(float* q, const float* k, const float* v, const bf16* wq, const bf16* wk,
                                 const int32_t* pos, const int32_t* slot, bf16* k_pool, bf16* v_pool, int m,
                                 int n_heads, int n_kv, int head_dim, float theta, float eps, cudaStream_t stream);
// out (n, dim) fp32 += sigmoid(g[i]) * y (n, dim) fp32; g (n) fp32: the shared expert
// behind its sigmoid gate (Qwen2-MoE).
void add_sigmoid_gated(float* out, const float* y, const float* g, int n, int dim, cudaStream_t stream);

}  // namespace moebench::cuda
