// swiglu.cu: one SwiGLU expert out = w2 @ (silu(w1 @ x) * (w3 @ x)) (twin:
// engine/ops/swiglu.cpp). Decode (n <= kGemvAutoMaxRows, hidden % 8 == 0): one kernel streams the
// w1 and w3 rows together (2R rows per warp) and writes h = silu(g) * u in bf16, then
// the GEMV of w2. Otherwise: w1 and w3 through `linear` (cuBLAS for n > 8) into fp32,
// an elementwise silu-multiply to bf16, and w2 through `linear`.
#include "engine/cuda/check.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda {

namespace {
using detail::kGemvWarps;
using detail::silu;

template <int M, int R>
__global__ void __launch_bounds__(kGemvWarps * 32) gate_up_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w1,
                                                                 const bf16* __restrict__ w3, bf16* __restrict__ h,
                                                                 int m, int K, int N) {
  constexpr int U = 4 / R > 0 ? 4 / R : 1;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kGemvWarps + warp) * R;
  if (row0 >= N) return;
  const bf16* wr[2 * R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t row = min(row0 + r, N - 1);
    wr[r] = w1 + row * K;
    wr[R + r] = w3 + row * K;
  }
  const bf16* xr[M];
#pragma unroll
  for (int mm = 0; mm < M; ++mm) xr[mm] = x + static_cast<int64_t>(min(mm, m - 1)) * K;
  float acc[2 * R][M];
  detail::gemv_dot<2 * R, M, U>(wr, xr, m, K / 8, lane, acc);
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mm = 0; mm < M; ++mm) {
      const float g = warp_sum(acc[r][mm]), u = warp_sum(acc[R + r][mm]);
      if (lane == 0 && mm < m && row0 + r < N)
        h[static_cast<int64_t>(mm) * N + row0 + r] = __float2bfloat16_rn(silu(g) * u);
    }
}

__global__ void silu_mul_kernel(const float* __restrict__ g, const float* __restrict__ u, bf16* __restrict__ h,
                                int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    h[i] = __float2bfloat16_rn(silu(g[i]) * u[i]);
}

template <int M>
void launch_gate_up_m(const bf16* x, const bf16* w1, const bf16* w3, bf16* h, int n, int hidden, int inter,
                      cudaStream_t stream) {
  const int R = detail::gemv_rows_per_warp(2 * inter) >= 2 ? 2 : 1;
  const unsigned blocks = static_cast<unsigned>(ceil_div(inter, kGemvWarps * R));
  if (R == 2) gate_up_kernel<M, 2><<<blocks, kGemvWarps * 32, 0, stream>>>(x, w1, w3, h, n, hidden, inter);
  else gate_up_kernel<M, 1><<<blocks, kGemvWarps * 32, 0, stream>>>(x, w1, w3, h, n, hidden, inter);
  CUDA_CHECK_LAUNCH("gate_up_kernel");
}

bool fused_ok(const void* a, const void* b, const void* c, int n, int hidden) {
  auto al = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  return n <= kGemvMaxRows && hidden % 8 == 0 && al(a) && al(b) && al(c);
}
size_t align256(size_t b) { return (b + 255) / 256 * 256; }
}  // namespace

size_t swiglu_scratch_bytes(int n, int inter) {
  const size_t e = static_cast<size_t>(n) * inter;
  return align256(e * sizeof(bf16)) + 2 * align256(e * sizeof(float));
}

void swiglu_gate_up(const bf16* x, const bf16* w1, const bf16* w3, bf16* h, int n, int hidden, int inter,
                    cudaStream_t stream) {
  MB_NVTX_RANGE("swiglu_gate_up");
  if (n <= 0) return;
  if (!fused_ok(x, w1, w3, n, hidden))
    fail_msg(msg("cuda::swiglu_gate_up: needs n <= ", kGemvMaxRows, " (got ", n, "), hidden % 8 == 0 (got ", hidden,
                 ") and 16-byte aligned pointers"));
  if (n == 1) launch_gate_up_m<1>(x, w1, w3, h, n, hidden, inter, stream);
  else if (n == 2) launch_gate_up_m<2>(x, w1, w3, h, n, hidden, inter, stream);
  else if (n <= 4) launch_gate_up_m<4>(x, w1, w3, h, n, hidden, inter, stream);
  else launch_gate_up_m<8>(x, w1, w3, h, n, hidden, inter, stream);
}

void swiglu_expert(const bf16* x, const bf16* w1, const bf16* w3, const bf16* w2, float* out, void* scratch, int n,
                   int hidden, int inter, bool accumulate, cublasHandle_t blas, cudaStream_t stream) {
  MB_NVTX_RANGE("swiglu_expert");
  if (n <= 0) return;
  const size_t e = static_cast<size_t>(n) * inter;
  bf16* h = static_cast<bf16*>(scratch);
  if (fused_ok(x, w1, w3, n, hidden) && (n <= kGemvAutoMaxRows || !blas)) {
    swiglu_gate_up(x, w1, w3, h, n, hidden, inter, stream);
  } else {
    float* g = reinterpret_cast<float*>(static_cast<char*>(scratch) + align256(e * sizeof(bf16)));
    float* u = reinterpret_cast<float*>(reinterpret_cast<char*>(g) + align256(e * sizeof(float)));
    linear(x, w1, g, n, hidden, inter, false, blas, stream);
    linear(x, w3, u, n, hidden, inter, false, blas, stream);
    const int64_t blocks = ceil_div(static_cast<int64_t>(e), 256) < 65535 ? ceil_div(static_cast<int64_t>(e), 256) : 65535;
    silu_mul_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(g, u, h, static_cast<int64_t>(e));
    CUDA_CHECK_LAUNCH("silu_mul_kernel");
  }
  linear(h, w2, out, n, inter, hidden, accumulate, blas, stream);
}

}  // namespace moebench::cuda
