// rmsnorm_row.cuh: one row of RMSNorm (twin: engine/ops/rmsnorm.cpp) taken by a block of
// kThreads threads, fp32 in, bf16 weight, bf16 out: the sum of squares in fp32 (each
// thread's strided share, then the warps, then the block: rmsnorm_inv), out = (x * inv) * w
// rounded to bf16. rmsnorm.cu's kernel and the fused norm + router of decode (norm_router.cu)
// share it, so their outputs agree bit for bit. .cu only.
#pragma once
#include <cuda_bf16.h>

#include "engine/cuda/common.cuh"

namespace moebench::cuda {

// The barrier of the threads that share a row: the whole block (BlockSync), or, where a
// block is larger than the threads that take the row, named barrier kId of the first
// kThreads threads (NamedSync; the other threads must not call it).
struct BlockSync {
  __device__ __forceinline__ static void sync() { __syncthreads(); }
};
template <int kId, int kThreads>
struct NamedSync {
  __device__ __forceinline__ static void sync() { asm volatile("bar.sync %0, %1;" ::"n"(kId), "n"(kThreads) : "memory"); }
};

// 1 / sqrt(mean of squares + eps) from each thread's share ss of the sum of squares (its
// strided elements in order): the warps' sums, then the block's; every thread gets it.
template <int kThreads, typename Sync = BlockSync>
__device__ __forceinline__ float rmsnorm_inv(float ss, int dim, float eps) {
  __shared__ float part[kThreads / 32];
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
  Sync::sync();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < kThreads / 32 ? part[threadIdx.x] : 0.0f;
    v = warp_sum(v);
    if (threadIdx.x == 0) part[0] = v;
  }
  Sync::sync();
  return 1.0f / sqrtf(part[0] / static_cast<float>(dim) + eps);
}

template <int kThreads>
__device__ __forceinline__ void rmsnorm_row(const float* __restrict__ xi, const __nv_bfloat16* __restrict__ w,
                                            __nv_bfloat16* __restrict__ oi, int dim, float eps) {
  float ss = 0;
  for (int d = threadIdx.x; d < dim; d += kThreads) ss = fmaf(xi[d], xi[d], ss);
  const float inv = rmsnorm_inv<kThreads>(ss, dim, eps);
  for (int d = threadIdx.x; d < dim; d += kThreads) oi[d] = __float2bfloat16_rn((xi[d] * inv) * __bfloat162float(w[d]));
}

}  // namespace moebench::cuda
