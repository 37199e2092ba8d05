// gate_up.cu: see gate_up.h.
#include "engine/cuda/gate_up.h"

#include "engine/cuda/check.cuh"
#include "engine/cuda/gemv_core.cuh"

namespace moebench::cuda {

namespace {
__global__ void silu_mul_gate_up_kernel(const float* __restrict__ gu, __nv_bfloat16* __restrict__ h, int inter,
                                        int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t p = i / inter, j = i % inter;
  const float* row = gu + p * 2 * inter;
  h[i] = __float2bfloat16_rn(detail::silu(row[j]) * row[inter + j]);
}
}  // namespace

void silu_mul_gate_up(const float* gu, __nv_bfloat16* h, int pairs, int inter, cudaStream_t stream) {
  MB_NVTX_RANGE("silu_mul_gate_up");
  const int64_t n = static_cast<int64_t>(pairs) * inter;
  if (n <= 0) return;
  silu_mul_gate_up_kernel<<<static_cast<unsigned>(ceil_div(n, 256)), 256, 0, stream>>>(gu, h, inter, n);
  CUDA_CHECK_LAUNCH("silu_mul_gate_up_kernel");
}

}  // namespace moebench::cuda
