// bandwidth.cu: see bandwidth.h.
#include <algorithm>
#include <vector>

#include "engine/cuda/bandwidth.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"

namespace moebench::cuda {

namespace {
__global__ void copy_kernel(const int4* __restrict__ src, int4* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

// Every thread keeps kLoads independent 16-byte loads in flight per iteration and
// folds them into one value; a thread stores it only when it matches a pattern the
// buffer cannot produce (the buffer is memset to 1s), so no load can be dropped and
// almost nothing is written.
constexpr int kLoads = 4;
__device__ __forceinline__ void fold(int4& acc, const int4& v) {
  acc.x ^= v.x;
  acc.y ^= v.y;
  acc.z ^= v.z;
  acc.w ^= v.w;
}
__global__ void read_kernel(const int4* __restrict__ src, size_t n, int4* __restrict__ sink) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  int4 acc = make_int4(0, 0, 0, 0);
  for (; i + (kLoads - 1) * stride < n; i += kLoads * stride) {
    int4 v[kLoads];
#pragma unroll
    for (int k = 0; k < kLoads; ++k) v[k] = src[i + k * stride];
#pragma unroll
    for (int k = 0; k < kLoads; ++k) fold(acc, v[k]);
  }
  for (; i < n; i += stride) fold(acc, src[i]);
  if (acc.x == 0x5a5a5a5a && acc.y == 0x5a5a5a5a) *sink = acc;
}

// The same bytes read in contiguous spans, one a warp (a GEMV's pattern: each warp walks
// its rows), kSpanLoads 512-byte loads of a warp in flight, the last round predicated. Shorter
// reads of a few hundred MB can be faster this way than in read_kernel's grid-wide stride.
constexpr int kSpanLoads = 8;
__global__ void read_kernel_spans(const int4* __restrict__ src, size_t n, int4* __restrict__ sink) {
  const size_t warps = static_cast<size_t>(gridDim.x) * (blockDim.x >> 5);
  const size_t w = blockIdx.x * static_cast<size_t>(blockDim.x >> 5) + (threadIdx.x >> 5);
  const size_t round = 32 * kSpanLoads, span = (n + warps - 1) / warps;
  const size_t per_warp = (span + round - 1) / round * round;
  const size_t begin = w * per_warp, end = min(n, begin + per_warp);
  int4 acc = make_int4(0, 0, 0, 0);
  for (size_t i = begin + (threadIdx.x & 31); i < end; i += round) {
    int4 v[kSpanLoads];
#pragma unroll
    for (int k = 0; k < kSpanLoads; ++k) v[k] = i + 32 * k < end ? src[i + 32 * k] : make_int4(0, 0, 0, 0);
#pragma unroll
    for (int k = 0; k < kSpanLoads; ++k) fold(acc, v[k]);
  }
  if (acc.x == 0x5a5a5a5a && acc.y == 0x5a5a5a5a) *sink = acc;
}

BandwidthResult summarize(std::vector<float> ms, size_t bytes) {
  std::sort(ms.begin(), ms.end());
  BandwidthResult r;
  r.bytes = bytes;
  r.gbps = static_cast<double>(bytes) / (ms.front() * 1e-3) / 1e9;
  r.median_gbps = static_cast<double>(bytes) / (ms[ms.size() / 2] * 1e-3) / 1e9;
  return r;
}

int sm_count() {
  int sms = 0, dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

// Times `launch` (one kernel launch or copy on the default stream) `reps` times after two
// warm-up launches; milliseconds per launch.
template <typename Launch>
std::vector<float> time_launches(Launch launch, int reps) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int r = -2; r < reps; ++r) {
    CUDA_CHECK(cudaEventRecord(a));
    launch();
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    if (r >= 0) ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  return ms;
}
}  // namespace

BandwidthResult measure_hbm_copy(size_t buffer_bytes, int reps) {
  MB_NVTX_RANGE("measure_hbm_copy");
  const size_t n = buffer_bytes / sizeof(int4);
  int4 *src = nullptr, *dst = nullptr;
  CUDA_CHECK(cudaMalloc(&src, n * sizeof(int4)));
  CUDA_CHECK(cudaMalloc(&dst, n * sizeof(int4)));
  CUDA_CHECK(cudaMemset(src, 1, n * sizeof(int4)));
  const int sms = sm_count();
  std::vector<float> ms = time_launches(
      [&] {
        copy_kernel<<<sms * 8, 512>>>(src, dst, n);
        CUDA_CHECK_LAUNCH("copy_kernel");
      },
      reps);
  CUDA_CHECK(cudaFree(src));
  CUDA_CHECK(cudaFree(dst));
  return summarize(ms, 2 * n * sizeof(int4));
}

BandwidthResult measure_hbm_read(size_t buffer_bytes, int reps) {
  MB_NVTX_RANGE("measure_hbm_read");
  const size_t n = buffer_bytes / sizeof(int4);
  int4 *src = nullptr, *sink = nullptr;
  CUDA_CHECK(cudaMalloc(&src, n * sizeof(int4)));
  CUDA_CHECK(cudaMalloc(&sink, sizeof(int4)));
  CUDA_CHECK(cudaMemset(src, 1, n * sizeof(int4)));
  std::vector<float> ms = time_launches([&] { launch_read_stream(src, n * sizeof(int4), sink, nullptr); }, reps);
  CUDA_CHECK(cudaFree(src));
  CUDA_CHECK(cudaFree(sink));
  return summarize(ms, n * sizeof(int4));
}

void launch_read_stream(const void* src, size_t bytes, void* sink, cudaStream_t stream) {
  launch_read_stream(src, bytes, sink, stream, 8);
}

void launch_read_stream(const void* src, size_t bytes, void* sink, cudaStream_t stream, int blocks_per_sm,
                        bool spans) {
  const auto kernel = spans ? read_kernel_spans : read_kernel;
  kernel<<<sm_count() * blocks_per_sm, 512, 0, stream>>>(static_cast<const int4*>(src), bytes / sizeof(int4),
                                                          static_cast<int4*>(sink));
  CUDA_CHECK_LAUNCH("read_kernel");
}

BandwidthResult measure_h2d_pinned(size_t bytes, int reps) {
  MB_NVTX_RANGE("measure_h2d_pinned");
  void *host = nullptr, *dev = nullptr;
  CUDA_CHECK(cudaHostAlloc(&host, bytes, cudaHostAllocDefault));
  CUDA_CHECK(cudaMalloc(&dev, bytes));
  std::vector<float> ms =
      time_launches([&] { CUDA_CHECK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice)); }, reps);
  CUDA_CHECK(cudaFreeHost(host));
  CUDA_CHECK(cudaFree(dev));
  return summarize(ms, bytes);
}

}  // namespace moebench::cuda
