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

BandwidthResult summarize(std::vector<float> ms, size_t bytes) {
  std::sort(ms.begin(), ms.end());
  BandwidthResult r;
  r.bytes = bytes;
  r.gbps = static_cast<double>(bytes) / (ms.front() * 1e-3) / 1e9;
  r.median_gbps = static_cast<double>(bytes) / (ms[ms.size() / 2] * 1e-3) / 1e9;
  return r;
}
}  // namespace

BandwidthResult measure_hbm_copy(size_t buffer_bytes, int reps) {
  MB_NVTX_RANGE("measure_hbm_copy");
  const size_t n = buffer_bytes / sizeof(int4);
  int4 *src = nullptr, *dst = nullptr;
  CUDA_CHECK(cudaMalloc(&src, n * sizeof(int4)));
  CUDA_CHECK(cudaMalloc(&dst, n * sizeof(int4)));
  CUDA_CHECK(cudaMemset(src, 1, n * sizeof(int4)));
  int sms = 0, dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int r = -2; r < reps; ++r) {  // two warm-up runs
    CUDA_CHECK(cudaEventRecord(a));
    copy_kernel<<<sms * 8, 512>>>(src, dst, n);
    CUDA_CHECK_LAUNCH("copy_kernel");
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    if (r >= 0) ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  CUDA_CHECK(cudaFree(src));
  CUDA_CHECK(cudaFree(dst));
  return summarize(ms, 2 * n * sizeof(int4));
}

BandwidthResult measure_h2d_pinned(size_t bytes, int reps) {
  MB_NVTX_RANGE("measure_h2d_pinned");
  void *host = nullptr, *dev = nullptr;
  CUDA_CHECK(cudaHostAlloc(&host, bytes, cudaHostAllocDefault));
  CUDA_CHECK(cudaMalloc(&dev, bytes));
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int r = -1; r < reps; ++r) {
    CUDA_CHECK(cudaEventRecord(a));
    CUDA_CHECK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    if (r >= 0) ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  CUDA_CHECK(cudaFreeHost(host));
  CUDA_CHECK(cudaFree(dev));
  return summarize(ms, bytes);
}

}  // namespace moebench::cuda
