// chart_frames.h: the plain data behind the chart views of one case — polylines
// (decimated with reports::decimate, so 100k-step series stay fluid), percentile
// marks, heatmap cells — computed without ImGui and drawn by ui/views/.
// A series that is missing or inconsistent leaves its points empty and says why
// in `note`; nothing here throws on file content.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "reports/results.h"
#include "reports/series.h"

namespace moebench::ui {

// A visible range of the x axis; x1 < 0 means "to the end".
struct XRange {
  double x0 = 0;
  double x1 = -1;
};

// Per-step latency of one repetition: x = step index, y = ns.
struct LatencyFrame {
  int repetition = 0;     // the one shown
  int n_repetitions = 0;
  size_t n_steps = 0;     // of the shown repetition
  size_t first = 0, last = 0;        // visible step range [first, last)
  std::vector<reports::Point> prefill;  // (<= max_points) x = step, y = latency ns
  std::vector<reports::Point> decode;
  double p50_ns = 0, p90_ns = 0, p99_ns = 0;  // decode steps of the shown repetition
  double y_max_ns = 0;                        // largest latency in the visible range
  double decode_y_max_ns = 0;                 // largest decode latency in the visible range
  std::string note;                           // why something is missing
};
LatencyFrame build_latency_frame(const reports::Case& c, int repetition, size_t max_points, XRange range = {});

// Expert-cache hit rate over steps: the overall series and one per layer.
struct HitRateFrame {
  size_t n_steps = 0;
  std::vector<reports::Point> overall;                 // x = step, y in [0, 1]
  std::vector<std::vector<reports::Point>> per_layer;  // (n_layers)
  std::vector<double> layer_hit_rate;  // (n_layers) from the per-layer counters; NaN if absent
  std::string note;
};
// smooth > 1: each point is the mean of the last `smooth` steps (per-step rates of
// a small model are multiples of 1/accesses and jump; the trend is what matters).
HitRateFrame build_hitrate_frame(const reports::Case& c, size_t max_points, int smooth = 1);

struct HeatCell {
  int layer = 0;
  int expert = 0;
  int64_t count = 0;      // token -> expert assignments
  double share = 0;       // count / sum of the layer's row
  double intensity = 0;   // colour scale in [0, 1]: count / row max (per layer) or / global max
};
struct HeatmapFrame {
  int n_layers = 0, n_experts = 0;
  std::vector<HeatCell> cells;  // (n_layers, n_experts) row-major
  int64_t max_count = 0;
  std::string note;
};
HeatmapFrame build_heatmap_frame(const reports::Case& c, bool per_layer_scale);

// Memory over time: x = t_ns since the case started, y = bytes.
struct MemoryFrame {
  std::vector<reports::Point> arena;
  std::vector<reports::Point> device_used;  // empty on CPU (all zero)
  double t_max_ns = 0;
  double y_max_bytes = 0;
  int64_t arena_peak_bytes = 0, device_used_peak_bytes = 0, host_pinned_bytes = 0;
  std::optional<int64_t> allocation_count;
  std::string note;
};
// `backend` (sources.h case_backend: "cpu", "cuda") words the note when the case
// has no timeline: the CPU backend has no device arena; a CUDA case just recorded none.
MemoryFrame build_memory_frame(const reports::Case& c, size_t max_points, const std::string& backend);

}  // namespace moebench::ui
