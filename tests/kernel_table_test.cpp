// kernel_table_test.cpp: the per-step kernel table of `bench --kernel-profile` and
// `profile-check`: names, durations, and each kernel's exposed time (what it adds to
// the timeline when kernels overlap, as with programmatic dependent launch).
#include <gtest/gtest.h>

#include "profiler/cupti.h"
#include "suites/kernel_table.h"

namespace kernel_table_test {

using namespace moebench;
using profiler::GpuEvent;
using profiler::GpuEventKind;

namespace {
GpuEvent kernel(const std::string& name, int64_t start, int64_t end) { return GpuEvent{GpuEventKind::kernel, name, start, end}; }

const nlohmann::json& row(const nlohmann::json& t, const std::string& name) {
  for (const auto& r : t["kernels"])
    if (r["kernel"] == name) return r;
  ADD_FAILURE() << "no row " << name;
  static const nlohmann::json none = nlohmann::json::object();
  return none;
}
}  // namespace

TEST(KernelTable, ShortNames) {
  EXPECT_EQ(suites::short_kernel_name("void moebench::cuda::(anonymous namespace)::gemv_kernel<1, 2>(float*, int)"),
            "gemv_kernel");
  EXPECT_EQ(suites::short_kernel_name("memcpy H2D"), "memcpy H2D");
}

TEST(KernelTable, ExposedTimeOfOverlappingLaunches) {
  // Two steps of a chain whose kernels start early and wait for the one before
  // (programmatic launch), a side-stream kernel under the second, and host gaps.
  //   step 1: a [0, 100), b [60, 150) (waits from 60), side [70, 120) (under b),
  //           c [140, 170)
  //   idle [170, 200)
  //   step 2: a [200, 290), b [280, 400), c [395, 420)
  std::vector<GpuEvent> ev = {kernel("a", 0, 100),   kernel("b", 60, 150),  kernel("side", 70, 120),
                              kernel("c", 140, 170), kernel("a", 200, 290), kernel("b", 280, 400),
                              kernel("c", 395, 420)};
  ev.push_back(GpuEvent{GpuEventKind::runtime_api, "cudaGraphLaunch", 0, 1000});  // host time: not counted
  ev.push_back(kernel("late", 5000, 5010));                                       // past the window
  const nlohmann::json t = suites::kernel_table(ev, 0, 1000, 2);
  EXPECT_DOUBLE_EQ(t["gpu_ns_per_step"].get<double>(), (100 + 90 + 50 + 30 + 90 + 120 + 25) / 2.0);
  EXPECT_DOUBLE_EQ(t["span_ns_per_step"].get<double>(), 420 / 2.0);
  EXPECT_DOUBLE_EQ(t["idle_ns_per_step"].get<double>(), 30 / 2.0);
  // a: all of [0, 100) and [200, 290); b: [100, 150) and [290, 400); side: nothing (b,
  // started before it, runs all through it); c: [150, 170) and [400, 420).
  EXPECT_DOUBLE_EQ(row(t, "a")["exposed_ns_per_step"].get<double>(), (100 + 90) / 2.0);
  EXPECT_DOUBLE_EQ(row(t, "side")["exposed_ns_per_step"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(row(t, "b")["exposed_ns_per_step"].get<double>(), (50 + 110) / 2.0);
  EXPECT_DOUBLE_EQ(row(t, "c")["exposed_ns_per_step"].get<double>(), (20 + 20) / 2.0);
  EXPECT_DOUBLE_EQ(row(t, "b")["ns_per_step"].get<double>(), (90 + 120) / 2.0);
  EXPECT_DOUBLE_EQ(row(t, "b")["launches_per_step"].get<double>(), 1.0);
  // Exposed times and idle gaps add up to the span.
  double exposed = 0;
  for (const auto& r : t["kernels"]) exposed += r["exposed_ns_per_step"].get<double>();
  EXPECT_DOUBLE_EQ(exposed + t["idle_ns_per_step"].get<double>(), t["span_ns_per_step"].get<double>());
  // Largest total duration first.
  EXPECT_EQ(t["kernels"][0]["kernel"], "b");
}

TEST(KernelTable, ARecordInsideAnotherAddsNothing) {
  const nlohmann::json t = suites::kernel_table({kernel("outer", 0, 100), kernel("inner", 10, 20)}, 0, 1000, 1);
  EXPECT_DOUBLE_EQ(row(t, "inner")["exposed_ns_per_step"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(row(t, "outer")["exposed_ns_per_step"].get<double>(), 100.0);
  EXPECT_DOUBLE_EQ(t["idle_ns_per_step"].get<double>(), 0.0);
}

TEST(KernelTable, ASideKernelAloneOwnsItsTime) {
  // A side-stream kernel that outlives the one it started under owns the rest.
  const nlohmann::json t = suites::kernel_table({kernel("main", 0, 100), kernel("side", 50, 130)}, 0, 1000, 1);
  EXPECT_DOUBLE_EQ(row(t, "main")["exposed_ns_per_step"].get<double>(), 100.0);
  EXPECT_DOUBLE_EQ(row(t, "side")["exposed_ns_per_step"].get<double>(), 30.0);
  EXPECT_DOUBLE_EQ(t["span_ns_per_step"].get<double>(), 130.0);
}

TEST(KernelTable, TopKeepsTheTotals) {
  const nlohmann::json t = suites::kernel_table({kernel("x", 0, 50), kernel("y", 50, 60), kernel("z", 60, 61)}, 0, 100, 1, 1);
  ASSERT_EQ(t["kernels"].size(), 1u);
  EXPECT_EQ(t["kernels"][0]["kernel"], "x");
  EXPECT_DOUBLE_EQ(t["gpu_ns_per_step"].get<double>(), 61.0);
  EXPECT_DOUBLE_EQ(t["span_ns_per_step"].get<double>(), 61.0);
}

TEST(KernelTable, NoRecords) {
  const nlohmann::json t = suites::kernel_table({}, 0, 100, 3);
  EXPECT_TRUE(t["kernels"].empty());
  EXPECT_DOUBLE_EQ(t["span_ns_per_step"].get<double>(), 0.0);
}

}  // namespace kernel_table_test
