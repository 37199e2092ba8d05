// device_info.cpp: see device_info.h. Uses the CUDA runtime when compiled in.
#include "engine/device_info.h"

#include <algorithm>

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

#ifndef MOEBENCH_CUDA_ARCHS
#define MOEBENCH_CUDA_ARCHS ""
#endif
std::string cuda_device_code() { return MOEBENCH_CUDA_ARCHS; }

std::string cuda_device_runs(const CudaDeviceInfo& d) { return cuda_device_runs(d, cuda_device_code()); }

std::string cuda_device_runs(const CudaDeviceInfo& d, const std::string& code) {
  if (d.cc_major < 8) return "compute capability " + std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor) +
                             ": below 8.0, not supported (the cpu backend runs)";
  const int cc = d.cc_major * 10 + d.cc_minor;
  std::string best_ptx;
  int best_ptx_cc = 0;
  bool parsed = false;
  size_t at = 0;
  while (at <= code.size()) {  // entries "90a-real", "80-virtual", "86" (both)
    const size_t end = std::min(code.find(',', at), code.size());
    const std::string e = code.substr(at, end - at);
    at = end + 1;
    const size_t dash = e.find('-');
    const std::string arch = e.substr(0, dash), kind = dash == std::string::npos ? "" : e.substr(dash + 1);
    int a = 0;
    size_t i = 0;
    while (i < arch.size() && arch[i] >= '0' && arch[i] <= '9') a = 10 * a + (arch[i++] - '0');
    const bool specific = i < arch.size();  // "90a": that architecture only
    if (a == 0) continue;
    parsed = true;
    if (kind != "virtual" && (specific ? a == cc : a / 10 == cc / 10 && a <= cc)) return "sm_" + arch + " code";
    if (kind != "real" && !specific && a <= cc && a > best_ptx_cc) best_ptx_cc = a, best_ptx = arch;
  }
  if (best_ptx_cc) return "compute_" + best_ptx + " PTX, compiled by the driver on first use";
  if (!parsed) return "the build's device code (" + code + ")";  // native, all: chosen by CMake
  return "no code for compute capability " + std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor) +
         " in this build (device code " + code + "; rebuild with -DCMAKE_CUDA_ARCHITECTURES=native)";
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
