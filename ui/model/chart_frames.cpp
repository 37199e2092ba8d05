// chart_frames.cpp: see chart_frames.h.
#include "ui/model/chart_frames.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "profiler/stats.h"

namespace moebench::ui {

namespace {

// Decimates y[first, last) and shifts x back to indices of the whole series.
std::vector<reports::Point> decimate_range(const std::vector<double>& y, size_t first, size_t last, size_t max_points) {
  if (first >= last) return {};
  auto pts = reports::decimate(std::span<const double>(y.data() + first, last - first), max_points);
  for (auto& p : pts) p.x += static_cast<double>(first);
  return pts;
}

}  // namespace

LatencyFrame build_latency_frame(const reports::Case& c, int repetition, size_t max_points, XRange range) {
  LatencyFrame f;
  f.n_repetitions = static_cast<int>(c.samples.size());
  if (c.samples.empty()) {
    f.note = c.status == reports::CaseStatus::failed ? "the case failed: " + c.error : "no repetitions in this case";
    return f;
  }
  f.repetition = std::clamp(repetition, 0, f.n_repetitions - 1);
  const reports::Repetition& r = c.samples[static_cast<size_t>(f.repetition)];
  if (r.phase.size() != r.latency_ns.size()) {
    f.note = fmt::format("repetition {} has {} latencies but {} phases", f.repetition, r.latency_ns.size(), r.phase.size());
    return f;
  }
  f.n_steps = r.latency_ns.size();
  f.first = static_cast<size_t>(std::clamp(range.x0, 0.0, static_cast<double>(f.n_steps)));
  f.last = range.x1 < 0 ? f.n_steps : static_cast<size_t>(std::clamp(std::ceil(range.x1), 0.0, static_cast<double>(f.n_steps)));
  if (f.last < f.first) f.last = f.first;
  std::vector<double> pre(f.n_steps, kNaN), dec(f.n_steps, kNaN);
  std::vector<int64_t> decode_ns;
  for (size_t i = 0; i < f.n_steps; ++i) {
    double v = static_cast<double>(r.latency_ns[i]);
    if (r.phase[i] == reports::Phase::prefill) {
      pre[i] = v;
    } else {
      dec[i] = v;
      decode_ns.push_back(r.latency_ns[i]);
      if (i >= f.first && i < f.last) f.decode_y_max_ns = std::max(f.decode_y_max_ns, v);
    }
    if (i >= f.first && i < f.last) f.y_max_ns = std::max(f.y_max_ns, v);
  }
  f.prefill = decimate_range(pre, f.first, f.last, max_points);
  f.decode = decimate_range(dec, f.first, f.last, max_points);
  profiler::Stats s = profiler::summarize(decode_ns);
  f.p50_ns = s.p50_ns;
  f.p90_ns = s.p90_ns;
  f.p99_ns = s.p99_ns;
  if (f.n_steps == 0) f.note = "the repetition has no steps";
  return f;
}

namespace {
// The mean of the last `window` values that are numbers (a step with no value, NaN, is
// left out rather than turning every later mean into NaN); NaN where the window has none.
std::vector<double> trailing_mean(const std::vector<double>& y, int window) {
  if (window <= 1) return y;
  const size_t w = static_cast<size_t>(window);
  std::vector<double> out(y.size());
  double sum = 0;
  size_t count = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isnan(y[i])) sum += y[i], ++count;
    if (i >= w && !std::isnan(y[i - w])) sum -= y[i - w], --count;
    out[i] = count > 0 ? sum / static_cast<double>(count) : kNaN;
  }
  return out;
}
}  // namespace

HitRateFrame build_hitrate_frame(const reports::Case& c, size_t max_points, int smooth) {
  HitRateFrame f;
  const auto& h = c.hit_rate;
  f.n_steps = h.overall.size();
  f.overall = reports::decimate(trailing_mean(h.overall, smooth), max_points);
  for (auto& row : h.per_layer) f.per_layer.push_back(reports::decimate(trailing_mean(row, smooth), max_points));
  const auto& e = c.experts;
  size_t layers = std::max(e.hits_per_layer.size(), h.per_layer.size());
  for (size_t l = 0; l < layers; ++l) {
    double rate = kNaN;
    if (l < e.hits_per_layer.size() && l < e.misses_per_layer.size()) {
      // In double: two counters a file gives can overflow int64 summed.
      double n = static_cast<double>(e.hits_per_layer[l]) + static_cast<double>(e.misses_per_layer[l]);
      if (n > 0) rate = static_cast<double>(e.hits_per_layer[l]) / n;
    }
    f.layer_hit_rate.push_back(rate);
  }
  if (h.overall.empty()) f.note = "no hit-rate series in this case (no expert cache, or not recorded)";
  return f;
}

HeatmapFrame build_heatmap_frame(const reports::Case& c, bool per_layer_scale) {
  HeatmapFrame f;
  const auto& u = c.experts.usage;
  if (u.empty()) {
    f.note = "no layer x expert usage in this case";
    return f;
  }
  f.n_layers = static_cast<int>(u.size());
  f.n_experts = static_cast<int>(u[0].size());
  for (size_t l = 0; l < u.size(); ++l) {
    if (static_cast<int>(u[l].size()) != f.n_experts) {
      f.note = fmt::format("usage row {} has {} experts, row 0 has {}", l, u[l].size(), f.n_experts);
      f.n_layers = f.n_experts = 0;
      return f;
    }
    for (int64_t v : u[l]) f.max_count = std::max(f.max_count, v);
  }
  f.cells.reserve(static_cast<size_t>(f.n_layers) * static_cast<size_t>(f.n_experts));
  for (int l = 0; l < f.n_layers; ++l) {
    const auto& row = u[static_cast<size_t>(l)];
    // The share in double: a file's counts may be anything up to 2^63 (found by fuzz_dashboard).
    double sum = 0;
    int64_t row_max = 0;
    for (int64_t v : row) {
      sum += static_cast<double>(v);
      row_max = std::max(row_max, v);
    }
    for (int e = 0; e < f.n_experts; ++e) {
      HeatCell cell;
      cell.layer = l;
      cell.expert = e;
      cell.count = row[static_cast<size_t>(e)];
      cell.share = sum > 0 ? static_cast<double>(cell.count) / sum : 0;
      int64_t scale = per_layer_scale ? row_max : f.max_count;
      cell.intensity = scale > 0 ? static_cast<double>(cell.count) / static_cast<double>(scale) : 0;
      f.cells.push_back(cell);
    }
  }
  return f;
}

MemoryFrame build_memory_frame(const reports::Case& c, size_t max_points, const std::string& backend) {
  MemoryFrame f;
  const auto& m = c.memory;
  f.arena_peak_bytes = m.arena_peak_bytes;
  f.device_used_peak_bytes = m.device_used_peak_bytes;
  f.host_pinned_bytes = m.host_pinned_bytes;
  f.allocation_count = m.allocation_count;
  if (m.timeline.empty()) {
    if (backend == "cpu")
      f.note = "no memory timeline in this case: the CPU backend has no device arena";
    else if (c.suite == "bench")
      f.note = fmt::format("no memory timeline in this case: it ran on the {} backend, but moebench bench records "
                           "no memory samples (moebench run does)", backend);
    else
      f.note = fmt::format("no memory timeline in this case: it ran on the {} backend but its results carry no memory samples",
                           backend);
    return f;
  }
  std::vector<double> arena, dev, t;
  bool any_device = false;
  for (auto& p : m.timeline) {
    arena.push_back(static_cast<double>(p.arena_bytes));
    dev.push_back(static_cast<double>(p.device_used_bytes));
    t.push_back(static_cast<double>(p.t_ns));
    any_device = any_device || p.device_used_bytes > 0;
    f.y_max_bytes = std::max({f.y_max_bytes, arena.back(), dev.back()});
    f.t_max_ns = std::max(f.t_max_ns, t.back());
  }
  // Decimate by index, then put time on x.
  auto to_time = [&](std::vector<reports::Point> pts) {
    for (auto& p : pts) p.x = t[static_cast<size_t>(p.x)];
    return pts;
  };
  f.arena = to_time(reports::decimate(arena, max_points));
  if (any_device) f.device_used = to_time(reports::decimate(dev, max_points));
  return f;
}

}  // namespace moebench::ui
