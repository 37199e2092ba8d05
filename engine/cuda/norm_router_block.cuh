// norm_router_block.cuh: the fused norm + router of one token in one block of 256 threads,
// for the Mixtral shape (at most 8 experts, hidden a multiple of 256 up to 4096): norm_router's
// one-block launch (norm_router.cu) and the last block of o_proj with the router after it
// (o_proj_router.cu) run the same code, so both give the same h, logits and top-k, bit for
// bit. The gate rows go to registers first (norm_router_gate_rows: warp e's lanes take row
// e's chunks lane + 32 u, u in order), then norm_router_from_regs loads the norm weights and
// the token's x (norm_row_regs: each thread its strided elements, rmsnorm_row's order), takes
// the sum of squares and h from registers (rmsnorm_inv: the same sums), writes h to global
// and shared memory, and dots the gate rows against h there. The many-expert cluster launch
// (norm_router_cluster.cu) norms through norm_row_regs too; the quantised gate/up launch
// with the router inside it (quant_gemv_rows.cu) runs norm_router_in_block, the same sums
// with each gate chunk loaded as its dot needs it. .cu only.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "engine/cuda/common.cuh"
#include "engine/cuda/rmsnorm_row.cuh"
#include "engine/cuda/router_topk.cuh"

namespace moebench::cuda {

constexpr int kNormRouterThreads = 256;  // rmsnorm()'s block, so the norm's sums are ordered alike
constexpr int kNormRouterWarps = kNormRouterThreads / 32;
constexpr int kNormRouterRegsPer = 16;  // x elements per thread and gate chunks per lane
constexpr int kNormRouterRegsMaxHidden = kNormRouterThreads * kNormRouterRegsPer;

// The shapes the register path takes.
__host__ __device__ constexpr bool norm_router_regs_shape(int hidden, int n_experts) {
  return n_experts >= 1 && n_experts <= kNormRouterWarps && hidden > 0 && hidden % kNormRouterThreads == 0 &&
         hidden <= kNormRouterRegsMaxHidden;
}

// Warp-wide: the logit of token i and expert e from the lanes' partial sums, kept in
// s_logits and written out (logits given) by lane 0.
__device__ __forceinline__ void put_logit(float acc, int i, int e, int n_experts, float* s_logits,
                                          float* __restrict__ logits) {
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) {
    s_logits[e] = acc;
    if (logits) logits[static_cast<int64_t>(i) * n_experts + e] = acc;
  }
}

// Block-wide (Sync's threads), after the logits: (ids given) warp 0's softmax top-k of token i.
template <typename Sync = BlockSync>
__device__ __forceinline__ void topk_of_block(const float* s_logits, int i, int n_experts, int k,
                                              int32_t* __restrict__ ids, float* __restrict__ weights,
                                              bool renormalise) {
  if (!ids) return;  // block-uniform
  Sync::sync();
  if (threadIdx.x < 32)
    router_topk_warp(s_logits, n_experts, k, ids + static_cast<int64_t>(i) * k, weights + static_cast<int64_t>(i) * k,
                     renormalise);
}

// This warp's gate row (warp < n_experts) into registers.
__device__ __forceinline__ void norm_router_gate_rows(const __nv_bfloat16* __restrict__ gate, int hidden, int n_experts,
                                                      bf16x8 (&gw)[kNormRouterRegsPer]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int per = hidden / kNormRouterThreads;  // also the gate chunks per lane: hidden / 8 / 32
  if (warp >= n_experts) return;
  const __nv_bfloat16* g = gate + static_cast<int64_t>(warp) * hidden;
#pragma unroll
  for (int u = 0; u < kNormRouterRegsPer; ++u)
    if (u < per) gw[u] = load8_stream(g + 8 * (lane + 32 * u));
}

// This thread's norm weights: element threadIdx.x + kThreads u for u < per.
template <int kThreads, int kPer>
__device__ __forceinline__ void norm_weights_regs(const __nv_bfloat16* __restrict__ norm_w, int per,
                                                  __nv_bfloat16 (&nw)[kPer]) {
#pragma unroll
  for (int u = 0; u < kPer; ++u)
    if (u < per) nw[u] = norm_w[threadIdx.x + kThreads * u];
}

// Block-wide: one token's row xi normed from registers. Each thread loads its elements
// threadIdx.x + kThreads u (u < per = hidden / kThreads: rmsnorm_row's order), takes its sum
// of squares and 1 / rms by rmsnorm_inv (the same sums), and writes (x * inv) * w rounded to
// bf16 into s_h and, where hi is given (block-uniform), into hi; no barrier after. nw: the
// norm weights (norm_weights_regs), loaded when the caller chose (before a programmatic
// wait, or not). kFresh: x was written by other blocks of the running kernel (loads from L2,
// past this SM's L1).
template <int kThreads, bool kFresh, typename Sync = BlockSync, int kPer>
__device__ __forceinline__ void norm_row_regs(const float* __restrict__ xi, const __nv_bfloat16 (&nw)[kPer], int per,
                                              int hidden, float eps, __nv_bfloat16* s_h,
                                              __nv_bfloat16* __restrict__ hi) {
  float xv[kPer];
#pragma unroll
  for (int u = 0; u < kPer; ++u)
    if (u < per) {
      const int d = threadIdx.x + kThreads * u;
      xv[u] = kFresh ? __ldcg(xi + d) : xi[d];
    }
  float ss = 0;
#pragma unroll
  for (int u = 0; u < kPer; ++u)
    if (u < per) ss = fmaf(xv[u], xv[u], ss);
  const float inv = rmsnorm_inv<kThreads, Sync>(ss, hidden, eps);
#pragma unroll
  for (int u = 0; u < kPer; ++u)
    if (u < per) {
      const int d = threadIdx.x + kThreads * u;
      const __nv_bfloat16 o = __float2bfloat16_rn((xv[u] * inv) * __bfloat162float(nw[u]));
      s_h[d] = o;
      if (hi) hi[d] = o;
    }
}

// Token i: h, its logits and (ids given) its top-k from the gate rows in gw. kFresh: x was
// written by other blocks of the running kernel (loads from L2, past this SM's L1).
template <bool kFresh>
__device__ __forceinline__ void norm_router_from_regs(const float* __restrict__ x, const __nv_bfloat16* __restrict__ norm_w,
                                                      float eps, const bf16x8 (&gw)[kNormRouterRegsPer],
                                                      __nv_bfloat16* __restrict__ h, float* __restrict__ logits,
                                                      int32_t* __restrict__ ids, float* __restrict__ weights, int i,
                                                      int hidden, int n_experts, int k, bool renormalise) {
  __shared__ __align__(16) __nv_bfloat16 s_h[kNormRouterRegsMaxHidden];
  __shared__ float s_logits[kNormRouterWarps];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int per = hidden / kNormRouterThreads;
  __nv_bfloat16 wv[kNormRouterRegsPer];
  norm_weights_regs<kNormRouterThreads>(norm_w, per, wv);
  norm_row_regs<kNormRouterThreads, kFresh>(x + static_cast<int64_t>(i) * hidden, wv, per, hidden, eps, s_h,
                                            h + static_cast<int64_t>(i) * hidden);
  __syncthreads();
  if (warp < n_experts) {
    float acc = 0;
#pragma unroll
    for (int u = 0; u < kNormRouterRegsPer; ++u)
      if (u < per) acc = router_chunk_dot(gw[u], load8(s_h + 8 * (lane + 32 * u)), acc);
    put_logit(acc, i, warp, n_experts, s_logits, logits);
  }
  topk_of_block(s_logits, i, n_experts, k, ids, weights, renormalise);
}

// Before a programmatic wait: this warp's gate row (warp < n_experts) and this thread's
// norm weights asked of L1 (they were written before the previous kernel began), for
// norm_router_in_block after the wait.
__device__ __forceinline__ void norm_router_prefetch_l1(const __nv_bfloat16* __restrict__ norm_w,
                                                        const __nv_bfloat16* __restrict__ gate, int hidden,
                                                        int n_experts) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int per = hidden / kNormRouterThreads;
  if (warp < n_experts) {
    const __nv_bfloat16* g = gate + static_cast<int64_t>(warp) * hidden;
    for (int u = lane & 7; u < per; u += 8)  // 8 lanes' 16-byte chunks share a 128-byte line
      asm volatile("prefetch.global.L1 [%0];" ::"l"(g + 8 * ((lane & ~7) + 32 * u)));
  }
  for (int d = 64 * threadIdx.x; d < hidden; d += 64 * kNormRouterThreads)
    asm volatile("prefetch.global.L1 [%0];" ::"l"(norm_w + d));
}

// Block-wide (kNormRouterThreads threads), one token: norm_router_from_regs's h, logits and
// top-k (kFresh: x read past L1) with each gate chunk loaded as its dot needs it (the same
// chunks in the same order: the same bits), kept in this block's shared memory: h in s_h,
// the logits in s_logits, the top-k in s_ids / s_w. Every block of a launch may run it;
// the one with `out` also writes h, logits, ids and weights to global memory. Ends with a
// barrier. Sync: the barrier of its kNormRouterThreads threads (the first of a larger block
// take it with NamedSync; the rest must not call it).
template <bool kFresh, typename Sync = BlockSync>
__device__ __forceinline__ void norm_router_in_block(
    const float* __restrict__ x, const __nv_bfloat16* __restrict__ norm_w, float eps,
    const __nv_bfloat16* __restrict__ gate, int hidden, int n_experts, int k, bool renormalise, __nv_bfloat16* s_h,
    float* s_logits, int32_t* s_ids, float* s_w, bool out, __nv_bfloat16* __restrict__ h, float* __restrict__ logits,
    int32_t* __restrict__ ids, float* __restrict__ weights) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int per = hidden / kNormRouterThreads;
  __nv_bfloat16 wv[kNormRouterRegsPer];
  norm_weights_regs<kNormRouterThreads>(norm_w, per, wv);
  norm_row_regs<kNormRouterThreads, kFresh, Sync>(x, wv, per, hidden, eps, s_h, out ? h : nullptr);
  Sync::sync();
  if (warp < n_experts) {
    const __nv_bfloat16* g = gate + static_cast<int64_t>(warp) * hidden;
    float acc = 0;
#pragma unroll 8
    for (int u = 0; u < kNormRouterRegsPer; ++u)
      if (u < per) acc = router_chunk_dot(load8(g + 8 * (lane + 32 * u)), load8(s_h + 8 * (lane + 32 * u)), acc);
    put_logit(acc, 0, warp, n_experts, s_logits, out ? logits : nullptr);
  }
  topk_of_block<Sync>(s_logits, 0, n_experts, k, s_ids, s_w, renormalise);
  Sync::sync();
  if (out && static_cast<int>(threadIdx.x) < k) {
    ids[threadIdx.x] = s_ids[threadIdx.x];
    weights[threadIdx.x] = s_w[threadIdx.x];
  }
}

}  // namespace moebench::cuda
