// rmsnorm.cu: RMSNorm fp32 in, bf16 weight, bf16 out (twin: engine/ops/rmsnorm.cpp).
// One block per row (rmsnorm_row.cuh); sum of squares in fp32 (the reference uses
// double; the difference is far below bf16 rounding of the output).
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/rmsnorm_row.cuh"

namespace moebench::cuda {

namespace {
constexpr int kThreads = 256;
__global__ void rmsnorm_kernel(const float* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ out,
                               int dim, float eps) {
  rmsnorm_row<kThreads>(x + static_cast<int64_t>(blockIdx.x) * dim, w, out + static_cast<int64_t>(blockIdx.x) * dim, dim,
                        eps);
}
}  // namespace

void rmsnorm(const float* x, const bf16* w, bf16* out, int n, int dim, float eps, cudaStream_t stream) {
  MB_NVTX_RANGE("rmsnorm");
  if (n <= 0) return;
  rmsnorm_kernel<<<n, kThreads, 0, stream>>>(x, w, out, dim, eps);
  CUDA_CHECK_LAUNCH("rmsnorm_kernel");
}

}  // namespace moebench::cuda
