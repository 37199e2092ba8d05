// embedding.cu: token-embedding gather bf16 -> fp32 (twin: engine/ops/embedding.cpp),
// plus the elementwise helpers the forward pass needs (residual add, fp32 -> bf16, and
// tensor parallelism's add of an all-reduced partial sum that clears it for the next).
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/tp_ops.h"

namespace moebench::cuda {

namespace {
__global__ void embedding_kernel(const bf16* __restrict__ table, const int32_t* __restrict__ ids,
                                 float* __restrict__ out, int dim) {
  const int i = blockIdx.y;
  const bf16* row = table + static_cast<int64_t>(ids[i]) * dim;
  float* o = out + static_cast<int64_t>(i) * dim;
  for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < dim; d += gridDim.x * blockDim.x)
    o[d] = __bfloat162float(row[d]);
}

__global__ void add_kernel(float* __restrict__ x, const float* __restrict__ y, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] += y[i];
}

__global__ void add_and_clear_kernel(float* __restrict__ x, float* __restrict__ y, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] += y[i];
    y[i] = 0.0f;
  }
}

__global__ void to_bf16_kernel(const float* __restrict__ src, bf16* __restrict__ dst, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

int grid_for(int64_t total, int threads) { return static_cast<int>(ceil_div(total, threads) < 65535 ? ceil_div(total, threads) : 65535); }
}  // namespace

void embedding(const bf16* table, const int32_t* ids, float* out, int n, int dim, cudaStream_t stream) {
  MB_NVTX_RANGE("embedding");
  if (n <= 0 || dim <= 0) return;
  dim3 grid(static_cast<unsigned>(ceil_div(dim, 256 * 4) > 0 ? ceil_div(dim, 256 * 4) : 1), n);
  embedding_kernel<<<grid, 256, 0, stream>>>(table, ids, out, dim);
  CUDA_CHECK_LAUNCH("embedding_kernel");
}

void add_inplace(float* x, const float* y, int n, int dim, cudaStream_t stream) {
  MB_NVTX_RANGE("add_inplace");
  const int64_t total = static_cast<int64_t>(n) * dim;
  if (total <= 0) return;
  add_kernel<<<grid_for(total, 256), 256, 0, stream>>>(x, y, total);
  CUDA_CHECK_LAUNCH("add_kernel");
}

void add_and_clear(float* x, float* y, int n, int dim, cudaStream_t stream) {
  MB_NVTX_RANGE("add_and_clear");
  const int64_t total = static_cast<int64_t>(n) * dim;
  if (total <= 0) return;
  add_and_clear_kernel<<<grid_for(total, 256), 256, 0, stream>>>(x, y, total);
  CUDA_CHECK_LAUNCH("add_and_clear_kernel");
}

void to_bf16(const float* src, bf16* dst, int64_t count, cudaStream_t stream) {
  MB_NVTX_RANGE("to_bf16");
  if (count <= 0) return;
  to_bf16_kernel<<<grid_for(count, 256), 256, 0, stream>>>(src, dst, count);
  CUDA_CHECK_LAUNCH("to_bf16_kernel");
}

}  // namespace moebench::cuda
