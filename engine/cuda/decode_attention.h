// decode_attention.h: causal GQA attention for decode rows (one new token per sequence)
// over a paged KV cache, laid out for short key ranges: the same inputs, outputs and
// workspace as paged_attention (engine/cuda/ops.cuh), a different split of the work.
//
// paged_attention gives each warp whole 32-key tiles (lane j scores key j), so a decode
// step at a few hundred keys keeps one or two warps busy per KV head, each walking its
// tile's keys one after another. Here a warp's lanes split head_dim instead (head_dim / 32
// contiguous dims per lane, one coalesced load per key row) and a warp takes 8 keys at a
// time, their key and value rows loaded together before any is used; the block's 8 warps
// interleave over the keys, so a block covers 64 keys per round trip to memory. The key
// split (flash-decoding) is decided on the device from the position: a token attending
// len keys uses min(n_splits, ceil(len / 64)) blocks, the rest of the grid returns at
// once; with one split used the block writes the output itself, else a second kernel
// merges the used splits in split order (with one head per block, the last of a head's
// splits to finish merges them itself, the same arithmetic, and no second kernel is
// launched). Deterministic for a given position; launches
// independent of the positions (CUDA-graph safe). Host C++ declarations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace moebench::cuda {

// Where this host thread's decode attention launches let the next launch's blocks start
// (programmatic launch, pdl.h), for the scope of an AttentionHandoff: 0 (outside any) after
// their wait, as every kernel; 1 the split merge launch right at its start; 2 the attention
// launch too. Only for a next launch whose blocks read nothing but weights before their own
// wait (gemv_staged.h): its blocks then start, and stage their weights, during attention.
class AttentionHandoff {
 public:
  explicit AttentionHandoff(int level);
  ~AttentionHandoff();
  AttentionHandoff(const AttentionHandoff&) = delete;
  AttentionHandoff& operator=(const AttentionHandoff&) = delete;

 private:
  int prev_;
};

// Whether decode_attention takes these shapes: head_dim 32, 64 or 128, at most 8 query
// heads per KV head, the pools aligned to head_dim / 32 bf16.
bool decode_attention_supported(int n_heads, int n_kv, int head_dim, const void* k_pool, const void* v_pool);

// Whether a token attending `keys` keys takes one block per KV head (no key split, no
// merge kernel): a caller that knows the key count may then pass a null workspace and
// get the same bits as with one.
bool decode_attention_one_split(int keys);

// Query heads one block takes: the whole group of a KV head (the key and value rows are
// read once per group), except for groups of 8 or more heads (Qwen3-30B-A3B: 32 query
// heads over 4 KV heads), whose blocks take one head each: a batch-1 step then runs
// n_heads blocks per key split instead of n_kv, each with an eighth of the dot products
// per key (the rows come again from L2). The same arithmetic per head, in a different
// key order per warp than the whole-group launch (its K keys per warp per round).
// MOEBENCH_ATTN_HEADS_PER_BLOCK asks for another count (1, 2, 4) where it divides the
// group; groups of up to 4 then give the same bits (8 keys a warp a round either way). One
// head a block for Mixtral's batch-1 step was measured slower (docs/PERFORMANCE.md,
// session 28).
int decode_attention_heads_per_block(int n_heads, int n_kv);

// As paged_attention (same arguments; `workspace` holds
// paged_attention_workspace_floats(m, n_heads, n_kv, head_dim, table_width * block_size)
// floats, or is null: no key split). Fails for shapes decode_attention_supported refuses.
void decode_attention(const float* q, const __nv_bfloat16* k_pool, const __nv_bfloat16* v_pool,
                      const int32_t* block_tables, int table_width, const int32_t* seq_row, const int32_t* pos,
                      __nv_bfloat16* out, int m, int n_heads, int n_kv, int head_dim, int block_size, float* workspace,
                      cudaStream_t stream);

// decode_attention with a per-head q/k RMSNorm and RoPE folded in (Qwen3-MoE), for the
// shapes that take one query head per block: q, k, v are the new token's fp32 projections
// (q and k neither normed nor rotated); each block norms and rotates its query head, takes
// the new key (normed, rotated) and value as bf16 from the projections rather than the
// pool, and the first block of each KV head stores them into the pool at the row the block
// table gives the token's position. Bit for bit qk_norm_rope_kv_store_paged (ops.cuh, the
// slot being that row) followed by decode_attention, in one launch instead of two.
bool decode_attention_qk_norm_supported(int n_heads, int n_kv, int head_dim, const void* k_pool, const void* v_pool);
void decode_attention_qk_norm(const float* q, const float* k, const float* v, const __nv_bfloat16* q_norm,
                              const __nv_bfloat16* k_norm, float theta, float eps, __nv_bfloat16* k_pool,
                              __nv_bfloat16* v_pool, const int32_t* block_tables, int table_width,
                              const int32_t* seq_row, const int32_t* pos, __nv_bfloat16* out, int m, int n_heads,
                              int n_kv, int head_dim, int block_size, float* workspace, cudaStream_t stream);

// decode_attention with the new token's RoPE and KV store in its launch (rope; models
// without q/k bias or norm) and/or its key splits merged by the last split of each block
// of heads to finish (merge_in_last_split: a head per warp, no merge launch). With rope,
// q, k, v are the new token's fp32 projections, q and k not rotated; each block rotates
// its query heads, takes the new key (rotated) and value as bf16 from the projections
// rather than the pool, and the first block of each KV head stores them into the pool at
// the row the block table gives the token's position. Bit for bit rope_kv_store_paged
// (ops.cuh, the slot being that row) followed by decode_attention; without rope, k and v
// are not read and q must be rotated already. decode_attention itself merges in the last
// split when MOEBENCH_ATTN_MERGE_HERE=1 (launch_env.h).
void decode_attention_folded(const float* q, const float* k, const float* v, float theta, __nv_bfloat16* k_pool,
                             __nv_bfloat16* v_pool, const int32_t* block_tables, int table_width,
                             const int32_t* seq_row, const int32_t* pos, __nv_bfloat16* out, int m, int n_heads,
                             int n_kv, int head_dim, int block_size, float* workspace, bool rope,
                             bool merge_in_last_split, cudaStream_t stream);

}  // namespace moebench::cuda
