// family_ops.cu: the small kernels the MoE families beyond Mixtral add to a layer
// (twins: the loops in engine/cpu_model.cpp): q/k/v bias, q/k RMSNorm in place on the
// fp32 projections, and the sigmoid-gated add of the shared expert.
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda {

namespace {
constexpr int kThreads = 256;

__global__ void add_bias_kernel(float* __restrict__ y, const bf16* __restrict__ b, int64_t count, int dim) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < count) y[i] += __bfloat162float(b[i % dim]);
}

// One warp per row: the sum of squares in fp32, then x * rsqrt(mean + eps) * w.
__global__ void rmsnorm_inplace_kernel(float* __restrict__ x, const bf16* __restrict__ w, int rows, int dim,
                                       float eps) {
  const int r = blockIdx.x * (kThreads / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (r >= rows) return;
  float* xr = x + static_cast<int64_t>(r) * dim;
  float ss = 0;
  for (int d = lane; d < dim; d += 32) ss = fmaf(xr[d], xr[d], ss);
  ss = warp_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  for (int d = lane; d < dim; d += 32) xr[d] = (xr[d] * inv) * __bfloat162float(w[d]);
}

__global__ void add_sigmoid_gated_kernel(float* __restrict__ out, const float* __restrict__ y,
                                         const float* __restrict__ g, int64_t count, int dim) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= count) return;
  const float s = 1.0f / (1.0f + expf(-g[i / dim]));
  out[i] += s * y[i];
}
}  // namespace

void add_bias(float* y, const bf16* b, int n, int dim, cudaStream_t stream) {
  MB_NVTX_RANGE("add_bias");
  const int64_t count = static_cast<int64_t>(n) * dim;
  if (count <= 0) return;
  add_bias_kernel<<<static_cast<unsigned>(ceil_div(count, kThreads)), kThreads, 0, stream>>>(y, b, count, dim);
  CUDA_CHECK_LAUNCH("add_bias_kernel");
}

void rmsnorm_inplace(float* x, const bf16* w, int rows, int dim, float eps, cudaStream_t stream) {
  MB_NVTX_RANGE("rmsnorm_inplace");
  if (rows <= 0) return;
  rmsnorm_inplace_kernel<<<static_cast<unsigned>(ceil_div(rows, kThreads / 32)), kThreads, 0, stream>>>(x, w, rows,
                                                                                                       dim, eps);
  CUDA_CHECK_LAUNCH("rmsnorm_inplace_kernel");
}

void add_sigmoid_gated(float* out, const float* y, const float* g, int n, int dim, cudaStream_t stream) {
  MB_NVTX_RANGE("add_sigmoid_gated");
  const int64_t count = static_cast<int64_t>(n) * dim;
  if (count <= 0) return;
  add_sigmoid_gated_kernel<<<static_cast<unsigned>(ceil_div(count, kThreads)), kThreads, 0, stream>>>(out, y, g,
                                                                                                     count, dim);
  CUDA_CHECK_LAUNCH("add_sigmoid_gated_kernel");
}

}  // namespace moebench::cuda
