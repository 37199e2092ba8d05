// sampling.cu: greedy sampling on the device — argmax over the vocabulary per row
// (ties to the lower index; -1 when the row holds a NaN or an infinity). One block per row,
// or (vocabularies of 65536 and more unless MOEBENCH_ARGMAX_SPLIT=0; any with =1) a block
// per slice of a row whose last block to finish reduces the slices' results: the same ids
// (the maximum and its lowest index do not depend on the order the candidates are compared
// in).
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/launch_env.h"
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
// Block-wide (bv, bi) and the OR of bad over T threads: every thread gets them.
template <int T>
__device__ __forceinline__ void block_best(float& bv, int& bi, int& bad) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    better(bv, bi, ov, oi);
  }
  __shared__ float sv[T / 32];
  __shared__ int si[T / 32];
  bad = __syncthreads_or(bad);
  if ((threadIdx.x & 31) == 0) {
    sv[threadIdx.x >> 5] = bv;
    si[threadIdx.x >> 5] = bi;
  }
  __syncthreads();
  for (int w = 0; w < T / 32; ++w) better(bv, bi, sv[w], si[w]);
  __syncthreads();  // sv/si reusable
}

__global__ void argmax_kernel(const float* __restrict__ logits, int32_t* __restrict__ ids, int vocab) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  int bad = 0;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    bad |= !isfinite(row[i]);
    better(bv, bi, row[i], i);
  }
  block_best<kThreads>(bv, bi, bad);
  if (threadIdx.x == 0) ids[blockIdx.x] = bad ? -1 : bi;
}

// The split launch: grid (slices, rows); a slice of kSliceElems logits per block.
constexpr int kSliceThreads = 256;
constexpr int kSliceElems = 4096;
constexpr int kSliceMaxRows = 8;
constexpr int kSliceMax = 128;
__device__ float g_slice_v[kSliceMaxRows * kSliceMax];
__device__ int g_slice_i[kSliceMaxRows * kSliceMax];
__device__ int g_slice_bad[kSliceMaxRows * kSliceMax];
__device__ unsigned int g_slice_done[kSliceMaxRows];  // zero between launches (the last block resets it)

__global__ void __launch_bounds__(kSliceThreads)
    argmax_split_kernel(const float* __restrict__ logits, int32_t* __restrict__ ids, int vocab) {
  const int row = blockIdx.y, slice = blockIdx.x, slices = gridDim.x;
  const float* r = logits + static_cast<int64_t>(row) * vocab;
  const int end = min(vocab, (slice + 1) * kSliceElems);
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  int bad = 0;
  for (int i = slice * kSliceElems + threadIdx.x; i < end; i += kSliceThreads) {
    const float v = r[i];
    bad |= !isfinite(v);
    better(bv, bi, v, i);
  }
  block_best<kSliceThreads>(bv, bi, bad);
  __shared__ bool s_last;
  const int at = row * kSliceMax + slice;
  if (threadIdx.x == 0) {
    g_slice_v[at] = bv;
    g_slice_i[at] = bi;
    g_slice_bad[at] = bad;
    __threadfence();  // the slice's result reaches L2 before its count does
    s_last = atomicAdd(&g_slice_done[row], 1u) == static_cast<unsigned>(slices) - 1;
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  bv = -INFINITY;
  bi = 0x7fffffff;
  bad = 0;
  for (int s = threadIdx.x; s < slices; s += kSliceThreads) {
    better(bv, bi, __ldcg(g_slice_v + row * kSliceMax + s), __ldcg(g_slice_i + row * kSliceMax + s));
    bad |= __ldcg(g_slice_bad + row * kSliceMax + s);
  }
  block_best<kSliceThreads>(bv, bi, bad);
  if (threadIdx.x == 0) {
    ids[row] = bad ? -1 : bi;
    g_slice_done[row] = 0;  // the next launch starts from zero
  }
}

// Unset, the split launch takes vocabularies from this size: on an H200 (Qwen3-30B-A3B
// shape, 151936 logits) one block took 23.4 us per step, the slices 4.7.
constexpr int kSplitDefaultMinVocab = 65536;
bool argmax_split(int vocab) {
  static const int mode = env_choice("MOEBENCH_ARGMAX_SPLIT", {0, 1}, -1);
  return mode == 1 || (mode == -1 && vocab >= kSplitDefaultMinVocab);
}
}  // namespace

bool argmax_sliced_supported(int n, int vocab) {
  const int64_t slices = ceil_div(vocab, kSliceElems);
  return n >= 1 && n <= kSliceMaxRows && slices >= 2 && slices <= kSliceMax;
}

void argmax_sliced(const float* logits, int32_t* ids, int n, int vocab, cudaStream_t stream) {
  if (!argmax_sliced_supported(n, vocab))
    fail_msg(msg("cuda::argmax_sliced: ", n, " rows of ", vocab, " logits not supported (1..", kSliceMaxRows,
                 " rows, ", kSliceElems + 1, "..", kSliceMax * kSliceElems, " logits)"));
  const int64_t slices = ceil_div(vocab, kSliceElems);
  argmax_split_kernel<<<dim3(static_cast<unsigned>(slices), static_cast<unsigned>(n)), kSliceThreads, 0, stream>>>(
      logits, ids, vocab);
  CUDA_CHECK_LAUNCH("argmax_split_kernel");
}

void argmax(const float* logits, int32_t* ids, int n, int vocab, cudaStream_t stream) {
  MB_NVTX_RANGE("argmax");
  if (n <= 0) return;
  if (argmax_split(vocab) && argmax_sliced_supported(n, vocab)) return argmax_sliced(logits, ids, n, vocab, stream);
  argmax_kernel<<<n, kThreads, 0, stream>>>(logits, ids, vocab);
  CUDA_CHECK_LAUNCH("argmax_kernel");
}

}  // namespace moebench::cuda
