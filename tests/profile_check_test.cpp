// profile_check_test.cpp: the statistics behind `moebench profile-check`
// (profiler/integrity.h), the device bandwidths a results file keeps for the
// bound (the bound itself: bound_test.cpp), and the committed GPU evidence (reports/baselines/profile_check_*) the README cites.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "model/config.h"
#include "common/error.h"
#include "profiler/integrity.h"
#include "profiler/trace_validate.h"
#include "common/atomic_file.h"
#include "reports/results.h"
#include "suites/runner.h"
#include "test_util.h"

namespace moebench {
namespace profile_check_test {

using profiler::GpuEvent;
using profiler::GpuEventKind;

TEST(PairedOverhead, MeanSpreadAndConfidence) {
  // Off 100 ns every round; arm 101, 103, 102: +1, +3, +2 %.
  const auto o = profiler::paired_overhead({100, 100, 100}, {101, 103, 102});
  EXPECT_EQ(o.n_rounds, 3);
  EXPECT_NEAR(o.mean_pct, 2.0, 1e-9);
  EXPECT_NEAR(o.median_pct, 2.0, 1e-9);
  EXPECT_NEAR(o.stddev_pct, 1.0, 1e-9);
  EXPECT_NEAR(o.ci95_half_pct, 4.303 / std::sqrt(3.0), 1e-9);
  EXPECT_NEAR(o.arm_mean_ns, 102.0, 1e-9);
  EXPECT_NEAR(o.off_mean_ns, 100.0, 1e-9);
}

TEST(PairedOverhead, PairsRoundByRound) {
  // The reference drifts 100 -> 200; the arm is 1% above it in each round. Pairing
  // removes the drift: exactly +1% with no spread.
  const auto o = profiler::paired_overhead({100, 150, 200}, {101, 151.5, 202});
  EXPECT_NEAR(o.mean_pct, 1.0, 1e-9);
  EXPECT_NEAR(o.stddev_pct, 0.0, 1e-9);
}

TEST(PairedOverhead, BadInputIsAnError) {
  EXPECT_THROW(profiler::paired_overhead({100, 100}, {100}), Error);
  EXPECT_THROW(profiler::paired_overhead({}, {}), Error);
  EXPECT_THROW(profiler::paired_overhead({100, 0}, {100, 100}), Error);
}

TEST(PairedOverhead, StudentT) {
  EXPECT_DOUBLE_EQ(profiler::student_t975(1), 12.706);
  EXPECT_DOUBLE_EQ(profiler::student_t975(11), 2.201);
  EXPECT_DOUBLE_EQ(profiler::student_t975(30), 2.042);
  EXPECT_DOUBLE_EQ(profiler::student_t975(500), 1.96);
  const double t60 = profiler::student_t975(60);  // table value 2.000
  EXPECT_NEAR(t60, 2.000, 0.005);
  EXPECT_THROW(profiler::student_t975(0), Error);
}

GpuEvent dev(GpuEventKind k, int64_t a, int64_t b) {
  GpuEvent e;
  e.kind = k;
  e.start_ns = a;
  e.end_ns = b;
  return e;
}

TEST(StepAgreement, SumsBusyAndSpanPerWindow) {
  std::vector<GpuEvent> ev = {
      // step 0, window [0, 1000): two kernels overlapping on two streams, a copy, a memset
      dev(GpuEventKind::kernel, 100, 400), dev(GpuEventKind::kernel, 300, 500), dev(GpuEventKind::memcpy, 600, 700),
      dev(GpuEventKind::memset, 700, 750),
      // an API record inside the window: CPU time, never counted
      dev(GpuEventKind::runtime_api, 50, 900),
      // step 1, window [1000, 2000): one kernel that ends after the window (still its step)
      dev(GpuEventKind::kernel, 1900, 2100),
      // outside both windows
      dev(GpuEventKind::kernel, 2500, 2600)};
  std::reverse(ev.begin(), ev.end());  // any order
  const auto a = profiler::step_agreement(ev, {{0, 1000, 800}, {1000, 2000, 1000}});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].event_ns, 800);
  EXPECT_EQ(a[0].device_sum_ns, 300 + 200 + 100 + 50);
  EXPECT_EQ(a[0].kernel_ns, 500);
  EXPECT_EQ(a[0].copy_ns, 100);
  EXPECT_EQ(a[0].memset_ns, 50);
  EXPECT_EQ(a[0].n_kernels, 2);
  EXPECT_EQ(a[0].n_copies, 1);
  EXPECT_EQ(a[0].n_memsets, 1);
  EXPECT_EQ(a[0].busy_ns, 400 + 150);  // [100, 500) and [600, 750)
  EXPECT_EQ(a[0].span_ns, 650);        // 100 .. 750
  EXPECT_EQ(a[1].device_sum_ns, 200);
  EXPECT_EQ(a[1].span_ns, 200);
  EXPECT_EQ(a[1].busy_ns, 200);
}

TEST(StepAgreement, EmptyWindowHasZeros) {
  const auto a = profiler::step_agreement({dev(GpuEventKind::kernel, 5000, 6000)}, {{0, 1000, 700}});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].device_sum_ns, 0);
  EXPECT_EQ(a[0].span_ns, 0);
  EXPECT_EQ(a[0].busy_ns, 0);
  EXPECT_EQ(a[0].event_ns, 700);
}

TEST(RatioSummary, PercentilesAndTotals) {
  // Ratios 0.5, 1.0, 1.5, 2.0 and one skipped (den 0).
  const auto r = profiler::ratio_summary({50, 100, 150, 200, 7}, {100, 100, 100, 100, 0});
  EXPECT_EQ(r.n, 4);
  EXPECT_NEAR(r.median, 1.25, 1e-12);
  EXPECT_NEAR(r.min, 0.5, 1e-12);
  EXPECT_NEAR(r.max, 2.0, 1e-12);
  EXPECT_NEAR(r.p10, 0.65, 1e-12);
  EXPECT_NEAR(r.p90, 1.85, 1e-12);
  EXPECT_NEAR(r.of_totals, 500.0 / 400.0, 1e-12);
  EXPECT_THROW(profiler::ratio_summary({1}, {1, 2}), Error);
  EXPECT_EQ(profiler::ratio_summary({}, {}).n, 0);
}

TEST(PhysicalBound, DeviceBandwidthsSurviveTheResultsFile) {
  reports::Results r;
  r.device.kind = reports::DeviceKind::cuda;
  r.device.name = "NVIDIA H100 80GB HBM3";
  r.device.sm_count = 132;
  r.device.h2d_gbps = 55.1;
  r.device.hbm_gbps = 2990.5;
  r.device.disk_read_gbps = 1.75;
  const auto back = reports::results_from_json(reports::to_json(r), "test");
  EXPECT_DOUBLE_EQ(back.device.disk_read_gbps, 1.75);
  EXPECT_EQ(back.device.name, r.device.name);
  EXPECT_EQ(back.device.kind, reports::DeviceKind::cuda);
  EXPECT_DOUBLE_EQ(back.device.h2d_gbps, 55.1);
  EXPECT_DOUBLE_EQ(back.device.hbm_gbps, 2990.5);
}

}  // namespace profile_check_test
}  // namespace moebench

// ---- the committed GPU evidence behind the README's profiler claims ----

namespace moebench {
namespace profile_check_test {

using json = nlohmann::json;

const char* kProfileCheck = "reports/baselines/profile_check_h200_2026-11-28.json";
const char* kProfileTrace = "reports/baselines/profile_check_trace_h200_2026-11-28.json";

TEST(CommittedGpuEvidence, ProfileCheckNamesTheDeviceAndMeetsTheLimits) {
  const json j = json::parse(read_file(test::source_dir() + "/" + kProfileCheck));
  EXPECT_EQ(j.at("schema"), "moebench.profile_check");
  EXPECT_EQ(j.at("device").at("kind"), "cuda");
  EXPECT_FALSE(j.at("device").at("name").get<std::string>().empty());
  EXPECT_GT(j.at("device").at("hbm_gbps").get<double>(), 1000);  // measured, not 0
  EXPECT_GT(j.at("device").at("h2d_gbps").get<double>(), 10);
  // (a) counters: the 95% CI's upper end within 1% of the decode step, for both arms.
  for (const char* arm : {"counters", "counters_device_memory"}) {
    const json& o = j.at("overhead").at(arm);
    EXPECT_LE(o.at("mean_pct").get<double>() + o.at("ci95_half_pct").get<double>(), 1.0) << arm;
    EXPECT_EQ(o.at("verdict"), "within") << arm;
    EXPECT_GE(o.at("rounds").get<int>(), 10) << arm;
  }
  // (b) CUPTI: nothing dropped, the probe's memset and copies found, kernel + copy
  // time per decode step within 10% of the CUDA-event step time.
  const json& c = j.at("cupti");
  EXPECT_TRUE(c.at("available").get<bool>());
  EXPECT_EQ(c.at("dropped_records").get<int64_t>(), 0);
  EXPECT_TRUE(c.at("probe").at("ok").get<bool>());
  const json& a = c.at("agreement");
  EXPECT_GE(a.at("steps").get<int>(), 100);
  EXPECT_LE(std::abs(a.at("sum_over_event").at("median").get<double>() - 1.0), 0.10);
  EXPECT_TRUE(a.at("within_limit").get<bool>());
  // The per-step raw numbers are there, one per measured step.
  EXPECT_EQ(a.at("per_step").at("event_ns").size(), a.at("steps").get<size_t>());
  EXPECT_TRUE(j.at("trace").at("valid").get<bool>());
}

TEST(CommittedGpuEvidence, TraceHasCpuRangesGpuTracksAndFlows) {
  const json t = json::parse(read_file(test::source_dir() + "/" + kProfileTrace));
  const auto problems = profiler::validate_chrome_trace(t);
  EXPECT_TRUE(problems.empty()) << problems.size() << " problems, first: " << (problems.empty() ? "" : problems[0]);
  int64_t cpu_ranges = 0, kernels = 0, copies = 0, flows = 0;
  bool kernel_track = false, copy_track = false;
  for (const json& e : t.at("traceEvents")) {
    const std::string ph = e.at("ph");
    if (ph == "s") ++flows;
    if (ph == "M" && e.at("name") == "thread_name" && e.at("pid").get<int>() >= 100) {
      const std::string n = e.at("args").at("name");
      kernel_track = kernel_track || n.find("copies") == std::string::npos;
      copy_track = copy_track || n.find("copies") != std::string::npos;
    }
    if (ph != "X") continue;
    const std::string cat = e.value("cat", "");
    if (e.at("pid").get<int>() == 1 && (cat == "layer" || cat == "attention" || cat == "router")) ++cpu_ranges;
    if (cat == "kernel") ++kernels;
    if (cat == "memcpy") ++copies;
  }
  EXPECT_GT(cpu_ranges, 0);
  EXPECT_GT(kernels, 100);
  EXPECT_GT(copies, 0);
  EXPECT_GT(flows, 100);
  EXPECT_TRUE(kernel_track && copy_track);
}

}  // namespace profile_check_test
}  // namespace moebench
