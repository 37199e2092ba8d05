// device_info.cpp: see device_info.h. Uses the CUDA runtime when compiled in.
#include "engine/device_info.h"

#ifdef MOEBENCH_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace moebench {

bool cuda_compiled() {
#ifdef MOEBENCH_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_unavailable_reason() {
#ifdef MOEBENCH_HAVE_CUDA
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return cudaGetErrorString(e);
  return n == 0 ? "no device" : "";
#else
  return "built without CUDA";
#endif
}

std::vector<CudaDeviceInfo> cuda_devices() {
  std::vector<CudaDeviceInfo> r;
#ifdef MOEBENCH_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return r;
  }
  int drv = 0;
  cudaDriverGetVersion(&drv);
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    CudaDeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.sms = p.multiProcessorCount;
    d.memory_bytes = p.totalGlobalMem;
    d.driver = std::to_string(drv / 1000) + "." + std::to_string((drv % 1000) / 10);
    r.push_back(d);
  }
#endif
  return r;
}

}  // namespace moebench
