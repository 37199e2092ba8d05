// stats.cpp: see stats.h.
#include "profiler/stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace moebench::profiler {

double percentile_sorted(std::span<const int64_t> s, double q) {
  if (s.empty()) return 0;
  q = std::clamp(q, 0.0, 100.0);
  double pos = q / 100.0 * static_cast<double>(s.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, s.size() - 1);
  double frac = pos - static_cast<double>(lo);
  return static_cast<double>(s[lo]) + frac * (static_cast<double>(s[hi]) - static_cast<double>(s[lo]));
}

Stats summarize(std::span<const int64_t> samples) {
  Stats st;
  if (samples.empty()) return st;
  std::vector<int64_t> v(samples.begin(), samples.end());
  std::sort(v.begin(), v.end());
  st.n = static_cast<int64_t>(v.size());
  st.min_ns = v.front();
  st.max_ns = v.back();
  // Sum in long double: 100k samples of seconds each would overflow nothing,
  // but the mean and variance want more than double's precision for ns values.
  long double sum = 0;
  int64_t isum = 0;
  bool overflow = false;
  for (int64_t x : v) {
    sum += x;
    overflow = overflow || __builtin_add_overflow(isum, x, &isum);
  }
  // Saturates instead of overflowing (undefined behaviour) on samples summing past 2^63 ns.
  st.sum_ns = !overflow ? isum : sum > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  long double mean = sum / static_cast<long double>(v.size());
  st.mean_ns = static_cast<double>(mean);
  if (v.size() > 1) {
    long double ss = 0;
    for (int64_t x : v) ss += (x - mean) * (x - mean);
    st.stddev_ns = static_cast<double>(std::sqrt(ss / static_cast<long double>(v.size() - 1)));
  }
  st.median_ns = percentile_sorted(v, 50);
  st.p50_ns = st.median_ns;
  st.p90_ns = percentile_sorted(v, 90);
  st.p99_ns = percentile_sorted(v, 99);
  return st;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string format_ns(double ns) {
  if (!std::isfinite(ns)) return "n/a";
  double a = std::fabs(ns);
  if (a < 1e3) return fmt::format("{:.0f} ns", ns);
  if (a < 1e6 - 500) return format_sig3(ns / 1e3) + " us";
  if (a < 1e9 - 5e5) return format_sig3(ns / 1e6) + " ms";
  if (a < 60e9) return format_sig3(ns / 1e9) + " s";
  int64_t total_s = static_cast<int64_t>(std::llround(a / 1e9));
  std::string sign = ns < 0 ? "-" : "";
  if (total_s < 3600) return fmt::format("{}{} min {:02} s", sign, total_s / 60, total_s % 60);
  return fmt::format("{}{} h {:02} min", sign, total_s / 3600, (total_s % 3600) / 60);
}

std::string format_rate(double per_second, std::string_view unit) {
  if (!std::isfinite(per_second)) return "n/a";
  static const char* kPrefix[] = {"", "k ", "M ", "G ", "T "};
  double v = per_second;
  int p = 0;
  while (std::fabs(v) >= 999.95 && p < 4) {
    v /= 1000;
    ++p;
  }
  return format_sig3(v) + " " + kPrefix[p] + std::string(unit);
}

std::string format_gbps(double gbps) {
  if (!std::isfinite(gbps)) return "n/a";
  if (std::fabs(gbps) >= 999.95) return format_sig3(gbps / 1000) + " TB/s";
  return format_sig3(gbps) + " GB/s";
}

std::string format_percent(double fraction) {
  if (!std::isfinite(fraction)) return "n/a";
  return fmt::format("{:.1f}%", fraction * 100);
}

std::string format_delta(double ratio) {
  if (!std::isfinite(ratio)) return "n/a";
  return fmt::format("{:+.1f}%", (ratio - 1) * 100);
}

}  // namespace moebench::profiler
