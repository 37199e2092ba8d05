// device_info.h: what CUDA devices exist (empty without CUDA or without a GPU).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moebench {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sms = 0;
  uint64_t memory_bytes = 0;
  std::string driver;
};

bool cuda_compiled();
std::vector<CudaDeviceInfo> cuda_devices();
std::string cuda_unavailable_reason();

}  // namespace moebench
