// series.h: long series made drawable. Reports and the dashboard both draw
// 100k-point series through decimate(), which keeps each bucket's minimum and
// maximum (in order) so latency spikes survive the reduction.
#pragma once
#include <cstddef>
#include <span>
#include <vector>

namespace moebench::reports {

struct Point {
  double x;  // index in the original series
  double y;
};

// At most max_points points (max_points >= 2; smaller values act as 2). Series
// that already fit are returned point for point. Non-finite y values are skipped.
std::vector<Point> decimate(std::span<const double> y, size_t max_points);

}  // namespace moebench::reports
