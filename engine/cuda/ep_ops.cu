// ep_ops.cu: see ep_ops.h.
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ep_ops.h"

namespace moebench::cuda {

namespace {
constexpr int kMarkThreads = 256;

// kMark: ids of experts not held become -1; else (local null, every expert held) ids are
// only read.
template <bool kMark>
__global__ void mark_kernel(int32_t* __restrict__ ids, int pairs, const uint8_t* __restrict__ local, int n_experts,
                            int64_t* __restrict__ counters) {
  extern __shared__ int s_used[];  // (n_experts) 1 where a kept pair chose the expert
  __shared__ int s_kept;
  for (int e = threadIdx.x; e < n_experts; e += blockDim.x) s_used[e] = 0;
  if (threadIdx.x == 0) s_kept = 0;
  __syncthreads();
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int e = ids[p];
    if (e >= 0 && e < n_experts && (!kMark || local[e])) {
      s_used[e] = 1;
      atomicAdd(&s_kept, 1);
    } else if constexpr (kMark) {
      ids[p] = -1;
    }
  }
  __syncthreads();
  if (counters && threadIdx.x == 0) {  // one block, stream-ordered: no other writer
    int used = 0;
    for (int e = 0; e < n_experts; ++e) used += s_used[e];
    counters[0] += used;
    counters[1] += s_kept;
  }
}

__global__ void combine_held_kernel(const float* __restrict__ y, const int32_t* __restrict__ inv,
                                    const int32_t* __restrict__ ids, const float* __restrict__ weights, int k,
                                    float* __restrict__ out, int hidden) {
  const int t = blockIdx.y;
  for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < hidden; d += gridDim.x * blockDim.x) {
    float s = 0;
    for (int j = 0; j < k; ++j) {
      const int p = t * k + j;
      if (ids[p] < 0) continue;
      s = fmaf(weights[p], y[static_cast<int64_t>(inv[p]) * hidden + d], s);
    }
    out[static_cast<int64_t>(t) * hidden + d] += s;
  }
}
}  // namespace

void ep_mark_foreign(int32_t* ids, int pairs, const uint8_t* local, int n_experts, int64_t* counters,
                     cudaStream_t stream) {
  MB_NVTX_RANGE("ep_mark_foreign");
  if (pairs <= 0) return;
  mark_kernel<true><<<1, kMarkThreads, static_cast<size_t>(n_experts) * sizeof(int), stream>>>(ids, pairs, local,
                                                                                              n_experts, counters);
  CUDA_CHECK_LAUNCH("ep_mark_kernel");
}

void count_step_experts(const int32_t* ids, int pairs, int n_experts, int64_t* counters, cudaStream_t stream) {
  MB_NVTX_RANGE("count_step_experts");
  if (pairs <= 0) return;
  // kMark false: ids are only read (the cast lets both instances share one signature).
  mark_kernel<false><<<1, kMarkThreads, static_cast<size_t>(n_experts) * sizeof(int), stream>>>(
      const_cast<int32_t*>(ids), pairs, nullptr, n_experts, counters);
  CUDA_CHECK_LAUNCH("count_step_experts");
}

void moe_combine_held(const float* y, const int32_t* inv, const int32_t* ids, const float* weights, int n, int k,
                      float* out, int hidden, cudaStream_t stream) {
  MB_NVTX_RANGE("moe_combine_held");
  if (n <= 0) return;
  const unsigned cols = static_cast<unsigned>(ceil_div(hidden, 256 * 4) > 0 ? ceil_div(hidden, 256 * 4) : 1);
  combine_held_kernel<<<dim3(cols, static_cast<unsigned>(n)), 256, 0, stream>>>(y, inv, ids, weights, k, out, hidden);
  CUDA_CHECK_LAUNCH("moe_combine_held_kernel");
}

}  // namespace moebench::cuda
