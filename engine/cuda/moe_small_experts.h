// moe_small_experts.h: the decode MoE of one token over many small experts (Qwen3-30B-A3B:
// 128 experts of 768 rows, top-8; OLMoE: 64 of 1024, top-8) in two launches, the same
// result bit for bit as moe_decode_fused (ops.cuh) at one token. The fused kernels give a
// block to one (row block, used expert) and gather the pairs that chose it; with 8 experts
// of a few hundred rows that is many short blocks, each paying the bookkeeping and two
// dependent trips to memory before its first weight load, and a down projection whose
// warps stream one 1.5 KB row at a time. Here, at one token (the k pairs are the k slots):
//   gate/up: the k slots' rows are one flat list, each warp R consecutive rows of one slot
//     (w1 and w3 together, as the fused kernel's warp does), the expert table in shared
//     memory before the wait on the router;
//   down: a warp per output row over all k slots, G slots' rows in flight at once, the
//     first G issued before the wait on gate/up (weights only: they overlap its tail),
//     then the routing-weighted sum in slot order added to out.
// Each dot product keeps the fused kernels' lane order, and the combine theirs (fmaf from
// 0 in slot order, then out + total), so every launch shape gives the same bits as they
// do. Host C++ declarations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

namespace moebench::cuda {

// A launch shape: gate/up rows per warp and warps per block (depth: 16-byte chunks of a
// row in flight per lane); down slots in flight per warp and warps per block.
struct SmallExpertShape {
  int gu_rows = 4, gu_depth = 2, gu_warps = 8;
  int down_slots = 4, down_warps = 8;
};
// The compiled shapes (benchmarks and tests run every one); the first is the default.
const std::vector<SmallExpertShape>& small_expert_shapes();
// The shape the model runs: the gate/up half from MOEBENCH_SMALL_GATE_UP_SHAPE (0..4, an
// index into the compiled gate/up shapes in the order small_expert_shapes() goes through
// them), the down half from MOEBENCH_SMALL_DOWN_SHAPE (0..3); unset: 0, the default.
SmallExpertShape small_expert_shape_from_env();
// The down launch lets the next kernel's blocks start only as its warps finish their sums
// (MOEBENCH_SMALL_DOWN_TRIGGER=0: right after its wait on gate/up, as before).
// MOEBENCH_SMALL_EXPERTS=0 keeps the fused kernels (to measure one build both ways); 1 or
// unset: the model takes these kernels where small_experts_supported says so.
bool small_experts_enabled();

// One token, 32 <= n_experts <= 256, k <= 8 slots (a top-k's distinct experts), hidden and inter
// multiples of 8, inter a multiple of every compiled rows-per-warp (4), x/h 16-byte aligned.
bool small_experts_supported(int n, int k, int n_experts, int hidden, int inter);

// x (hidden) bf16, ids/weights (k), tables of n_experts pointers (w1, w3: inter x hidden;
// w2: hidden x inter), h scratch (k x inter bf16), out (hidden) fp32 += the routed sum.
void moe_decode_small(const __nv_bfloat16* x, const int32_t* ids, const float* weights,
                      const __nv_bfloat16* const* w1s, const __nv_bfloat16* const* w3s,
                      const __nv_bfloat16* const* w2s, __nv_bfloat16* h, float* out, int k, int n_experts, int hidden,
                      int inter, cudaStream_t stream, SmallExpertShape shape);
// The same in one launch (the default shapes of both halves): each block takes its tile as
// it starts (gate/up tiles first), gate/up warps count their rows done per slot, and a down
// warp waits only for the slots of its group of G, after issuing that group's first w2
// loads, instead of for the whole gate/up launch. The same bits as the two launches.
void moe_decode_small_one(const __nv_bfloat16* x, const int32_t* ids, const float* weights,
                          const __nv_bfloat16* const* w1s, const __nv_bfloat16* const* w3s,
                          const __nv_bfloat16* const* w2s, __nv_bfloat16* h, float* out, int k, int n_experts,
                          int hidden, int inter, cudaStream_t stream);
// MOEBENCH_SMALL_ONE_LAUNCH=1: the model's moe_decode_small (the environment's overload
// below) runs moe_decode_small_one, its down warps spinning on the slot counters; =2 the same
// polling every 200 ns; =3 spinning, gate/up warps of 2 rows (twice the tiles); =4 as 1, the
// next kernel let start only once every gate/up row is done; 0 or unset: the two launches.
bool small_one_launch_enabled();
// The same with the environment's shape (or in one launch where small_one_launch_enabled).
void moe_decode_small(const __nv_bfloat16* x, const int32_t* ids, const float* weights,
                      const __nv_bfloat16* const* w1s, const __nv_bfloat16* const* w3s,
                      const __nv_bfloat16* const* w2s, __nv_bfloat16* h, float* out, int k, int n_experts, int hidden,
                      int inter, cudaStream_t stream);

}  // namespace moebench::cuda
