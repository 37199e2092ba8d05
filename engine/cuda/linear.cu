// linear.cu: y = x @ W^T with bf16 x/W and fp32 y (twin: engine/ops/linear.cpp).
// Three variants, side by side in the benchmarks:
//   gemv   — own kernel for n <= 8 rows of x: streams W at close to HBM bandwidth
//            (engine/cuda/gemv_core.cuh); a scalar fallback when `in` % 8 != 0.
//   gemv_tc — the tensor-core GEMV of n <= 8 rows (quant_gemv.cu, ops.cuh gemv_tc).
//   cublas — cublasGemmEx, bf16 inputs, fp32 output and compute. cuBLAS's M = 1
//            path reads W at ~0.3-0.4 TB/s on an H100 (as once measured there), hence gemv.
#include <cublas_v2.h>

#include "engine/cuda/check.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda {

namespace {
using detail::kGemvWarps;
constexpr int kGemvMaxSegs = 4;

template <int M, int R>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                              float* __restrict__ y, int m, int K, int N,
                                                              bool accumulate) {
  constexpr int U = 8 / R;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kGemvWarps + warp) * R;
  if (row0 >= N) return;
  const bf16* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w + static_cast<int64_t>(min(row0 + r, N - 1)) * K;
  const bf16* xr[M];
#pragma unroll
  for (int mm = 0; mm < M; ++mm) xr[mm] = x + static_cast<int64_t>(min(mm, m - 1)) * K;
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mm = 0; mm < M; ++mm) acc[r][mm] = 0;
  detail::gemv_warp<R, M, U>(wr, xr, m, K / 8, lane, acc);
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mm = 0; mm < M; ++mm) {
      const float s = warp_sum(acc[r][mm]);
      if (lane == 0 && mm < m && row0 + r < N) {
        float* yp = y + static_cast<int64_t>(mm) * N + row0 + r;
        *yp = accumulate ? *yp + s : s;
      }
    }
}

// Several weight matrices of the same `in` against the same x in one launch (q/k/v):
// blocks [first[s], first[s+1]) compute segment s. Per row, the same arithmetic as
// gemv_kernel (bit-identical outputs).
struct GemvSegments {
  const bf16* w[kGemvMaxSegs];
  float* y[kGemvMaxSegs];
  int rows[kGemvMaxSegs];
  int first[kGemvMaxSegs + 1];
  int n;
};

template <int M, int R>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_multi_kernel(const bf16* __restrict__ x, GemvSegments sg,
                                                                    int m, int K) {
  constexpr int U = 8 / R;
  int seg = 0;
  while (seg + 1 < sg.n && static_cast<int>(blockIdx.x) >= sg.first[seg + 1]) ++seg;
  const int N = sg.rows[seg];
  const bf16* w = sg.w[seg];
  float* y = sg.y[seg];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = ((blockIdx.x - sg.first[seg]) * kGemvWarps + warp) * R;
  if (row0 >= N) return;
  const bf16* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w + static_cast<int64_t>(min(row0 + r, N - 1)) * K;
  const bf16* xr[M];
#pragma unroll
  for (int mm = 0; mm < M; ++mm) xr[mm] = x + static_cast<int64_t>(min(mm, m - 1)) * K;
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mm = 0; mm < M; ++mm) acc[r][mm] = 0;
  detail::gemv_warp<R, M, U>(wr, xr, m, K / 8, lane, acc);
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mm = 0; mm < M; ++mm) {
      const float s = warp_sum(acc[r][mm]);
      if (lane == 0 && mm < m && row0 + r < N) y[static_cast<int64_t>(mm) * N + row0 + r] = s;
    }
}

// Any K, any alignment: one warp per row, scalar loads.
__global__ void gemv_scalar_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, float* __restrict__ y, int m,
                                   int K, int N, bool accumulate) {
  const int row = blockIdx.x * kGemvWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= N) return;
  const bf16* wr = w + static_cast<int64_t>(row) * K;
  for (int mm = 0; mm < m; ++mm) {
    const bf16* xr = x + static_cast<int64_t>(mm) * K;
    float s = 0;
    for (int k = lane; k < K; k += 32) s = fmaf(__bfloat162float(wr[k]), __bfloat162float(xr[k]), s);
    s = warp_sum(s);
    if (lane == 0) {
      float* yp = y + static_cast<int64_t>(mm) * N + row;
      *yp = accumulate ? *yp + s : s;
    }
  }
}

template <int M>
void launch_gemv_m(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool acc, cudaStream_t stream) {
  const int R = detail::gemv_rows_per_warp(out);
  const unsigned blocks = static_cast<unsigned>(ceil_div(out, kGemvWarps * R));
  switch (R) {
    case 4: gemv_kernel<M, 4><<<blocks, kGemvWarps * 32, 0, stream>>>(x, w, y, n, in, out, acc); break;
    case 2: gemv_kernel<M, 2><<<blocks, kGemvWarps * 32, 0, stream>>>(x, w, y, n, in, out, acc); break;
    default: gemv_kernel<M, 1><<<blocks, kGemvWarps * 32, 0, stream>>>(x, w, y, n, in, out, acc); break;
  }
  CUDA_CHECK_LAUNCH("gemv_kernel");
}

void cublas_linear(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool accumulate,
                   cublasHandle_t blas, cudaStream_t stream) {
  if (!blas) fail_msg(msg("cuda::linear: n = ", n, " needs cuBLAS but no handle was given"));
  CUBLAS_CHECK(cublasSetStream(blas, stream));
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  // Column-major view: y^T (out x n) = W (in x out)^T * x^T (in x n).
  CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha, w, CUDA_R_16BF, in, x, CUDA_R_16BF,
                            in, &beta, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
}  // namespace

void gemv(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool accumulate, cudaStream_t stream) {
  MB_NVTX_RANGE("gemv");
  if (n <= 0 || out <= 0) return;
  if (n > kGemvMaxRows) fail_msg(msg("cuda::gemv: n = ", n, " rows, the GEMV kernel takes at most ", kGemvMaxRows));
  if (in % 8 != 0 || !aligned16(x) || !aligned16(w)) {
    gemv_scalar_kernel<<<static_cast<unsigned>(ceil_div(out, kGemvWarps)), kGemvWarps * 32, 0, stream>>>(
        x, w, y, n, in, out, accumulate);
    CUDA_CHECK_LAUNCH("gemv_scalar_kernel");
    return;
  }
  if (n == 1) launch_gemv_m<1>(x, w, y, n, in, out, accumulate, stream);
  else if (n == 2) launch_gemv_m<2>(x, w, y, n, in, out, accumulate, stream);
  else if (n <= 4) launch_gemv_m<4>(x, w, y, n, in, out, accumulate, stream);
  else launch_gemv_m<8>(x, w, y, n, in, out, accumulate, stream);
}

void linear_multi(const bf16* x, const bf16* const* w, float* const* y, const int* out, int n_mats, int n, int in,
                  cublasHandle_t blas, cudaStream_t stream) {
  if (n_mats <= 0 || n_mats > kGemvMaxSegs)
    fail_msg(msg("cuda::linear_multi: ", n_mats, " matrices, expected 1..", kGemvMaxSegs));
  bool fused = n == 1 && in % 8 == 0 && aligned16(x);
  int total = 0;
  for (int s = 0; s < n_mats; ++s) {
    fused = fused && aligned16(w[s]) && out[s] > 0;
    total += out[s];
  }
  if (!fused) {
    for (int s = 0; s < n_mats; ++s) linear(x, w[s], y[s], n, in, out[s], false, blas, stream);
    return;
  }
  MB_NVTX_RANGE("gemv_multi");
  GemvSegments sg{};
  sg.n = n_mats;
  // One R for all segments: per row the result does not depend on R (same lane order).
  const int R = detail::gemv_rows_per_warp(total);
  sg.first[0] = 0;
  for (int s = 0; s < n_mats; ++s) {
    sg.w[s] = w[s];
    sg.y[s] = y[s];
    sg.rows[s] = out[s];
    sg.first[s + 1] = sg.first[s] + static_cast<int>(ceil_div(out[s], kGemvWarps * R));
  }
  const unsigned blocks = static_cast<unsigned>(sg.first[n_mats]);
  switch (R) {
    case 4: gemv_multi_kernel<1, 4><<<blocks, kGemvWarps * 32, 0, stream>>>(x, sg, n, in); break;
    case 2: gemv_multi_kernel<1, 2><<<blocks, kGemvWarps * 32, 0, stream>>>(x, sg, n, in); break;
    default: gemv_multi_kernel<1, 1><<<blocks, kGemvWarps * 32, 0, stream>>>(x, sg, n, in); break;
  }
  CUDA_CHECK_LAUNCH("gemv_multi_kernel");
}

void linear(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool accumulate, cublasHandle_t blas,
            cudaStream_t stream, LinearAlgo algo) {
  if (n <= 0 || out <= 0) return;
  if (algo == LinearAlgo::automatic)
    algo = (n <= kGemvAutoMaxRows || !blas) && (in % 8 == 0 || !blas) && n <= kGemvMaxRows ? LinearAlgo::gemv : LinearAlgo::cublas;
  if (algo == LinearAlgo::gemv) {
    gemv(x, w, y, n, in, out, accumulate, stream);
    return;
  }
  if (algo == LinearAlgo::gemv_tc) {
    gemv_tc(x, w, y, n, in, out, accumulate, stream);
    return;
  }
  MB_NVTX_RANGE("linear_cublas");
  cublas_linear(x, w, y, n, in, out, accumulate, blas, stream);
}

}  // namespace moebench::cuda
