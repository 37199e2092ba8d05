// significance.cpp: see significance.h.
#include "reports/significance.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "common/error.h"

namespace moebench::reports {

namespace {

// Exact for sizes whose product is at most this (no ties), else the normal approximation.
constexpr double kExactMaxPairs = 400;

// P(U <= u) for sizes m, n under the null hypothesis, no ties: N(i, j, k), the
// orderings of i a's and j b's where the b's beat k pairs, by the recurrence
// N(i, j, k) = N(i, j - 1, k - i) + N(i - 1, j, k).
double exact_cdf(int m, int n, double u) {
  const int max_u = m * n;
  // f[j][k]: orderings of i a's and j b's with U = k, for the current i.
  std::vector<std::vector<double>> f(static_cast<size_t>(n + 1), std::vector<double>(static_cast<size_t>(max_u + 1), 0));
  for (int j = 0; j <= n; ++j) f[j][0] = 1;  // i = 0: one ordering, U = 0
  for (int i = 1; i <= m; ++i) {
    std::vector<std::vector<double>> g(static_cast<size_t>(n + 1), std::vector<double>(static_cast<size_t>(max_u + 1), 0));
    g[0][0] = 1;  // j = 0
    for (int j = 1; j <= n; ++j)
      for (int k = 0; k <= i * j; ++k) {
        // The largest element is a b (it beats all i a's) or an a (it beats no b).
        g[j][k] = (k - i >= 0 ? g[j - 1][k - i] : 0) + f[j][k];
      }
    f = std::move(g);
  }
  double total = 0, below = 0;
  for (int k = 0; k <= max_u; ++k) {
    total += f[n][k];
    if (k <= u + 1e-9) below += f[n][k];
  }
  return below / total;
}

double median_of(std::vector<double>& v) {
  const size_t h = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h), v.end());
  double m = v[h];
  if (v.size() % 2 == 0) m = (m + *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h))) / 2;
  return m;
}

}  // namespace

UTest mann_whitney_u(const std::vector<double>& a, const std::vector<double>& b) {
  UTest t;
  const size_t m = a.size(), n = b.size();
  if (m == 0 || n == 0) return t;
  // Ranks over the pooled samples, ties sharing their average rank.
  std::vector<std::pair<double, int>> all;
  all.reserve(m + n);
  for (double x : a) all.push_back({x, 0});
  for (double x : b) all.push_back({x, 1});
  std::sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  double rank_b = 0, tie_term = 0;
  bool ties = false;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    while (j < all.size() && all[j].first == all[i].first) ++j;
    const double avg = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2;
    const double cnt = static_cast<double>(j - i);
    if (cnt > 1) ties = true;
    tie_term += cnt * cnt * cnt - cnt;
    for (size_t k = i; k < j; ++k)
      if (all[k].second == 1) rank_b += avg;
    i = j;
  }
  const double dm = static_cast<double>(m), dn = static_cast<double>(n), N = dm + dn;
  t.u = rank_b - dn * (dn + 1) / 2;
  const double mu = dm * dn / 2;
  // Complete separation: 2 of the C(m + n, m) equally likely orderings are that extreme.
  t.min_p = std::min(1.0, 2.0 / std::exp(std::lgamma(N + 1) - std::lgamma(dm + 1) - std::lgamma(dn + 1)));
  if (!ties && dm * dn <= kExactMaxPairs) {
    const double tail = std::min(t.u, dm * dn - t.u);
    t.p = std::min(1.0, 2 * exact_cdf(static_cast<int>(m), static_cast<int>(n), tail));
    return t;
  }
  const double var = dm * dn / 12 * ((N + 1) - tie_term / (N * (N - 1)));
  if (var <= 0) return t;  // every value equal: p = 1
  const double z = std::max(0.0, std::fabs(t.u - mu) - 0.5) / std::sqrt(var);
  t.p = std::min(1.0, std::erfc(z / std::sqrt(2.0)));
  return t;
}

RatioInterval bootstrap_median_ratio(const std::vector<double>& a, const std::vector<double>& b, double level,
                                     int resamples, uint64_t seed) {
  if (a.empty() || b.empty()) fail("bootstrap of a median ratio: a sample is empty");
  RatioInterval r;
  std::vector<double> x = a, y = b;
  const double ma = median_of(x);
  if (!(ma > 0)) fail("bootstrap of a median ratio: the first sample's median is {}, expected > 0", ma);
  r.ratio = median_of(y) / ma;
  std::mt19937_64 rng(seed);
  // rng() % size: the sequence is fixed by the standard (a distribution object's is not).
  auto draw = [&](const std::vector<double>& from, std::vector<double>& to) {
    for (double& v : to) v = from[static_cast<size_t>(rng() % from.size())];
  };
  std::vector<double> ratios;
  ratios.reserve(static_cast<size_t>(resamples));
  for (int i = 0; i < resamples; ++i) {
    draw(a, x);
    draw(b, y);
    const double mx = median_of(x);
    if (mx > 0) ratios.push_back(median_of(y) / mx);
  }
  if (ratios.empty()) {
    r.lo = r.hi = r.ratio;
    return r;
  }
  std::sort(ratios.begin(), ratios.end());
  const double tail = (1 - level) / 2;
  auto at = [&](double q) {
    return ratios[static_cast<size_t>(std::floor(q * static_cast<double>(ratios.size() - 1)))];
  };
  r.lo = at(tail);
  r.hi = at(1 - tail);
  return r;
}

MedianInterval median_interval(std::vector<double> samples, double level) {
  MedianInterval r;
  const int n = static_cast<int>(samples.size());
  r.n = n;
  if (n == 0) return r;
  std::sort(samples.begin(), samples.end());
  r.median = n % 2 ? samples[static_cast<size_t>(n / 2)] : (samples[static_cast<size_t>(n / 2 - 1)] + samples[static_cast<size_t>(n / 2)]) / 2;
  // pmf[i] = P(B = i), B ~ binomial(n, 1/2), in logs so large n does not overflow.
  std::vector<double> pmf(static_cast<size_t>(n + 1));
  for (int i = 0; i <= n; ++i)
    pmf[static_cast<size_t>(i)] = std::exp(std::lgamma(n + 1.0) - std::lgamma(i + 1.0) - std::lgamma(n - i + 1.0) - n * std::log(2.0));
  // [x(j), x(n + 1 - j)] covers the median with P(j <= B <= n - j); widen from the middle.
  int j = (n + 1) / 2;
  double cover = 0;
  for (; j >= 1; --j) {
    cover = 0;
    for (int i = j; i <= n - j; ++i) cover += pmf[static_cast<size_t>(i)];
    if (cover >= level) break;
  }
  if (j < 1) j = 1, cover = 1 - 2 * pmf[0];
  r.reached = cover >= level;
  r.coverage = cover;
  r.lo = samples[static_cast<size_t>(j - 1)];
  r.hi = samples[static_cast<size_t>(n - j)];
  return r;
}

}  // namespace moebench::reports
