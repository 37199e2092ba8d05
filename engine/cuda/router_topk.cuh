// router_topk.cuh: the MoE router's softmax and top-k for one token, taken by one warp
// (router.cu's kernel and the fused norm + router of decode, norm_router.cu, share it):
// softmax in fp32 (max subtracted), k rounds of a warp argmax (ties to the lower expert
// index), weights renormalised over the k chosen in j order (or left as the softmax's
// probabilities: renormalise false, a family's norm_topk_prob). The softmax is a routine of
// its own (router_softmax_warp) for launches that select the k in parallel. .cu only.
#pragma once
#include <cstdint>

#include "engine/cuda/common.cuh"

namespace moebench::cuda {

constexpr int kRouterMaxPerLane = 8;  // 256 experts

// A gate dot product's 8 terms of one 16-byte chunk (gate row g, normed token h), added to
// acc in element order: the router logits' arithmetic (norm_router.cu, moe_small_block.cu).
__device__ __forceinline__ float router_chunk_dot(const bf16x8& g, const bf16x8& h, float acc) {
  float gf[8], hf[8];
  to_float8(g, gf);
  to_float8(h, hf);
#pragma unroll
  for (int j = 0; j < 8; ++j) acc = fmaf(hf[j], gf[j], acc);
  return acc;
}
// One warp (all 32 lanes): the softmax of li (n_experts logits) in fp32, max subtracted;
// lane's v[c] is expert lane + 32 c's probability (0 past n_experts).
__device__ __forceinline__ void router_softmax_warp(const float* __restrict__ li, int n_experts,
                                                    float (&v)[kRouterMaxPerLane]) {
  const int lane = threadIdx.x & 31;
  float mx = -INFINITY;
#pragma unroll
  for (int c = 0; c < kRouterMaxPerLane; ++c) {
    const int e = lane + 32 * c;
    v[c] = e < n_experts ? li[e] : -INFINITY;
    mx = fmaxf(mx, v[c]);
  }
  mx = warp_max(mx);
  float sum = 0;
#pragma unroll
  for (int c = 0; c < kRouterMaxPerLane; ++c) {
    const int e = lane + 32 * c;
    v[c] = e < n_experts ? expf(v[c] - mx) : 0.0f;
    sum += v[c];
  }
  sum = warp_sum(sum);
#pragma unroll
  for (int c = 0; c < kRouterMaxPerLane; ++c) v[c] = v[c] / sum;
}

// One warp (all 32 lanes) takes one token: li (n_experts) logits -> ids_i, w_i (k).
__device__ __forceinline__ void router_topk_warp(const float* __restrict__ li, int n_experts, int k,
                                                 int32_t* __restrict__ ids_i, float* __restrict__ w_i,
                                                 bool renormalise = true) {
  const int lane = threadIdx.x & 31;
  float v[kRouterMaxPerLane];
  router_softmax_warp(li, n_experts, v);
  bool taken[kRouterMaxPerLane];
#pragma unroll
  for (int c = 0; c < kRouterMaxPerLane; ++c) taken[c] = lane + 32 * c >= n_experts;
  float wsum = 0;
  for (int j = 0; j < k; ++j) {
    float best = -1.0f;
    int best_e = 0x7fffffff;
#pragma unroll
    for (int c = 0; c < kRouterMaxPerLane; ++c)
      if (!taken[c] && v[c] > best) {  // c ascending: first max wins within the lane
        best = v[c];
        best_e = lane + 32 * c;
      }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oe = __shfl_xor_sync(0xffffffffu, best_e, o);
      if (ob > best || (ob == best && oe < best_e)) {
        best = ob;
        best_e = oe;
      }
    }
#pragma unroll
    for (int c = 0; c < kRouterMaxPerLane; ++c)
      if (lane + 32 * c == best_e) taken[c] = true;
    if (lane == 0) {
      ids_i[j] = best_e;
      w_i[j] = best;
    }
    wsum += best;
  }
  if (lane == 0 && renormalise)
    for (int j = 0; j < k; ++j) w_i[j] = w_i[j] / wsum;
}

}  // namespace moebench::cuda
