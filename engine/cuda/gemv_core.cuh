// gemv_core.cuh: the inner loop shared by the GEMV (linear.cu), the fused SwiGLU
// gate/up (swiglu.cu) and the fused MoE decode kernels (moe_fused.cu).
//
// One warp computes R weight rows x M activation rows. Each lane streams 16-byte
// chunks (8 bf16) of its R rows, U chunks deep, so R*U independent 16-byte loads are in
// flight before the first FMA; weights bypass L1 (read once), activations are read
// through L1/L2 (reused by every warp). Partial sums stay per lane; the caller reduces.
#pragma once
#include "engine/cuda/common.cuh"

namespace moebench::cuda::detail {

constexpr int kGemvWarps = 8;  // 256 threads per block

// w[r]: row r's start (16-byte aligned, K8 chunks); x[mm]: activation row mm (16-byte aligned).
// acc[r][mm] += partial dot over this lane's chunks.
template <int R, int M, int U>
__device__ __forceinline__ void gemv_warp(const __nv_bfloat16* const (&w)[R], const __nv_bfloat16* const (&x)[M],
                                          int m, int K8, int lane, float (&acc)[R][M]) {
  for (int c0 = lane; c0 < K8; c0 += 32 * U) {
    bf16x8 wv[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (c < K8) wv[u][r] = load8_stream(w[r] + 8 * static_cast<int64_t>(c));
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      if (c >= K8) break;
#pragma unroll
      for (int mm = 0; mm < M; ++mm) {
        if (mm >= m) break;
        float xf[8];
        to_float8(load8(x[mm] + 8 * static_cast<int64_t>(c)), xf);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float wf[8];
          to_float8(wv[u][r], wf);
          acc[r][mm] += dot8(wf, xf);
        }
      }
    }
  }
}

// Rows per warp for an output of `rows`: more rows per warp (more loads in flight) when
// there are enough rows to keep ~2 blocks per SM busy anyway.
inline int gemv_rows_per_warp(int rows) {
  if (rows >= kGemvWarps * 4 * 264) return 4;
  if (rows >= kGemvWarps * 2 * 132) return 2;
  return 1;
}

}  // namespace moebench::cuda::detail
