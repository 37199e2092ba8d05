// significance.h: whether two sets of timing samples differ by more than their
// noise — what `compare` needs for wall-time results. Two tools, both
// deterministic for the same input:
//   - the Mann-Whitney U test (two-sided): do the samples come from one
//     distribution? Exact p-value for small samples without ties, else the normal
//     approximation with tie and continuity corrections;
//   - a percentile bootstrap confidence interval of median(b) / median(a), from a
//     fixed-seed generator (std::mt19937_64, whose sequence the standard fixes).
#pragma once
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

}  // namespace moebench::reports
