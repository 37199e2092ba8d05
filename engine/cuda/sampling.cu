// sampling.cu: greedy sampling on the device — argmax over the vocabulary per row
// (ties to the lower index; -1 when the row holds a NaN or an infinity). One block per row.
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda {

namespace {
constexpr int kThreads = 512;
__device__ __forceinline__ void better(float& bv, int& bi, float v, int i) {
  if (v > bv || (v == bv && i < bi)) {
    bv = v;
    bi = i;
  }
}
__global__ void argmax_kernel(const float* __restrict__ logits, int32_t* __restrict__ ids, int vocab) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  bool finite = true;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    finite &= isfinite(row[i]);
    better(bv, bi, row[i], i);
  }
  const int any_non_finite = __syncthreads_or(!finite);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    better(bv, bi, ov, oi);
  }
  __shared__ float sv[kThreads / 32];
  __shared__ int si[kThreads / 32];
  if ((threadIdx.x & 31) == 0) {
    sv[threadIdx.x >> 5] = bv;
    si[threadIdx.x >> 5] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) better(bv, bi, sv[w], si[w]);
    ids[blockIdx.x] = any_non_finite ? -1 : bi;
  }
}
}  // namespace

void argmax(const float* logits, int32_t* ids, int n, int vocab, cudaStream_t stream) {
  MB_NVTX_RANGE("argmax");
  if (n <= 0) return;
  argmax_kernel<<<n, kThreads, 0, stream>>>(logits, ids, vocab);
  CUDA_CHECK_LAUNCH("argmax_kernel");
}

}  // namespace moebench::cuda
