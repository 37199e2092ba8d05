// stats.h: the one timing-statistics primitive of moebench and the one place
// where units are turned into text. Raw samples are int64 nanoseconds; every
// figure a report prints (median, spread, percentiles) comes from summarize(),
// and every duration, size or rate is formatted by format_ns / format_bytes /
// format_rate / format_gbps, so the CLI, reports and dashboard agree.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/units.h"

namespace moebench::profiler {

// Summary of a set of raw samples (ns). Percentiles interpolate linearly
// between order statistics (numpy's default), so p50_ns == median_ns.
// An empty input gives n == 0 and every other field 0.
struct Stats {
  int64_t n = 0;
  double mean_ns = 0;
  double stddev_ns = 0;  // sample standard deviation (n-1); 0 when n < 2
  int64_t min_ns = 0;
  int64_t max_ns = 0;
  double median_ns = 0;
  double p50_ns = 0;
  double p90_ns = 0;
  double p99_ns = 0;
  int64_t sum_ns = 0;  // saturates at the int64 limits
};

Stats summarize(std::span<const int64_t> samples_ns);

// q-th percentile (q in [0, 100]) of already *sorted* samples, interpolated.
// Returns 0 for an empty input.
double percentile_sorted(std::span<const int64_t> sorted_ns, double q);
// Median of unsorted doubles (copies); 0 for an empty input.
double median(std::vector<double> values);

// "812 ns", "12.4 us", "3.21 ms", "1.52 s", "2 min 05 s". Three significant digits.
std::string format_ns(double ns);
// Binary units: "512 B", "1.50 KiB", "22.0 GiB" (the one byte formatter, common/units.h).
using moebench::format_bytes;
// A count per second with SI prefix and a unit: format_rate(1234.5, "tok/s") == "1.23 k tok/s",
// format_rate(45.6, "tok/s") == "45.6 tok/s".
std::string format_rate(double per_second, std::string_view unit);
// Bandwidth given in GB/s (1e9 bytes/s, as measured h2d_gbps / hbm_gbps): "24.1 GB/s".
std::string format_gbps(double gbps);
// A fraction as a percentage: format_percent(0.8734) == "87.3%".
std::string format_percent(double fraction);
// Relative change new/base - 1 with sign: "+4.2%", "-0.3%".
std::string format_delta(double ratio);

}  // namespace moebench::profiler
