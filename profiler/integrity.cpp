// integrity.cpp: see integrity.h.
#include "profiler/integrity.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "profiler/stats.h"

namespace moebench::profiler {

double student_t975(int dof) {
  // t(0.975, dof) for dof = 1..30.
  static const double t[30] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                               2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                               2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  if (dof < 1) fail("student_t975: degrees of freedom {} must be at least 1", dof);
  if (dof <= 30) return t[dof - 1];
  if (dof >= 120) return 1.96;
  // Between 30 (2.042) and 120 (1.980 at 120, 1.96 beyond): linear in 1/dof.
  const double w = (1.0 / dof - 1.0 / 120) / (1.0 / 30 - 1.0 / 120);
  return 1.980 + w * (2.042 - 1.980);
}

PairedOverhead paired_overhead(const std::vector<double>& off_round_ns, const std::vector<double>& arm_round_ns) {
  if (off_round_ns.size() != arm_round_ns.size())
    fail("paired_overhead: {} reference rounds but {} arm rounds", off_round_ns.size(), arm_round_ns.size());
  PairedOverhead o;
  o.n_rounds = static_cast<int>(off_round_ns.size());
  if (o.n_rounds == 0) fail("paired_overhead: no rounds");
  std::vector<double> d;  // (n_rounds) paired differences in %
  for (size_t i = 0; i < off_round_ns.size(); ++i) {
    if (!(off_round_ns[i] > 0)) fail("paired_overhead: reference round {} has mean step {} ns", i, off_round_ns[i]);
    if (!(arm_round_ns[i] > 0)) fail("paired_overhead: arm round {} has mean step {} ns", i, arm_round_ns[i]);
    d.push_back((arm_round_ns[i] - off_round_ns[i]) / off_round_ns[i] * 100.0);
    o.arm_mean_ns += arm_round_ns[i];
    o.off_mean_ns += off_round_ns[i];
  }
  const double n = static_cast<double>(d.size());
  o.arm_mean_ns /= n;
  o.off_mean_ns /= n;
  for (double x : d) o.mean_pct += x;
  o.mean_pct /= n;
  if (d.size() >= 2) {
    double ss = 0;
    for (double x : d) ss += (x - o.mean_pct) * (x - o.mean_pct);
    o.stddev_pct = std::sqrt(ss / (n - 1));
    o.ci95_half_pct = student_t975(o.n_rounds - 1) * o.stddev_pct / std::sqrt(n);
  }
  o.median_pct = median(d);
  return o;
}

std::vector<StepAgreement> step_agreement(const std::vector<GpuEvent>& events, const std::vector<StepWindow>& steps) {
  // Device events sorted by start, so each window is a contiguous run (binary search).
  std::vector<const GpuEvent*> dev;  // (n_device_events)
  for (const auto& e : events)
    if (e.kind == GpuEventKind::kernel || e.kind == GpuEventKind::memcpy || e.kind == GpuEventKind::memset)
      dev.push_back(&e);
  std::sort(dev.begin(), dev.end(), [](const GpuEvent* a, const GpuEvent* b) { return a->start_ns < b->start_ns; });
  std::vector<StepAgreement> out;
  out.reserve(steps.size());
  for (const StepWindow& w : steps) {
    StepAgreement a;
    a.event_ns = w.event_ns;
    auto it = std::lower_bound(dev.begin(), dev.end(), w.cpu_start_ns,
                               [](const GpuEvent* e, int64_t t) { return e->start_ns < t; });
    std::vector<GpuEvent> in;  // copies of this window's events, for gpu_busy_ns
    int64_t first = 0, last = 0;
    for (; it != dev.end() && (*it)->start_ns < w.cpu_end_ns; ++it) {
      const GpuEvent& e = **it;
      const int64_t d = std::max<int64_t>(0, e.end_ns - e.start_ns);
      a.device_sum_ns += d;
      if (e.kind == GpuEventKind::kernel) a.kernel_ns += d, ++a.n_kernels;
      else if (e.kind == GpuEventKind::memcpy) a.copy_ns += d, ++a.n_copies;
      else a.memset_ns += d, ++a.n_memsets;
      if (in.empty()) first = e.start_ns, last = e.end_ns;
      last = std::max(last, e.end_ns);
      in.push_back(e);
    }
    if (!in.empty()) {
      a.span_ns = last - first;
      a.busy_ns = gpu_busy_ns(in, first, last);
    }
    out.push_back(a);
  }
  return out;
}

RatioSummary ratio_summary(const std::vector<int64_t>& num, const std::vector<int64_t>& den) {
  if (num.size() != den.size()) fail("ratio_summary: {} numerators but {} denominators", num.size(), den.size());
  RatioSummary s;
  std::vector<double> r;
  int64_t sn = 0, sd = 0;
  for (size_t i = 0; i < num.size(); ++i) {
    if (den[i] <= 0) continue;
    r.push_back(static_cast<double>(num[i]) / static_cast<double>(den[i]));
    sn += num[i];
    sd += den[i];
  }
  s.n = static_cast<int64_t>(r.size());
  if (r.empty()) return s;
  std::sort(r.begin(), r.end());
  auto pct = [&r](double q) {
    const double pos = q / 100.0 * static_cast<double>(r.size() - 1);
    const size_t lo = static_cast<size_t>(pos);
    const size_t hi = std::min(lo + 1, r.size() - 1);
    return r[lo] + (pos - static_cast<double>(lo)) * (r[hi] - r[lo]);
  };
  s.median = pct(50);
  s.p10 = pct(10);
  s.p90 = pct(90);
  s.min = r.front();
  s.max = r.back();
  s.of_totals = static_cast<double>(sn) / static_cast<double>(sd);
  return s;
}

}  // namespace moebench::profiler
