// device_code_test.cpp: which of a build's device code a GPU runs (cuda_device_runs), on
// any machine: the list is the build's CMAKE_CUDA_ARCHITECTURES with commas.
#include <gtest/gtest.h>

#include <string>

#include "common/units.h"
#include "engine/device_info.h"
#include "engine/host_memory.h"
#include "tests/test_util.h"

namespace moebench {
namespace {

CudaDeviceInfo gpu(int major, int minor) {
  CudaDeviceInfo d;
  d.name = "test GPU";
  d.cc_major = major;
  d.cc_minor = minor;
  return d;
}

TEST(DeviceCode, EachGpuRunsItsOwnCodeOrTheNewestPtxBelowIt) {
  const std::string dflt = "90a-real,80-virtual";  // the default build
  EXPECT_EQ("sm_90a code", cuda_device_runs(gpu(9, 0), dflt));
  EXPECT_EQ("compute_80 PTX, compiled by the driver on first use", cuda_device_runs(gpu(8, 0), dflt));
  EXPECT_EQ("compute_80 PTX, compiled by the driver on first use", cuda_device_runs(gpu(8, 9), dflt));
  EXPECT_EQ("compute_80 PTX, compiled by the driver on first use", cuda_device_runs(gpu(12, 0), dflt));
  // A cubin runs on its major's later minors; an arch-specific one (90a) on its own only.
  EXPECT_EQ("sm_86 code", cuda_device_runs(gpu(8, 9), "86-real"));
  EXPECT_EQ("sm_86 code", cuda_device_runs(gpu(8, 6), "80-virtual,86-real"));
  EXPECT_EQ("sm_80 code", cuda_device_runs(gpu(8, 6), "80"));
  EXPECT_EQ("compute_86 PTX, compiled by the driver on first use", cuda_device_runs(gpu(9, 0), "80-virtual,86"));
  EXPECT_EQ("sm_89 code", cuda_device_runs(gpu(8, 9), "80-virtual,89-real"));
  EXPECT_EQ(0u, cuda_device_runs(gpu(8, 6), "90a-real").find("no code for compute capability 8.6"));
  EXPECT_EQ(0u, cuda_device_runs(gpu(8, 0), "86-real,89-virtual").find("no code for compute capability 8.0"));
  EXPECT_EQ(0u, cuda_device_runs(gpu(7, 5), dflt).find("compute capability 7.5: below 8.0"));
  EXPECT_EQ("the build's device code (native)", cuda_device_runs(gpu(8, 9), "native"));
}

TEST(DeviceCode, TheBuildNamesItsDeviceCode) {
  if (!cuda_compiled()) {
    EXPECT_EQ("", cuda_device_code());
    return;
  }
  EXPECT_FALSE(cuda_device_code().empty());
  EXPECT_EQ(std::string::npos, cuda_device_code().find(';'));
}

// `moebench info` names the build's device code and the host's memory.
TEST(DeviceCode, InfoNamesTheDeviceCodeAndTheHostMemory) {
  test::TempDir d;
  const test::CliRun r = test::run_moebench({"info"}, d);
  ASSERT_EQ(r.code, 0) << r.err;
  const HostMemory m = host_memory();
  EXPECT_NE(r.out.find("of memory (" + m.limit + ")"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(format_bytes(static_cast<double>(m.total)) + " of memory"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(cuda_compiled() ? "cuda (compiled in; device code " + cuda_device_code() + ")"
                                        : std::string("(cuda not compiled in)")),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace moebench
