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
};
// The current device (throws Error without one).
DeviceInfo device_info();

}  // namespace moebench::cuda
