// device.cpp: gpu_available / device_info / device_info_cached (see device.h).
#include "engine/cuda/device.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "common/env.h"
#include "common/error.h"
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

namespace {
// MOEBENCH_GPU_CC applied to d (the device's own properties): the capabilities it takes and
// the shared memory a block may ask for on each (A100; GA10x and AD10x cards).
void emulate_cc(DeviceInfo& d) {
  const std::string v = env_str("MOEBENCH_GPU_CC");
  if (v.empty()) return;
  struct Cc {
    const char* name;
    int major, minor, smem_optin;
  };
  static constexpr Cc kCcs[] = {{"8.0", 8, 0, 166912}, {"8.6", 8, 6, 101376}, {"8.9", 8, 9, 101376}};
  const Cc* cc = nullptr;
  for (const Cc& c : kCcs)
    if (v == c.name) cc = &c;
  if (!cc) fail("MOEBENCH_GPU_CC={}: expected 8.0, 8.6 or 8.9 (unset: the device's own)", v);
  if (cc->major * 10 + cc->minor > d.real_cc_major * 10 + d.real_cc_minor)
    fail("MOEBENCH_GPU_CC={}: above the device's own {}.{} ({}); it can only take a lower one", v, d.real_cc_major,
         d.real_cc_minor, d.name);
  d.cc_major = cc->major;
  d.cc_minor = cc->minor;
  d.smem_optin = std::min(d.smem_optin, cc->smem_optin);
  d.name += " as compute capability " + v;
}
}  // namespace

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
  d.real_cc_major = p.major;
  d.real_cc_minor = p.minor;
  if (p.major < 8)
    fail("{} is compute capability {}.{}: moebench's CUDA kernels need 8.0 or later (Ampere's bf16 tensor cores); "
         "run it with --backend cpu",
         d.name, p.major, p.minor);
  emulate_cc(d);
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

void set_dynamic_smem(const void* kernel, int bytes, const char* kernel_name) {
  const DeviceInfo& d = device_info_cached();
  if (bytes > d.smem_optin)
    fail("{}: asks for {} bytes of dynamic shared memory, above the {} bytes a block may have on {} (compute "
         "capability {}.{})",
         kernel_name, bytes, d.smem_optin, d.name, d.cc_major, d.cc_minor);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

}  // namespace moebench::cuda
