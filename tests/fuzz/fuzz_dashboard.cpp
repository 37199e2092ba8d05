// fuzz_dashboard.cpp: fuzz target for the files the dashboard opens: results files,
// Chrome traces and Google Benchmark JSON, plain or gzip-compressed (ui/model/sources.h,
// whose loaders promise never to throw: every problem becomes one error line). The input
// goes through all three loaders, as `moebench dashboard FILE` and `--trace FILE` would
// load it, and whatever loads is drawn the way the views ask for it: the runs table
// sorted by every column, the stage bars of every group, each case's charts, the trace
// timeline at its full extent, zoomed and panned, and the benchmark table's cells.
// Invariants: the loaders do not throw; an error line names the file; each frame stays
// inside what it was asked for (point budgets, pixel widths, index ranges, shares and
// scales in [0, 1]).
#include <cmath>
#include <cstdint>
#include <exception>
#include <string>

#include <fmt/format.h>

#include "common/error.h"
#include "tests/fuzz/fuzz_util.h"
#include "ui/model/bench_table.h"
#include "ui/model/case_intervals.h"
#include "ui/model/chart_frames.h"
#include "ui/model/runs_frame.h"
#include "ui/model/sources.h"
#include "ui/model/stages_frame.h"
#include "ui/model/trace_model.h"

using namespace moebench;
using namespace moebench::ui;

namespace {

constexpr size_t kMaxPoints = 64;

void check_points(const std::vector<reports::Point>& p, size_t budget, const std::string& what) {
  fuzz::check(p.size() <= budget, fmt::format("{}: {} points for a budget of {}", what, p.size(), budget));
}

bool in_unit(double v) { return v >= 0.0 && v <= 1.0; }

void draw_case(const reports::Results& r, const reports::Case& c) {
  for (int rep : {0, 1, -1, 1000}) {
    LatencyFrame l = build_latency_frame(c, rep, kMaxPoints);
    check_points(l.prefill, kMaxPoints, "latency prefill");
    check_points(l.decode, kMaxPoints, "latency decode");
    fuzz::check(l.first <= l.last && l.last <= l.n_steps, "latency frame's visible steps outside the repetition");
    LatencyFrame z = build_latency_frame(c, rep, kMaxPoints, XRange{3, 17});
    check_points(z.decode, kMaxPoints, "zoomed latency decode");
    fuzz::check(z.first <= z.last && z.last <= z.n_steps, "zoomed latency frame's steps outside the repetition");
  }
  for (int smooth : {1, 4}) {
    HitRateFrame h = build_hitrate_frame(c, kMaxPoints, smooth);
    check_points(h.overall, kMaxPoints, "hit rate");
    for (auto& p : h.overall)
      fuzz::check(std::isnan(p.y) || in_unit(p.y), fmt::format("hit rate point {} outside [0, 1]", p.y));
    for (auto& layer : h.per_layer) check_points(layer, kMaxPoints, "per-layer hit rate");
    for (double r : h.layer_hit_rate)
      fuzz::check(std::isnan(r) || in_unit(r), fmt::format("layer hit rate {} outside [0, 1]", r));
  }
  for (bool per_layer : {false, true}) {
    HeatmapFrame m = build_heatmap_frame(c, per_layer);
    fuzz::check(m.cells.size() == static_cast<size_t>(m.n_layers) * static_cast<size_t>(m.n_experts) ||
                    m.cells.empty(),
                "heatmap cells are not layers x experts");
    for (auto& cell : m.cells) {
      fuzz::check(cell.layer >= 0 && cell.layer < m.n_layers && cell.expert >= 0 && cell.expert < m.n_experts,
                  "heatmap cell outside the grid");
      fuzz::check(in_unit(cell.intensity), fmt::format("heatmap intensity {} outside [0, 1]", cell.intensity));
      fuzz::check(in_unit(cell.share), fmt::format("heatmap share {} outside [0, 1]", cell.share));
    }
  }
  MemoryFrame mem = build_memory_frame(c, kMaxPoints, case_backend(r, c));
  check_points(mem.arena, kMaxPoints, "memory arena");
  check_points(mem.device_used, kMaxPoints, "memory device");
  for (const char* key : {"decode_tok_s", "prefill_tok_s", "ttft_cold_ns", "ttft_warm_ns"}) case_interval_text(c, key);
  case_label(c);
}

void draw_results(const Sources& s) {
  const auto columns = runs_columns();
  const int total = static_cast<int>(s.all_cases().size());
  for (int col = -1; col < static_cast<int>(columns.size()); ++col)
    for (bool ascending : {true, false}) {
      RunsFrame f = build_runs_frame(s, RunsFilter{}, col, ascending);
      fuzz::check(f.total == total && static_cast<int>(f.rows.size()) == total,
                  fmt::format("runs table has {} of {} rows with no filter", f.rows.size(), total));
      for (auto& row : f.rows)
        fuzz::check(row.cells.size() == f.columns.size() && row.values.size() == f.columns.size() &&
                        s.find(row.ref) != nullptr,
                    "runs row's cells do not match the columns, or it points at no case");
    }
  RunsFilter filter;
  filter.stage = "p";
  fuzz::check(static_cast<int>(build_runs_frame(s, filter).rows.size()) <= total, "a filter adds rows");

  StagesFrame first = build_stages_frame(s);
  for (const StageGroup& g : first.groups) {
    StagesFrame f = build_stages_frame(s, g.label());
    fuzz::check(f.group >= 0 && f.group < static_cast<int>(f.groups.size()), "stage frame's group out of range");
    for (const std::string& key : f.case_keys) build_stages_frame(s, g.label(), key);
    for (auto& m : f.metrics)
      for (auto& b : m.bars) fuzz::check(b.n_cases >= 0 && b.n_cases <= f.groups[f.group].n_cases, "a bar of more cases than its group");
  }
  for (CaseRef ref : s.all_cases()) draw_case(*s.results_of(ref), *s.find(ref));
}

void draw_trace(const TraceModel& m) {
  const float width = 800.0f;
  TimeWindow full = full_window(m);
  fuzz::check(std::isfinite(full.t0_us) && std::isfinite(full.t1_us) && full.width() > 0,
              fmt::format("full window [{}, {}] is not a finite extent", full.t0_us, full.t1_us));
  TimeWindow windows[] = {full, zoom_window(full, full.t0_us + full.width() / 3, 0.01, full),
                          pan_window(zoom_window(full, full.t1_us, 0.25, full), -full.width() / 7, full)};
  for (const TimeWindow& w : windows) {
    fuzz::check(w.t0_us >= full.t0_us && w.t1_us <= full.t1_us && w.width() > 0,
                fmt::format("window [{}, {}] leaves the trace's [{}, {}]", w.t0_us, w.t1_us, full.t0_us, full.t1_us));
    TraceFrame f = build_trace_frame(m, w, width);
    fuzz::check(f.spans_visible <= m.span_count() && f.boxes.size() <= f.spans_visible,
                "trace frame has more boxes than visible spans");
    for (const TraceBox& b : f.boxes) {
      fuzz::check(b.track >= 0 && b.track < static_cast<int32_t>(m.tracks.size()), "box of no track");
      const TraceTrack& t = m.tracks[static_cast<size_t>(b.track)];
      fuzz::check(b.depth >= 0 && b.depth < t.depth_count && b.span < t.spans.size(), "box of no span");
      // A box is at least 1 px wide, so one that starts at the right edge ends a pixel past it.
      fuzz::check(b.x0 >= -0.5f && b.x0 <= b.x1 && b.x1 <= width + 1.5f,
                  fmt::format("box [{}, {}] px outside the {} px timeline", b.x0, b.x1, width));
    }
  }
}

void draw_bench(const BenchTable& t) {
  for (const BenchRow& row : t.rows) {
    interval_text(row.real_time, [](double v) { return fmt::format("{:.3g}", v); });
    interval_text(row.cpu_time, [](double v) { return fmt::format("{:.3g}", v); }, "cases");
    for (auto& [name, value] : row.counters) {
      (void)value;
      bool listed = false;
      for (auto& n : t.counter_names) listed = listed || n == name;
      fuzz::check(listed, "a row's counter " + name + " is not among the table's counters");
    }
  }
}

template <typename File>
void check_error_line(const File& f, const std::string& path) {
  fuzz::check(f.error.find(path) != std::string::npos, "an error line that does not name the file: " + f.error);
  fuzz::check(f.error.find('\n') == std::string::npos, "an error of more than one line: " + f.error);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input("dashboard.json", data, size);
  Sources s;
  try {
    s.add_results_or_benchmark(path);
    s.traces.push_back(load_trace_file(path));
  } catch (const std::exception& e) {
    fuzz::check(false, std::string("a dashboard loader threw: ") + e.what());
  }
  for (auto& f : s.results)
    if (!f.results) check_error_line(f, path);
  for (auto& b : s.benchmarks)
    if (b.table)
      draw_bench(*b.table);
    else
      check_error_line(b, path);
  const TraceFile& t = s.traces.front();
  if (t.trace)
    draw_trace(*t.trace);
  else
    check_error_line(t, path);
  s.errors();
  draw_results(s);
  return 0;
}
