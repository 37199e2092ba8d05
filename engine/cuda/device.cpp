// device.cpp: gpu_available / device_info / device_info_cached (see device.h).
#include "engine/cuda/device.h"

#include <map>
#include <mutex>

#include "engine/cuda/check.cuh"

namespace moebench::cuda {

bool gpu_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return n > 0;
}

DeviceInfo device_info() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  DeviceInfo d;
  d.name = p.name;
  d.sm_count = p.multiProcessorCount;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.total_bytes = p.totalGlobalMem;
  d.l2_bytes = static_cast<size_t>(p.l2CacheSize);
  d.smem_optin = static_cast<int>(p.sharedMemPerBlockOptin);
  return d;
}

const DeviceInfo& device_info_cached() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  static std::mutex mu;
  static std::map<int, DeviceInfo> seen;  // a map's elements stay where they are
  std::lock_guard<std::mutex> lock(mu);
  const auto it = seen.find(dev);
  if (it != seen.end()) return it->second;
  return seen.emplace(dev, device_info()).first->second;
}

int allow_dynamic_smem(const void* kernel) {
  cudaFuncAttributes fa{};
  CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
  const int cap = device_info_cached().smem_optin - static_cast<int>(fa.sharedSizeBytes);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, cap));
  return cap;
}

}  // namespace moebench::cuda
