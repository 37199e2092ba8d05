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
// The targets this build's device code was compiled for, as CMAKE_CUDA_ARCHITECTURES names
// them with commas ("90a-real,80-virtual": Hopper's code ahead of time, compute_80 PTX that
// the driver compiles for any other GPU from Ampere on); empty without CUDA.
std::string cuda_device_code();
// How device d runs this build: "sm_90a code", "compute_80 PTX, compiled by the driver on
// first use", or why it cannot ("compute capability 7.5: below 8.0").
std::string cuda_device_runs(const CudaDeviceInfo& d);
// The same for a build whose device code is `code` (that list's format).
std::string cuda_device_runs(const CudaDeviceInfo& d, const std::string& code);
std::vector<CudaDeviceInfo> cuda_devices();
std::string cuda_unavailable_reason();

}  // namespace moebench
