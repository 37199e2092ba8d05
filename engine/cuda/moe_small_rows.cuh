// moe_small_rows.cuh: the per-warp bodies of the one-token small-expert MoE
// (moe_small_experts.h), shared by its two-launch kernels and its one-launch kernel so
// that every launch computes each h element and each output row with the same
// instructions in the same order: a gate/up warp's R rows of one slot, and a down warp's
// output row over the k slots. .cu only.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

#include "engine/cuda/common.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda::small_rows {

// h[slot][row0 + r] = silu(w1[row0 + r] . x) * (w3[row0 + r] . x) in bf16 for r < R, written
// by lane 0: moe_gate_up_kernel's warp at one token (gemv_dot over 2R rows, U deep).
template <int R, int U>
__device__ __forceinline__ void gate_up_warp(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* w1,
                                             const __nv_bfloat16* w3, __nv_bfloat16* __restrict__ h, int slot,
                                             int row0, int K, int N, int lane) {
  const __nv_bfloat16* wr[2 * R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    wr[r] = w1 + static_cast<int64_t>(row0 + r) * K;
    wr[R + r] = w3 + static_cast<int64_t>(row0 + r) * K;
  }
  const __nv_bfloat16* xr[1] = {x};
  float acc[2 * R][1];
  detail::gemv_dot<2 * R, 1, U>(wr, xr, 1, K / 8, lane, acc);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float g = warp_sum(acc[r][0]), u = warp_sum(acc[R + r][0]);
    if (lane == 0) h[static_cast<int64_t>(slot) * N + row0 + r] = __float2bfloat16_rn(detail::silu(g) * u);
  }
}

// h read past this SM's L1 (written by other blocks of the running kernel).
__device__ __forceinline__ bf16x8 load8_l2(const __nv_bfloat16* p) {
  const uint4 r = __ldcg(reinterpret_cast<const uint4*>(p));
  bf16x8 out;
  memcpy(&out, &r, 16);
  return out;
}

// The routed sum of output row `row` (K = inter): for the slots in groups of G (G rows of
// w2 in flight, U chunks deep), each slot's dot with h[slot] in gemv_warp's lane order
// (chunks c = lane, lane + 32, ... ascending, acc += dot8), warp_sum, then total =
// fmaf(weight, dot, total) in slot order; returns total (every lane). ready(j0, count) is
// called by each lane that has chunks after its first loads of a group and before it reads
// h for slots j0 .. j0 + count - 1 (the wait for gate/up). kL2: h loaded through L2.
template <int G, int U, bool kL2, typename Ready>
__device__ __forceinline__ float down_row(const __nv_bfloat16* __restrict__ h, const __nv_bfloat16* const* s_w2,
                                          const float* s_wt, int row, int k, int K, int lane, Ready&& ready) {
  const int K8 = K / 8;
  float total = 0;
  for (int j0 = 0; j0 < k; j0 += G) {
    float acc[G];
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g] = 0;
    bool got = false;
    for (int c0 = lane; c0 < K8; c0 += 32 * U) {
      bf16x8 wv[U][G];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + 32 * u;
#pragma unroll
        for (int g = 0; g < G; ++g)
          if (c < K8 && j0 + g < k)
            wv[u][g] = load8_stream(s_w2[j0 + g] + static_cast<int64_t>(row) * K + 8 * static_cast<int64_t>(c));
      }
      if (!got) {
        ready(j0, min(G, k - j0));
        got = true;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + 32 * u;
        if (c >= K8) break;
#pragma unroll
        for (int g = 0; g < G; ++g) {
          if (j0 + g >= k) break;
          float wf[8], xf[8];
          to_float8(wv[u][g], wf);
          const __nv_bfloat16* hp = h + static_cast<int64_t>(j0 + g) * K + 8 * c;
          to_float8(kL2 ? load8_l2(hp) : load8(hp), xf);
          acc[g] += dot8(wf, xf);
        }
      }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (j0 + g >= k) break;
      total = fmaf(s_wt[j0 + g], warp_sum(acc[g]), total);
    }
  }
  return total;
}

}  // namespace moebench::cuda::small_rows
