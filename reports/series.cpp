// series.cpp: see series.h.
#include "reports/series.h"

#include <algorithm>
#include <cmath>

namespace moebench::reports {

std::vector<Point> decimate(std::span<const double> y, size_t max_points) {
  max_points = std::max<size_t>(max_points, 2);
  std::vector<Point> out;
  if (y.size() <= max_points) {
    for (size_t i = 0; i < y.size(); ++i)
      if (std::isfinite(y[i])) out.push_back({static_cast<double>(i), y[i]});
    return out;
  }
  // Two points (min and max) per bucket.
  size_t buckets = max_points / 2;
  out.reserve(buckets * 2);
  for (size_t b = 0; b < buckets; ++b) {
    size_t lo = y.size() * b / buckets, hi = y.size() * (b + 1) / buckets;
    size_t imin = hi, imax = hi;
    for (size_t i = lo; i < hi; ++i) {
      if (!std::isfinite(y[i])) continue;
      if (imin == hi || y[i] < y[imin]) imin = i;
      if (imax == hi || y[i] > y[imax]) imax = i;
    }
    if (imin == hi) continue;
    size_t a = std::min(imin, imax), c = std::max(imin, imax);
    out.push_back({static_cast<double>(a), y[a]});
    if (c != a) out.push_back({static_cast<double>(c), y[c]});
  }
  return out;
}

}  // namespace moebench::reports
