// html.h: a self-contained HTML report of a results file: inline CSS, inline
// SVG charts, no scripts and no network references, so it opens from disk.
// Contents: run/device/model header, the summary table (fields.h), bars of
// decode tok/s and TTFT per case, then per case its latency chart
// (decimated), hit rate over tokens, memory timeline and layer x expert heatmap.
#pragma once
#include <string>

#include "reports/results.h"

namespace moebench::reports {

// Most points drawn per line chart (decimate() keeps spikes).
inline constexpr size_t kMaxChartPoints = 800;

std::string render_html(const Results& r);

}  // namespace moebench::reports
