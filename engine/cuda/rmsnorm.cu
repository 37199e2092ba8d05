// rmsnorm.cu: RMSNorm fp32 in, bf16 weight, bf16 out (twin: engine/ops/rmsnorm.cpp).
// One block per row; sum of squares in fp32 (the reference uses double; the
// difference is far below bf16 rounding of the output).
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda {

namespace {
constexpr int kThreads = 256;
__global__ void rmsnorm_kernel(const float* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ out,
                               int dim, float eps) {
  const float* xi = x + static_cast<int64_t>(blockIdx.x) * dim;
  bf16* oi = out + static_cast<int64_t>(blockIdx.x) * dim;
  float ss = 0;
  for (int d = threadIdx.x; d < dim; d += kThreads) ss = fmaf(xi[d], xi[d], ss);
  __shared__ float part[kThreads / 32];
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < kThreads / 32 ? part[threadIdx.x] : 0.0f;
    v = warp_sum(v);
    if (threadIdx.x == 0) part[0] = v;
  }
  __syncthreads();
  const float inv = 1.0f / sqrtf(part[0] / static_cast<float>(dim) + eps);
  for (int d = threadIdx.x; d < dim; d += kThreads) oi[d] = __float2bfloat16_rn((xi[d] * inv) * __bfloat162float(w[d]));
}
}  // namespace

void rmsnorm(const float* x, const bf16* w, bf16* out, int n, int dim, float eps, cudaStream_t stream) {
  MB_NVTX_RANGE("rmsnorm");
  if (n <= 0) return;
  rmsnorm_kernel<<<n, kThreads, 0, stream>>>(x, w, out, dim, eps);
  CUDA_CHECK_LAUNCH("rmsnorm_kernel");
}

}  // namespace moebench::cuda
