// quant_gemv.h: the dequantising GEMV of decode over the selected experts, for expert
// matrices stored in a quantised format (engine/quant.h: fp8 128x128 blocks, int8 per
// row, int4 groups of 128 with optional zero points). Weights are read once, 16 bytes
// per load; each code becomes, exactly, the bf16 number it stands for (int8 q, int4
// q - zero, the fp8 value), the tensor cores multiply codes and bf16 activations exactly
// and sum in fp32, and each scale group's sum is multiplied by its fp32 scale: what
// quant.cpp's dequantize() (code x scale) and an fp32 dot product give, up to fp32
// rounding in another order. Includable from host C++.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/quant.h"

namespace moebench::cuda {

// One layer's expert matrices of one kind (w1, w3 or w2) on the device: per expert e,
// q[e], scale[e] and (int4 with zero points only) zero[e] point at the parts as
// quant_parts() lays them out. The arrays themselves are device memory.
struct QuantExperts {
  QuantFormat format = QuantFormat::int8;
  const uint8_t* const* q = nullptr;
  const uint8_t* const* scale = nullptr;
  const uint8_t* const* zero = nullptr;  // null: symmetric
  // int4: the codes in the paired word order (quant_dequant.h int4_pair_words) instead of
  // as stored; the kernels run the plain or the staged loop (variant 0 or 8) on them.
  bool int4_paired = false;
  // Entries of q, scale and zero (0: not given). The exact gate/up launch copies a table of
  // at most 64 experts into shared memory before it waits for the router, so that only the
  // ids are read after the wait.
  int n_experts = 0;
};

// For every pair p < n_pairs (a token's slot: ids is (n_tokens, k) flat):
//   out[p, :] (N, fp32) = W[ids[p]] (N x K) . x_p,
//   x_p = x + K * (x_per_pair ? p : p / k)  (bf16: the token's hidden state, or the pair's
//   own input such as the SwiGLU product before w2).
// One launch: (row tiles, min(n_pairs, n_experts) used-expert slots); the blocks of
// slot y take the y-th distinct expert of ids and gather the pairs that chose it (slots
// past the experts used exit before reading weights). n_pairs <= 64; the rows must
// be 16-byte multiples (K % 16 == 0, int4: K % 32 == 0), else Error.
void quant_moe_gemv(const QuantExperts& w, const __nv_bfloat16* x, bool x_per_pair, const int32_t* ids, int n_pairs,
                    int k, int N, int K, int n_experts, float* out, cudaStream_t stream);

// The same product with the launch shape given: warps per block splitting the row (2, 4, 8
// or 16); depth, the super-steps of 4 chunks whose weight loads a warp issues together (2,
// 4 or 8 for the quantised formats); tiles, the 16-row tiles a block takes (1, or 2 at depth 4
// for the quantised formats: twice the rows for each activation load). 0 takes the
// default (warps by the number of tiles, depth 4, one tile). The shape changes which warp
// sums which super-steps: the fp32 rounding order, not the result's accuracy. For the
// benchmarks' side-by-side variants.
// pipe 1: the pipelined kernel instead (blocks resident across the row tiles of their
// expert, each warp's next loads issued before it computes the current ones; 4 or 8
// warps, depth 2 or the format's depth, one tile; its sums are those of the plain kernel
// of the same warps and depth). Measured on an H200 at Mixtral's shapes, batch 1, it is
// slower than the plain kernel (int4 w1 40.4 against 35.1 us, w2 38.5 against 35.6;
// int8 / fp8 w2 52-54 against 46): the model runs the plain kernel
// (kDefaultQuantGemvShape), the pipelined one stays for the benchmarks' comparison.
// pf (plain kernel): how many passes (one batch of every warp of a block) ahead the block
// asks L2 for its weights (0: no prefetch; -1: the default, MOEBENCH_QUANT_PREFETCH =
// 0, 1, 2 or 4, unset kDefaultQuantPrefetch). Prefetching changes no result.
// seq (plain kernel): tiles a block takes one after the other (0 or 1: one; the default).
// Off by default: measured on an H200 (Mixtral shapes, batch 1), every window made every
// format's launches slower (int4 fused gate/up 59.7 us without, 65.2-65.7 with; int8
// 78.9 against 88.6-96.1; int4 down/combine 34.8 against 35.9-40.3).
inline constexpr int kDefaultQuantPrefetch = 0;
// var (plain kernel at the format's depth, one tile, 4 or 16 warps; and the down/combine
// kernel): the inner loop's variant, a sum of the bits 1, 2, 4 (0 .. 7) or 8 with 0, 2 or
// 3 (-1: the default, MOEBENCH_QUANT_VARIANT = 0 .. 7, 8, 10, 11, unset the launch's
// default below). 1 (early scales): a
// batch's scale words are loaded with its weight chunks, before any product; 2
// (interleaved): the mma steps of a batch's super-steps run side by side, super-step u's
// step s beside u + 1's (int8: 4 super-steps, int4 and fp8: 2), so that several
// independent mma chains are in flight instead of one chain of kValues / 4 dependent mma
// per super-step; 4 (double-buffered): two batches in registers, the next one's loads
// issued before the current one's products (12 warps an SM instead of 16); 8 (staged,
// compiled as 8, 10 and 11): the batches go through a ring of 3 in shared memory
// (cp.async), two in flight while one is computed, across tiles (resident blocks taking
// several tiles) and the down/combine's experts. None changes a sum's bits. 32 .. 38: the
// warp-row kernels instead (quant_gemv_rows.h; another order of additions, the same
// bound). Defaults (measured on an H200, quant_gemv.cu's default_variant): the plain
// GEMV kDefaultQuantVariant (the plain loop); the fused gate/up interleaved for fp8; the
// down/combine interleaved for fp8, with early scales too for int8; int4 the plain loop.
inline constexpr int kDefaultQuantVariant = 0;
// 40 .. 45: the exact warp kernels (quant_gemv_rows.h): the tile kernel's sums bit for bit
// where it runs 4 warps at the format's depth, one tile. A one-token launch there takes
// kDefaultQuantExact at fp8, 44 for the int8 and int4 down + combine; with the exact
// kernels' fp16 form (quant_half_form, the default) 40 for the int8 and 44 for the paired
// int4 gate/up too; elsewhere the tile kernel (quant_gemv.cu exact_default;
// MOEBENCH_QUANT_EXACT = 0, 40 .. 45 overrides, 0: the tile kernel).
inline constexpr int kDefaultQuantExact = 40;
// Tiles a block takes in the launches over the selected experts whose pairs average two
// or more an expert (a batched decode step), where the shape leaves it (tiles 0) and
// MOEBENCH_QUANT_BATCH_TILES is unset: 1 or 2 (quant_gemv.cu batch_tiles). One: two tiles
// gave the same bits and ran slower in the model (docs/QUANT.md, session 51).
inline constexpr int kDefaultQuantBatchTiles = 1;
struct QuantGemvShape {
  int warps = 0, depth = 0, tiles = 0, pipe = 0, pf = -1, seq = 0, var = -1;
};
inline constexpr QuantGemvShape kDefaultQuantGemvShape{};
inline constexpr QuantGemvShape kPipelinedQuantGemvShape{0, 0, 0, 1};
void quant_moe_gemv_shaped(const QuantExperts& w, const __nv_bfloat16* x, bool x_per_pair, const int32_t* ids,
                           int n_pairs, int k, int N, int K, int n_experts, float* out, QuantGemvShape shape,
                           cudaStream_t stream);

// One quantised matrix (a weight_dtype attention projection) times n <= 8 activation
// rows: y (n, out) fp32 = x (n, in) bf16 . W^T [+ y if accumulate], W (out x in) in
// format f = int8 (per-row f32 scales) or fp8 (f32 scales per 128x128 block), q and
// scale as quant_parts() lays them out. The plain kernel's tile with the rows as the
// pairs of one expert: the same exact dequantisation and fp32 sums per scale group.
// in % 16 == 0 and 16-byte aligned x and q, else Error.
void quant_gemv(QuantFormat f, const uint8_t* q, const uint8_t* scale, const __nv_bfloat16* x, int n, int in, int out,
                float* y, bool accumulate, cudaStream_t stream);

// Gate and up projections fused with the SwiGLU product (gate_up.h's layout: w holds, per
// expert, w1 as rows 0 .. inter-1 and w3 as rows inter .. 2 inter-1 of one matrix): for
// every pair p, h[p, :] (bf16, inter) = silu(g) * u with g, u the two halves of
// W[ids[p]] . x_token (x per token). The same g and u, bit for bit, as quant_moe_gemv_shaped
// of that shape over the 2 x inter rows, and the same h as silu_mul_gate_up on them: one
// launch and no fp32 g, u round trip. Two kernels: the plain one (shape.pipe 0, the
// default: a block's 16-row tile holds 8 rows of w1 and the same 8 rows of w3) and the
// pipelined one (shape.pipe 1: two 16-row tiles a block, rows r and inter + r).
void quant_moe_gemv_gate_up(const QuantExperts& w, const __nv_bfloat16* x, const int32_t* ids, int n_pairs, int k,
                            int inter, int K, int n_experts, __nv_bfloat16* h, cudaStream_t stream);
void quant_moe_gemv_gate_up_shaped(const QuantExperts& w, const __nv_bfloat16* x, const int32_t* ids, int n_pairs,
                                   int k, int inter, int K, int n_experts, __nv_bfloat16* h, QuantGemvShape shape,
                                   cudaStream_t stream);

// Down projection and combine for decode, one launch: for every token t (n_pairs / k of
// them), out[t, :] (fp32, N) += sum over j < k, in order, of weights[t k + j] *
// (W[ids[t k + j]] . h[t k + j]) — bit for bit quant_moe_gemv (x per pair, default
// shape) followed by moe_combine_all (no permutation) into out. A block owns 16 output
// rows for every used expert. ids_early: ids were written before the previous kernel on
// the stream began (then a block reads them and asks L2 for its first weights while that
// kernel finishes). pf: the prefetch window, var: the inner-loop variant (-1: the
// defaults, as QuantGemvShape); tiles: 16-row tiles a block owns (0: the default,
// batch_tiles; 1 or 2; two run the plain loop, the same bits).
void quant_moe_down_combine(const QuantExperts& w, const __nv_bfloat16* h, const int32_t* ids, const float* weights,
                            int n_pairs, int k, int N, int K, int n_experts, float* out, bool ids_early,
                            cudaStream_t stream, int pf = -1, int var = -1, int tiles = 0);

// The MoE block's norm + router of one token (norm_router.h's inputs and outputs): x the
// residual (hidden fp32), its norm weight and eps, the gate (n_experts x hidden bf16); out
// h (hidden bf16), the logits (n_experts fp32), the top-k's ids and weights.
struct GateUpRouter {
  const float* x = nullptr;
  const __nv_bfloat16* norm_w = nullptr;
  float eps = 0;
  const __nv_bfloat16* gate = nullptr;
  __nv_bfloat16* h = nullptr;
  float* logits = nullptr;
  int32_t* ids = nullptr;
  float* weights = nullptr;
  int n_experts = 0;
  int renormalise = 1;  // norm_topk_prob
};

// One token: norm_router then quant_moe_gemv_gate_up (k pairs of that token, its top-k) as
// one launch. Every block of the gate/up launch takes the norm + router itself (from L2
// and L1: the residual, the gate rows, the norm weights) instead of waiting for a
// one-block launch before it; block 0 writes h, the logits, ids and weights for the
// launches after it. The same bits as the two launches (the same sums in the same order).
// Only where the one-token gate/up runs an exact kernel of its default shapes in the fp16
// form and the router fits norm_router's one-block shapes (_supported); MOEBENCH_GATEUP_ROUTER
// (launch_env.h) turns it on in the model. The down + combine after it must not read the
// ids before its wait (ids_early false).
bool quant_moe_gemv_gate_up_router_supported(const QuantExperts& w, int k, int inter, int K, int n_experts);
void quant_moe_gemv_gate_up_router(const QuantExperts& w, const GateUpRouter& r, int k, int inter, int K,
                                   __nv_bfloat16* h, cudaStream_t stream);

// One token's quantised MoE block as one persistent launch: the fused gate/up over gu (the
// k pairs of ids, x the normed input) into h, then the down + combine over dn into residual,
// with a grid barrier between them instead of a launch boundary (quant_gemv_rows.h
// quant_rows_moe_persistent: one block an SM). With router non-null the launch runs the
// norm + router first (block 0, the other blocks waiting for it at a grid barrier; with
// router_every_block every block for itself, block 0 writing the outputs; router's h, ids
// and weights are then its own outputs, and x, ids, weights here are not read). The same bits as norm_router (with the router),
// quant_moe_gemv_gate_up and quant_moe_down_combine (ids_early as the model launches it).
// _supported: where those one-token launches run the exact kernels (whose sums every exact
// shape gives alike) and the persistent launch is compiled for the shape.
// MOEBENCH_QUANT_MOE_PERSISTENT (launch_env.h) turns it on in the model (1: without the
// router, 2: the router in block 0, 3: in every block). counter: a device
// word, 0 before the first launch, each launch leaves it 0; not shared by launches that may
// run at the same time.
bool quant_moe_block_persistent_supported(const QuantExperts& gu, const QuantExperts& dn, int k, int inter, int K,
                                          int n_experts, bool router);
void quant_moe_block_persistent(const QuantExperts& gu, const QuantExperts& dn, const GateUpRouter* router,
                                const __nv_bfloat16* x, const int32_t* ids, const float* weights, int k, int inter,
                                int K, int n_experts, __nv_bfloat16* h, float* residual, unsigned long long* counter,
                                cudaStream_t stream, bool router_every_block = false);

// Whether the quantised MoE decode runs the fused kernels (quant_moe_gemv_gate_up and,
// with the fused combine, quant_moe_down_combine) or, with MOEBENCH_QUANT_FUSED=0, the
// GEMV over [w1; w3] + silu_mul_gate_up and the GEMV over w2 + the combine (the same
// bits either way; for measuring one build both ways). Read once.
bool quant_decode_fused_from_env();

}  // namespace moebench::cuda
