// significance.h: whether two sets of timing samples differ by more than their
// noise — what `compare` needs for wall-time results. Two tools, both
// deterministic for the same input:
//   - the Mann-Whitney U test (two-sided): do the samples come from one
//     distribution? Exact p-value for small samples without ties, else the normal
//     approximation with tie and continuity corrections;
//   - a percentile bootstrap confidence interval of median(b) / median(a), from a
//     fixed-seed generator (std::mt19937_64, whose sequence the standard fixes);
//   - a distribution-free confidence interval of one sample's median (order
//     statistics), the "±" every report table shows beside a median.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace moebench::reports {

struct UTest {
  double u = 0;        // U of the second sample (count of pairs where b > a, ties 1/2)
  double p = 1;        // two-sided p-value
  // The smallest two-sided p-value these sample sizes can give (complete
  // separation): when it exceeds the significance level, no difference can be
  // shown with so few samples.
  double min_p = 1;
};
UTest mann_whitney_u(const std::vector<double>& a, const std::vector<double>& b);

struct RatioInterval {
  double ratio = 0;  // median(b) / median(a)
  double lo = 0, hi = 0;
};
// `level` 0.95 for a 95% interval; `resamples` bootstrap draws. a's median must be > 0.
RatioInterval bootstrap_median_ratio(const std::vector<double>& a, const std::vector<double>& b, double level = 0.95,
                                     int resamples = 2000, uint64_t seed = 0x6d6f6562656e6368ull);

// The median of `samples` with a distribution-free interval from order statistics:
// [x(j), x(k)] (sorted, 1-based) with j, k symmetric around the middle and the
// smallest span whose binomial(n, 1/2) coverage P(j <= B < k) reaches `level`.
// `coverage` is that exact coverage; with too few samples no pair reaches the
// level (n < 6 at 95%): then lo/hi are the minimum and maximum, `coverage` their
// coverage (1 - 2^(1-n)) and `reached` false, so a table can say the interval is
// weaker than asked. Empty samples: all zero, n = 0.
struct MedianInterval {
  double median = 0, lo = 0, hi = 0;
  double coverage = 0;
  bool reached = false;
  int n = 0;
  // Half the interval's width relative to the median (0 when the median is 0).
  double relative_half_width() const { return median != 0 ? (hi - lo) / 2 / std::abs(median) : 0; }
};
MedianInterval median_interval(std::vector<double> samples, double level = 0.95);

}  // namespace moebench::reports
