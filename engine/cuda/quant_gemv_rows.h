// quant_gemv_rows.h: the warp-row kernels of quantised decode, a second design of the
// dequantising GEMV beside the tile kernels of quant_gemv.cu, for few tokens an expert
// (batch-1 decode: every used expert has one pair). A warp owns two whole weight rows
// and reads each row 512 contiguous bytes per load instruction (lane i: 16-byte chunk i),
// four such batches of both rows in flight before the first use; blocks stay resident
// and walk their work items. The codes go through the same tensor-core step as the tile
// kernels, with the 8 pair columns of the mma used for 8 segments of the row: lanes of
// row group g feed segment g's activations as column g, so the diagonal of the 16 x 8
// result holds each segment's sum (one int4 group / fp8 block part / int8 super-step,
// scaled by its own scale), and 4 shuffles add the 8 segments. Exact products, fp32
// sums per scale group, as the tile kernels: the same bound against the CPU reference,
// another order of additions. Selected by the inner-loop variants kQuantVariantRows ..
// + 6 (MOEBENCH_QUANT_VARIANT=32 .. 38, QuantGemvShape::var), which differ only in the
// launch shape (loads in flight a warp, warps an SM, the next group's loads issued
// before the current one's products: quant_gemv_rows.cu); quant_gemv.cu dispatches.
// Includable from host C++.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/cuda/quant_gemv.h"

namespace moebench::cuda {

inline constexpr int kQuantVariantRows = 32;
inline constexpr int kQuantRowsShapes = 7;  // variants kQuantVariantRows .. + 6
constexpr bool is_rows_variant(int var) { return var >= kQuantVariantRows && var < kQuantVariantRows + kQuantRowsShapes; }

// The exact warp kernels (variants kQuantVariantExact .. + 2; the functions below take them
// too): a warp owns two whole rows as above, but computes the tile kernel's sums bit for bit
// where the tile kernel runs its default shape (4 warps a block, the format's depth, one
// tile: Mixtral's w1, w3 and w2): per row the tile's four warps' chains of scaled
// super-step sums, each super-step's mma chain laid out as the tile's, the chains added in
// warp order; the down + combine adds the slots as the tile kernel does. 40: depth 2 at 32
// warps an SM, 41: depth 4 at 16, 42: depth 2 pipelined at 24; two row pairs a warp (one
// activation load for both, two independent mma chains): 43 depth 2 at 24, 44 depth 2 at 16;
// 45 depth 2 at 32 with contiguous batches (512 bytes of a row a load instruction, each
// chain's four sums of a batch gathered by shuffles).
inline constexpr int kQuantVariantExact = 40;
inline constexpr int kQuantExactShapes = 6;
constexpr bool is_exact_variant(int var) {
  return var >= kQuantVariantExact && var < kQuantVariantExact + kQuantExactShapes;
}
constexpr bool is_warp_variant(int var) { return is_rows_variant(var) || is_exact_variant(var); }

// The exact kernels' fp16 form (MOEBENCH_QUANT_HALF, read once; a value outside the list is
// an error naming it): 1 (the default) for the GEMV and the fused gate/up, 2 for the down +
// combine too, 0 never. Each block stages its activation rows into shared memory as fp16,
// each row scaled by a power of two, and takes the codes as fp16 (fewer instructions a
// code than bf16 for every format); the same bits as the bf16 form while every activation
// of a row is at least 2^-31 of its largest. The down + combine's rows (14336 inputs a
// pair for Mixtral) cost more to stage than the form saves, hence not by default.
int quant_half_form();

// The exact kernels' plain loop (MOEBENCH_QUANT_PLAIN, read once): 1 (the default) where a
// launch's rows fill whole batches (every Mixtral shape) and int4 has no zero points, the
// loop compiled without the row-end conditions and with the zero point 8 as a constant;
// 0 the general loop everywhere. The same bits.
bool quant_plain_loop();

// Which items the exact GEMV and gate/up warps take first (MOEBENCH_QUANT_WARP_ORDER, read
// once; the same bits every way). Items are dealt round-robin over the launch's warps, so
// when they do not divide evenly the first warps take one more. Block-major (warp w of
// block b first takes item b x 8 + w) gives those extra items to the first blocks, i.e.
// whole SMs; warp-major (item w x blocks + b) spreads them over every SM. 1 (the default):
// warp-major for int4, block-major for int8 and fp8 (the faster of the two for each in the
// microbenchmarks); 0: block-major everywhere; 2: warp-major everywhere.
int quant_warp_order();

// quant_moe_gemv's product (out[p, :] = W[ids[p]] . x_p, fp32) or, out_h non-null, the
// fused gate/up (N = 2 inter rows [w1; w3], h[p, r] = bf16(silu(g) * u)), one work item
// per (pair, row pair): pairs sharing an expert read its rows once each.
void quant_rows_gemv(const QuantExperts& w, const __nv_bfloat16* x, bool x_per_pair, const int32_t* ids, int n_pairs,
                     int k, int N, int K, float* out, __nv_bfloat16* out_h, int var, cudaStream_t stream);

// quant_moe_down_combine's product: out[t, :] += sum over j < k, in order, of
// weights[t k + j] * (W[ids[t k + j]] . h[t k + j]). A block owns two output rows of one
// token at a time: its 8 warps are k slots x 8 / k parts of the row length, the parts
// added in order through shared memory. k must divide 8 (quant_rows_down_combine_takes).
void quant_rows_down_combine(const QuantExperts& w, const __nv_bfloat16* h, const int32_t* ids,
                             const float* weights, int n_pairs, int k, int N, int K, float* out, bool ids_early,
                             int var, cudaStream_t stream);
bool quant_rows_down_combine_takes(int k);
// One token's fused gate/up with the MoE block's norm + router inside the launch
// (quant_gemv.h quant_moe_gemv_gate_up_router): whether exact variant var is compiled for
// it at this format, hidden K, expert count and top-k (the gate/up defaults 40 and 44, the
// fp16 form, norm_router's register shapes), and the launch.
bool quant_rows_gate_up_router_takes(int var, const QuantExperts& w, int k, int K, int n_experts);
void quant_rows_gate_up_router(const QuantExperts& w, const GateUpRouter& r, int k, int N, int K,
                               __nv_bfloat16* out_h, int var, cudaStream_t stream);

// The persistent MoE launch's shapes (MOEBENCH_QUANT_MOE_PERSISTENT_SHAPES, read on first use; the
// same bits every way): 1 (the default) runs int4 in shape 44, the default of both its
// launches, in blocks of 2 x 8 warps (128 registers a thread), and fp8 and int8 in shape 40
// in blocks of 4 x 8 warps (64 registers); 0 runs shape 40 for int4 too. (int8's own
// launches run 40 and 44; both phases in 2 x 8-warp blocks measured slower than shape 40 in
// 4 x 8, docs/QUANT.md.) set_: that value from now on (-1: the environment's again), for
// tests.
int quant_moe_persistent_shapes();
void set_quant_moe_persistent_shapes(int v);

// The one-token quantised MoE block as one persistent launch (quant_gemv.h
// quant_moe_block_persistent): one block an SM of 4 x 8 or 2 x 8 warps
// (quant_moe_persistent_shapes), each 8 warps taking the items of a block of the exact
// kernels' launch in shape 40 or 44; the gate/up (fp16 form) into h, a grid barrier,
// then the down + combine (bf16 form) into out; with a router, block 0 runs the norm + router
// first (its outputs in router->h, logits, ids, weights) and the other blocks wait for it at
// a grid barrier, or with router_every_block every block runs it for itself (block 0
// writing the outputs) and none waits. counter: a device word, 0 before the first launch (each launch leaves it
// 0); launches that share it must not run at the same time. _takes: whether the shape is
// compiled (fp8, int8 or paired int4 on both matrices, top-k dividing 8, rows of whole
// plain-loop batches, the fp16 form for the gate/up only, norm_router's shapes).
bool quant_rows_moe_persistent_takes(const QuantExperts& gu, const QuantExperts& dn, int k, int inter, int H,
                                     int n_experts, bool router);
void quant_rows_moe_persistent(const QuantExperts& gu, const QuantExperts& dn, const GateUpRouter* router,
                               const __nv_bfloat16* x, const int32_t* ids, const float* weights, int k, int inter,
                               int H, __nv_bfloat16* h, float* out, unsigned long long* counter,
                               bool router_every_block, cudaStream_t stream);

}  // namespace moebench::cuda
