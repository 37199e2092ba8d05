// cuda_device_test.cpp: MOEBENCH_GPU_CC (engine/cuda/device.h) makes the device info take a
// lower compute capability and that capability's shared-memory limit a block, names it, keeps
// the device's own, and refuses a value it does not know or one above the device's. Skipped
// without a GPU.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <algorithm>
#include <cstdlib>
#include <string>
#include <tuple>

#include "common/error.h"
#include "engine/cuda/device.h"

namespace cuda_device_test {

using namespace moebench;

namespace {

// Sets MOEBENCH_GPU_CC for the scope (unset for an empty value), and puts back what it was.
struct GpuCc {
  std::string was;
  bool had = false;
  explicit GpuCc(const std::string& v) {
    const char* w = std::getenv("MOEBENCH_GPU_CC");
    had = w != nullptr;
    if (had) was = w;
    if (v.empty()) unsetenv("MOEBENCH_GPU_CC");
    else setenv("MOEBENCH_GPU_CC", v.c_str(), 1);
  }
  ~GpuCc() {
    if (had) setenv("MOEBENCH_GPU_CC", was.c_str(), 1);
    else unsetenv("MOEBENCH_GPU_CC");
  }
};

std::string error_of(const std::string& v) {
  const GpuCc cc(v);
  try {
    (void)cuda::device_info();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(CudaDevice, GpuCcTakesALowerCapabilityAndItsSharedMemoryLimit) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA device test skipped";
  cuda::DeviceInfo own;
  {
    const GpuCc cc("");
    own = cuda::device_info();
  }
  EXPECT_EQ(own.cc_major, own.real_cc_major);
  EXPECT_EQ(own.cc_minor, own.real_cc_minor);
  EXPECT_GE(own.cc_major, 8);
  for (const auto& [v, major, minor, smem] : {std::tuple{"8.0", 8, 0, 166912}, std::tuple{"8.6", 8, 6, 101376},
                                              std::tuple{"8.9", 8, 9, 101376}}) {
    SCOPED_TRACE(v);
    if (major * 10 + minor > own.real_cc_major * 10 + own.real_cc_minor) {
      EXPECT_NE(std::string::npos, error_of(v).find("above the device's own")) << error_of(v);
      continue;
    }
    const GpuCc cc(v);
    const cuda::DeviceInfo d = cuda::device_info();
    EXPECT_EQ(major, d.cc_major);
    EXPECT_EQ(minor, d.cc_minor);
    EXPECT_EQ(own.real_cc_major, d.real_cc_major);
    EXPECT_EQ(own.real_cc_minor, d.real_cc_minor);
    EXPECT_EQ(std::min(own.smem_optin, smem), d.smem_optin);
    EXPECT_EQ(own.name + " as compute capability " + v, d.name);
    EXPECT_EQ(own.sm_count, d.sm_count);
  }
  for (const char* bad : {"9.0", "7.5", "8", "sm_86", "8.6 "}) {
    SCOPED_TRACE(bad);
    const std::string e = error_of(bad);
    EXPECT_NE(std::string::npos, e.find(std::string("MOEBENCH_GPU_CC=") + bad + ": expected 8.0, 8.6 or 8.9")) << e;
  }
}

}  // namespace cuda_device_test
#endif
