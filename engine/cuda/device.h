// device.h: is there a GPU, and what is it. Host C++ (no kernels).
#pragma once
#include <string>

namespace moebench::cuda {

// True when the CUDA runtime sees at least one device (never throws: no driver is false).
bool gpu_available();

struct DeviceInfo {
  std::string name;
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;
  size_t total_bytes = 0;
  size_t l2_bytes = 0;
  int smem_optin = 0;  // shared memory a block may ask for, bytes (cudaFuncSetAttribute's limit)
};
// The current device (throws Error without one).
DeviceInfo device_info();
// The same, read once per device: for launch paths.
const DeviceInfo& device_info_cached();
// Lets `kernel` (a __global__ function's address) ask for as much dynamic shared memory as
// the current device's opt-in limit leaves beside the kernel's own static arrays (above that
// the attribute is refused), and returns that many bytes.
int allow_dynamic_smem(const void* kernel);

}  // namespace moebench::cuda
