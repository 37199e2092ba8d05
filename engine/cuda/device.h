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
  int real_cc_major = 0, real_cc_minor = 0;  // the device's own (cc_* differ under MOEBENCH_GPU_CC)
};
// The current device (throws Error without one, and for a GPU below compute capability 8.0,
// whose tensor cores lack the bf16 products every kernel uses). MOEBENCH_GPU_CC=8.0|8.6|8.9 (unset: the
// device's own) makes every launch decision take that compute capability and its
// shared-memory limit (A100: 163 KiB a block; RTX 30xx/40xx, A10, L4, L40: 99 KiB): with a
// build whose device code is compute_80 PTX only (-DCMAKE_CUDA_ARCHITECTURES=80-virtual,
// which the driver compiles for the GPU it meets), a Hopper GPU then runs the code an Ampere
// or Ada GPU runs. A capability above the device's, or another value, is an Error naming it.
DeviceInfo device_info();
// Sets kernel's dynamic shared memory limit to bytes; an Error naming the kernel, the bytes
// and the device's (or MOEBENCH_GPU_CC's) limit when bytes exceed it.
void set_dynamic_smem(const void* kernel, int bytes, const char* kernel_name);
// The same, read once per device: for launch paths.
const DeviceInfo& device_info_cached();
// Lets `kernel` (a __global__ function's address) ask for as much dynamic shared memory as
// the current device's opt-in limit leaves beside the kernel's own static arrays (above that
// the attribute is refused), and returns that many bytes.
int allow_dynamic_smem(const void* kernel);

}  // namespace moebench::cuda
