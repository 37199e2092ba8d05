// svg.h: small inline-SVG charts for the self-contained HTML report: grouped
// horizontal bars, line charts with reference lines, and a heatmap. Output is
// a complete <svg> element; every string that goes in is escaped here.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "reports/series.h"

namespace moebench::reports::svg {

// Escapes & < > " ' for use in HTML/SVG text and attribute values.
std::string escape(std::string_view s);

using Formatter = std::string (*)(double);

struct BarSeries {
  std::string name;            // legend entry
  std::vector<double> values;  // (n_labels); NaN draws no bar
  std::string color;           // CSS colour, e.g. "#4c78a8"
};
// One row per label, one bar per series in that row.
std::string bar_chart(const std::string& title, const std::vector<std::string>& labels,
                      const std::vector<BarSeries>& series, Formatter fmt_value);

struct LineSeries {
  std::string name;
  std::vector<Point> points;  // already decimated
  std::string color;
  bool markers = false;       // circles instead of a polyline
};
struct RefLine {
  std::string name;  // "p50"
  double y;
  std::string color;
};
// x is the step index; y axis from 0 (or y_min if given finite) to the max.
std::string line_chart(const std::string& title, const std::vector<LineSeries>& series,
                       const std::vector<RefLine>& refs, const std::string& x_label, Formatter fmt_y,
                       double y_max_fixed = -1);

// Rows x cols counts; colour scales linearly from 0 to the maximum.
std::string heatmap(const std::string& title, const std::vector<std::vector<int64_t>>& m,
                    const std::string& row_label, const std::string& col_label);

}  // namespace moebench::reports::svg
