// dashboard_test.cpp: the dashboard's frame model (ui/model/) and its ImGui
// views (ui/views/) with no display and no GPU. Results files are written by the
// test — from the reports fixture (known inputs, exact figures) and from a real
// CPU engine run through the live runner — then loaded like the dashboard loads
// them; the frames (rows, bars, heatmap cells, polylines, trace boxes) are
// checked, and broken files must give an error line, never a crash. The views
// are run for a few frames in an ImGui context with no backend (null renderer).
#include <gtest/gtest.h>

#ifdef MOEBENCH_HAVE_UI

#include <imgui.h>
#include <zlib.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>
#include <thread>

#include "common/error.h"
#include "profiler/chrome_trace.h"
#include "profiler/stats.h"
#include "common/atomic_file.h"
#include "reports/fields.h"
#include "results_fixture.h"
#include "test_util.h"
#include "ui/model/bench_table.h"
#include "ui/model/case_intervals.h"
#include "ui/model/chart_frames.h"
#include "ui/model/file_text.h"
#include "ui/model/layout.h"
#include "ui/model/live_runner.h"
#include "ui/model/runs_frame.h"
#include "ui/model/sources.h"
#include "ui/model/stages_frame.h"
#include "ui/model/trace_model.h"
#include "ui/views/dashboard.h"

namespace dashboard_test {

using namespace moebench;
using namespace moebench::ui;
using moebench::test::TempDir;
namespace fx = moebench::test;

namespace {

// Four stages of one case, decode getting faster stage by stage, written to a file.
reports::Results stage_results() {
  reports::Results r = fx::make_results();
  r.cases.clear();
  const char* stages[] = {"P2", "baseline", "P1", "P0"};  // out of order on purpose
  const int64_t decode_ns[] = {500'000, 40'000'000, 4'000'000, 10'000'000};
  for (int i = 0; i < 4; ++i) r.cases.push_back(fx::make_case("stages", "short", stages[i], 3, 32, decode_ns[i]));
  r.cases[0].settings.knobs["cache_policy"] = "prefetch";
  return r;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

Sources load(const std::vector<std::string>& paths) {
  Sources s;
  for (auto& p : paths) s.results.push_back(load_results_file(p));
  return s;
}

int column(const RunsFrame& f, const std::string& key) {
  for (size_t i = 0; i < f.columns.size(); ++i)
    if (f.columns[i].key == key) return static_cast<int>(i);
  return -1;
}

const StageMetric& metric(const StagesFrame& f, const std::string& key) {
  for (auto& m : f.metrics)
    if (m.key == key) return m;
  throw std::runtime_error("no metric " + key);
}

// Runs `frames` ImGui frames of a dashboard with no backend; returns vertices drawn.
int render_headless(Dashboard& d, int frames) {
  ImGuiContext* ctx = ImGui::CreateContext();
  ImGuiIO& io = ImGui::GetIO();
  io.IniFilename = nullptr;
  io.DisplaySize = ImVec2(1600, 1000);
  io.DeltaTime = 1.0f / 60;
  unsigned char* pixels = nullptr;
  int w = 0, h = 0;
  io.Fonts->GetTexDataAsRGBA32(&pixels, &w, &h);  // builds the font atlas
  int vertices = 0;
  for (int i = 0; i < frames; ++i) {
    ImGui::NewFrame();
    d.frame();
    ImGui::Render();
    vertices = ImGui::GetDrawData()->TotalVtxCount;
  }
  ImGui::DestroyContext(ctx);
  return vertices;
}

}  // namespace

TEST(DashboardFrames, RunsTableRowsFiltersAndSort) {
  TempDir dir;
  reports::save_results(dir.str("a.json"), fx::make_results());
  reports::save_results(dir.str("b.json"), stage_results());
  Sources s = load({dir.str("a.json"), dir.str("b.json")});
  ASSERT_TRUE(s.errors().empty());

  RunsFrame all = build_runs_frame(s, {});
  EXPECT_EQ(all.total, 7);
  ASSERT_EQ(all.rows.size(), 7u);
  // Every summary column of the reports is in the table, after the identity columns.
  for (auto& c : reports::summary_columns()) EXPECT_GE(column(all, c.key), 0) << c.key;
  int tok = column(all, "decode_tok_s"), stage = column(all, "stage"), policy = column(all, "policy");
  // Timings read median ± interval (n = repetitions), the median the stored aggregate;
  // other cells are the same text the reports print.
  const reports::Case& first = *s.find(all.rows[0].ref);
  const std::string& tok_cell = all.rows[0].cells[static_cast<size_t>(tok)];
  EXPECT_EQ(tok_cell, case_interval_text(first, "decode_tok_s"));
  EXPECT_NE(tok_cell.find(profiler::format_rate(first.aggregates.decode_tok_s, "tok/s") + " ±"), std::string::npos) << tok_cell;
  EXPECT_NE(tok_cell.find("(n=" + std::to_string(first.samples.size())), std::string::npos) << tok_cell;
  auto iv = case_interval(first, "decode_tok_s");
  ASSERT_TRUE(iv.has_value());
  EXPECT_DOUBLE_EQ(iv->median, first.aggregates.decode_tok_s);
  EXPECT_EQ(iv->n, static_cast<int>(first.samples.size()));
  int hit = column(all, "hit_rate");
  for (auto& c : reports::summary_columns())
    if (std::string(c.key) == "hit_rate") {
      EXPECT_EQ(all.rows[0].cells[static_cast<size_t>(hit)], c.text(first));
    }
  EXPECT_DOUBLE_EQ(all.rows[0].values[static_cast<size_t>(tok)], first.aggregates.decode_tok_s);
  EXPECT_EQ(all.rows[0].cells[0], "a.json");

  RunsFilter by_stage;
  by_stage.stage = "p1";  // case-insensitive
  RunsFrame p1 = build_runs_frame(s, by_stage);
  ASSERT_EQ(p1.rows.size(), 1u);
  EXPECT_EQ(p1.rows[0].cells[static_cast<size_t>(stage)], "P1");
  EXPECT_EQ(p1.total, 7);

  RunsFilter by_policy;
  by_policy.policy = "prefetch";
  by_policy.device = "test gpu";
  by_policy.suite = "stages";
  RunsFrame pf = build_runs_frame(s, by_policy);
  ASSERT_EQ(pf.rows.size(), 1u);
  EXPECT_EQ(pf.rows[0].cells[static_cast<size_t>(policy)], "prefetch");
  RunsFilter none;
  none.model = "mixtral";
  EXPECT_TRUE(build_runs_frame(s, none).rows.empty());

  RunsFrame sorted = build_runs_frame(s, {}, tok, /*ascending=*/false);
  for (size_t i = 1; i < sorted.rows.size(); ++i)
    EXPECT_GE(sorted.rows[i - 1].values[static_cast<size_t>(tok)], sorted.rows[i].values[static_cast<size_t>(tok)]);
  EXPECT_EQ(sorted.rows.front().cells[static_cast<size_t>(stage)], "P2");  // 0.5 ms decode steps: fastest
}

TEST(DashboardFrames, FailedCaseSortsLastAndKeepsItsError) {
  TempDir dir;
  reports::Results r = stage_results();
  r.cases[1].status = reports::CaseStatus::failed;
  r.cases[1].error = "out of device memory";
  r.cases[1].samples.clear();
  r.cases[1].aggregates = {};
  reports::save_results(dir.str("r.json"), r);
  Sources s = load({dir.str("r.json")});
  int tok = runs_column_index("decode_tok_s");
  for (bool asc : {true, false}) {
    RunsFrame f = build_runs_frame(s, {}, tok, asc);
    ASSERT_EQ(f.rows.size(), 4u);
    EXPECT_TRUE(f.rows.back().failed);
    EXPECT_EQ(f.rows.back().error, "out of device memory");
    EXPECT_TRUE(std::isnan(f.rows.back().values[static_cast<size_t>(tok)]));
  }
}

TEST(DashboardFrames, StageBarsInStageOrderWithBound) {
  TempDir dir;
  reports::Results r = stage_results();
  reports::save_results(dir.str("b.json"), r);
  Sources s = load({dir.str("b.json")});
  StagesFrame f = build_stages_frame(s);
  ASSERT_EQ(f.stages, (std::vector<std::string>{"baseline", "P0", "P1", "P2"}));
  EXPECT_EQ(f.case_keys, (std::vector<std::string>{"stages/short"}));
  ASSERT_EQ(f.metrics.size(), 6u);
  const StageMetric& tok = metric(f, "decode_tok_s");
  ASSERT_EQ(tok.bars.size(), 4u);
  const reports::Case& baseline = r.cases[1];
  const reports::Case& p2 = r.cases[0];
  EXPECT_EQ(tok.bars[0].stage, "baseline");
  EXPECT_DOUBLE_EQ(tok.bars[0].value, baseline.aggregates.decode_tok_s);
  EXPECT_DOUBLE_EQ(tok.bars[3].value, p2.aggregates.decode_tok_s);
  EXPECT_DOUBLE_EQ(tok.max_value, p2.aggregates.decode_tok_s);
  ASSERT_TRUE(tok.bars[3].bound_percent.has_value());
  EXPECT_DOUBLE_EQ(*tok.bars[3].bound_percent, p2.bound->percent);
  // One case per bar: its repetitions' interval, the median the stored figure.
  EXPECT_EQ(tok.bars[3].text.rfind(profiler::format_rate(p2.aggregates.decode_tok_s, "tok/s") + " ±", 0), 0u) << tok.bars[3].text;
  EXPECT_NE(tok.bars[3].text.find("(3 reps"), std::string::npos) << tok.bars[3].text;
  ASSERT_TRUE(tok.bars[3].interval.has_value());
  EXPECT_DOUBLE_EQ(tok.bars[3].interval->median, p2.aggregates.decode_tok_s);
  EXPECT_TRUE(tok.higher_is_better);
  // Bars of the other metrics have no bound, and the same values as the reports' columns.
  const StageMetric& cold = metric(f, "ttft_cold_ns");
  EXPECT_FALSE(cold.higher_is_better);
  EXPECT_FALSE(cold.bars[0].bound_percent.has_value());
  EXPECT_DOUBLE_EQ(cold.bars[0].value, baseline.aggregates.ttft_cold_ns);
  EXPECT_DOUBLE_EQ(metric(f, "hit_rate").bars[2].value, r.cases[2].aggregates.hit_rate);
  EXPECT_DOUBLE_EQ(metric(f, "memory_peak_bytes").bars[1].value,
                   static_cast<double>(reports::memory_peak_bytes(r.cases[3])));

  // Two files with the same stage: the bar is the median, and says how many cases.
  reports::save_results(dir.str("c.json"), r);
  Sources two = load({dir.str("b.json"), dir.str("c.json")});
  const StageBar& two_bar = metric(build_stages_frame(two), "decode_tok_s").bars[0];
  EXPECT_EQ(two_bar.n_cases, 2);
  EXPECT_NE(two_bar.text.find("(2 cases"), std::string::npos) << two_bar.text;
  EXPECT_TRUE(build_stages_frame(two, "", "no/such").stages.empty());
}

TEST(DashboardFrames, HeatmapCellsFromUsage) {
  reports::Case c = fx::make_case("s", "c", "P0");  // usage {{10,20,30,40},{25,25,25,25}}
  HeatmapFrame f = build_heatmap_frame(c, /*per_layer_scale=*/true);
  ASSERT_EQ(f.n_layers, 2);
  ASSERT_EQ(f.n_experts, 4);
  ASSERT_EQ(f.cells.size(), 8u);
  EXPECT_EQ(f.max_count, 40);
  EXPECT_EQ(f.cells[3].count, 40);
  EXPECT_DOUBLE_EQ(f.cells[3].share, 0.4);
  EXPECT_DOUBLE_EQ(f.cells[3].intensity, 1.0);
  EXPECT_DOUBLE_EQ(f.cells[4].intensity, 1.0);  // uniform row, per-layer scale
  HeatmapFrame g = build_heatmap_frame(c, false);
  EXPECT_DOUBLE_EQ(g.cells[0].intensity, 10.0 / 40.0);
  EXPECT_DOUBLE_EQ(g.cells[4].intensity, 25.0 / 40.0);

  c.experts.usage[1].pop_back();  // ragged: a note, no cells
  HeatmapFrame bad = build_heatmap_frame(c, true);
  EXPECT_TRUE(bad.cells.empty());
  EXPECT_NE(bad.note.find("row 1"), std::string::npos) << bad.note;

  // A file's counts may be anything up to 2^63: a row whose sum passes int64 still gives
  // shares (summed in double; the sanitized build would flag an int64 overflow).
  const int64_t big = std::numeric_limits<int64_t>::max();
  c.experts.usage = {{big, 64, big, 0}};
  HeatmapFrame huge = build_heatmap_frame(c, true);
  ASSERT_EQ(huge.cells.size(), 4u);
  EXPECT_NEAR(huge.cells[0].share, 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(huge.cells[3].share, 0.0);
  EXPECT_DOUBLE_EQ(huge.cells[2].intensity, 1.0);
}

TEST(DashboardFrames, LatencyPercentilesAndDecimationOf100kSteps) {
  reports::Case c = fx::make_case("s", "c", "P0", 2, 32);
  LatencyFrame f = build_latency_frame(c, 1, 1000);
  EXPECT_EQ(f.repetition, 1);
  EXPECT_EQ(f.n_steps, 33u);
  ASSERT_EQ(f.prefill.size(), 1u);
  EXPECT_EQ(f.decode.size(), 32u);
  profiler::Stats st = profiler::summarize(reports::decode_latencies(c.samples[1]));
  EXPECT_DOUBLE_EQ(f.p50_ns, st.p50_ns);
  EXPECT_DOUBLE_EQ(f.p99_ns, st.p99_ns);
  EXPECT_DOUBLE_EQ(f.y_max_ns, static_cast<double>(c.samples[1].latency_ns[0]));  // the prefill step

  // 100k decode steps with one spike: at most max_points points, the spike kept.
  reports::Case big = fx::make_case("s", "big", "P0", 1, 100'000);
  big.samples[0].latency_ns[77'777] = 999'000'000;
  LatencyFrame b = build_latency_frame(big, 0, 2000);
  EXPECT_LE(b.decode.size(), 2000u);
  double top = 0;
  for (auto& p : b.decode) top = std::max(top, p.y);
  EXPECT_EQ(top, 999'000'000.0);
  // A zoomed range only decimates what is visible.
  LatencyFrame z = build_latency_frame(big, 0, 2000, XRange{50'000, 50'100});
  EXPECT_EQ(z.first, 50'000u);
  EXPECT_EQ(z.last, 50'100u);
  EXPECT_EQ(z.decode.size(), 100u);
  EXPECT_TRUE(z.prefill.empty());

  reports::Case empty = c;
  empty.samples.clear();
  EXPECT_FALSE(build_latency_frame(empty, 0, 100).note.empty());
}

TEST(DashboardFrames, HitRateAndMemorySeries) {
  reports::Case c = fx::make_case("s", "c", "P0");
  HitRateFrame h = build_hitrate_frame(c, 1000);
  EXPECT_EQ(h.n_steps, 33u);
  EXPECT_EQ(h.overall.size(), 33u);
  ASSERT_EQ(h.per_layer.size(), 2u);
  ASSERT_EQ(h.layer_hit_rate.size(), 2u);
  EXPECT_DOUBLE_EQ(h.layer_hit_rate[0], 0.6);
  EXPECT_DOUBLE_EQ(h.layer_hit_rate[1], 0.7);
  // Smoothing leaves a step with no value (null in the file, NaN here) out of the mean
  // instead of making every later point NaN.
  reports::Case gap = c;
  gap.hit_rate.overall.assign(8, 1.0);
  gap.hit_rate.overall[2] = std::numeric_limits<double>::quiet_NaN();
  gap.hit_rate.overall[5] = 0.0;
  gap.hit_rate.per_layer.clear();
  HitRateFrame g = build_hitrate_frame(gap, 1000, 4);
  ASSERT_EQ(g.overall.size(), 8u);
  EXPECT_DOUBLE_EQ(g.overall[2].y, 1.0);        // steps 0, 1
  EXPECT_DOUBLE_EQ(g.overall[5].y, 2.0 / 3.0);  // steps 3-5 (step 2 is left out): (1 + 1 + 0) / 3
  EXPECT_DOUBLE_EQ(g.overall[7].y, 0.75);       // steps 4-7
  // Layer counters whose sum overflows int64 still give a rate (summed in double).
  gap.experts.hits_per_layer = {INT64_MAX, 0};
  gap.experts.misses_per_layer = {INT64_MAX, 0};
  HitRateFrame o = build_hitrate_frame(gap, 1000);
  EXPECT_DOUBLE_EQ(o.layer_hit_rate[0], 0.5);
  EXPECT_TRUE(std::isnan(o.layer_hit_rate[1]));

  MemoryFrame m = build_memory_frame(c, 1000, "cuda");
  ASSERT_EQ(m.arena.size(), 2u);
  ASSERT_EQ(m.device_used.size(), 2u);
  EXPECT_DOUBLE_EQ(m.arena[1].x, 1'000'000.0);  // x is time, not index
  EXPECT_DOUBLE_EQ(m.arena[1].y, static_cast<double>(3LL << 30));
  EXPECT_DOUBLE_EQ(m.y_max_bytes, static_cast<double>((3LL << 30) + (512LL << 20)));
  EXPECT_EQ(m.allocation_count, 12);
  // No timeline: the note names the backend the case ran on.
  c.memory.timeline.clear();
  std::string cpu_note = build_memory_frame(c, 100, "cpu").note;
  EXPECT_NE(cpu_note.find("CPU backend has no device arena"), std::string::npos) << cpu_note;
  std::string cuda_note = build_memory_frame(c, 100, "cuda").note;
  EXPECT_EQ(cuda_note.find("CPU"), std::string::npos) << cuda_note;
  EXPECT_NE(cuda_note.find("cuda backend"), std::string::npos) << cuda_note;
}

TEST(DashboardFrames, BrokenFilesGiveOneErrorLine) {
  TempDir dir;
  write_text(dir.str("truncated.json"), "{\"schema_version\": 1, \"run\": {");
  nlohmann::json wrong = reports::to_json(fx::make_results());
  wrong["schema_version"] = 99;
  write_text(dir.str("future.json"), wrong.dump());
  nlohmann::json partial = reports::to_json(fx::make_results());
  partial["cases"][1]["samples"][0]["latency_ns"][3] = "x";
  write_text(dir.str("partial.json"), partial.dump());
  reports::save_results(dir.str("good.json"), fx::make_results());

  Sources s = load({dir.str("truncated.json"), dir.str("future.json"), dir.str("partial.json"),
                    dir.str("missing.json"), dir.str("good.json")});
  auto errors = s.errors();
  ASSERT_EQ(errors.size(), 4u);
  EXPECT_NE(errors[0].find("truncated.json"), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("99"), std::string::npos) << errors[1];
  EXPECT_NE(errors[2].find("latency_ns[3]"), std::string::npos) << errors[2];
  EXPECT_NE(errors[3].find("missing.json"), std::string::npos) << errors[3];
  for (auto& e : errors) EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EXPECT_EQ(build_runs_frame(s, {}).total, 3);  // the good file still shows
  EXPECT_EQ(s.find({0, 0}), nullptr);

  write_text(dir.str("trace_bad.json"), "[{\"ph\": \"X\"");
  TraceFile t = load_trace_file(dir.str("trace_bad.json"));
  EXPECT_FALSE(t.trace.has_value());
  EXPECT_NE(t.error.find("invalid JSON"), std::string::npos) << t.error;
  write_text(dir.str("trace_obj.json"), "{\"events\": 3}");
  EXPECT_NE(load_trace_file(dir.str("trace_obj.json")).error.find("not a Chrome trace"), std::string::npos);
  // Events with wrong fields are skipped and reported as warnings, the rest shown.
  write_text(dir.str("trace_mixed.json"),
             R"([{"ph":"X","name":"ok","pid":1,"tid":1,"ts":1,"dur":2},{"ph":"X","name":"neg","pid":1,"tid":1,"ts":1,"dur":-5},7])");
  TraceFile mixed = load_trace_file(dir.str("trace_mixed.json"));
  ASSERT_TRUE(mixed.trace.has_value()) << mixed.error;
  EXPECT_EQ(mixed.trace->span_count(), 1u);
  EXPECT_FALSE(mixed.warnings.empty());
}

TEST(DashboardFrames, ChromeTraceTracksBoxesZoomAndMerging) {
  using namespace moebench::profiler;
  Profiler p;
  p.trace.set_enabled(true);
  p.trace.name_this_thread("engine");
  const int64_t t0 = 1'000'000'000;
  p.trace.record(CpuRange{RangeKind::layer, nullptr, 0, -1, t0 + 1000, t0 + 9000, 0});
  p.trace.record(CpuRange{RangeKind::expert_compute, nullptr, 0, 3, t0 + 2000, t0 + 3500, 0});
  p.record_token(Phase::prefill, 7, t0, t0 + 10'000);
  std::vector<GpuEvent> gpu = {
      {GpuEventKind::kernel, "expert_gemv", t0 + 3000, t0 + 5000, 0, 7, 42, 0, 0, CopyKind::none},
      {GpuEventKind::memcpy, "memcpy H2D", t0 + 1500, t0 + 4500, 0, 13, 43, 0, 1 << 20, CopyKind::h2d}};
  nlohmann::json j = chrome_trace_json(make_trace_input(p, gpu));
  std::vector<std::string> warnings;
  TraceModel m = trace_from_json(j, &warnings);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(m.span_count(), 5u);  // step, 2 CPU ranges, kernel, copy
  int gpu_tracks = 0;
  for (auto& t : m.tracks) gpu_tracks += t.gpu;
  EXPECT_EQ(gpu_tracks, 2);  // streams 7 and 13
  EXPECT_FALSE(m.tracks.front().gpu);  // CPU tracks first
  bool nested = false;
  for (auto& t : m.tracks) nested = nested || t.depth_count == 2;  // expert range inside the layer range
  EXPECT_TRUE(nested);
  EXPECT_FALSE(m.counters.empty());  // the memory counter
  EXPECT_NEAR(m.t_max_us - m.t_min_us, 10.0, 1e-6);

  TimeWindow all = full_window(m);
  TraceFrame f = build_trace_frame(m, all, 1000);
  EXPECT_EQ(f.spans_visible, 5u);
  EXPECT_EQ(f.boxes.size(), 5u);
  // Zoom into the first microsecond: only the step (0-10 us) is there.
  TimeWindow z = zoom_window(all, m.t_min_us, 1e-3, all);
  EXPECT_LT(z.width(), all.width());
  EXPECT_GE(z.t0_us, all.t0_us);
  TraceFrame fz = build_trace_frame(m, {m.t_min_us, m.t_min_us + 0.9}, 1000);
  EXPECT_EQ(fz.spans_visible, 1u);
  // Panning is clamped to the trace.
  TimeWindow far = pan_window(z, 1e9, all);
  EXPECT_DOUBLE_EQ(far.t1_us, all.t1_us);
  EXPECT_NEAR(far.width(), z.width(), z.width() * 1e-5);

  // 100k one-microsecond kernels back to back: boxes stay O(width).
  nlohmann::json big = nlohmann::json::array();
  for (int i = 0; i < 100'000; ++i)
    big.push_back({{"ph", "X"}, {"name", "k"}, {"cat", "kernel"}, {"pid", 100}, {"tid", 7}, {"ts", i * 1.0}, {"dur", 0.9}});
  TraceModel bm = trace_from_json(big);
  TraceFrame bf = build_trace_frame(bm, full_window(bm), 800);
  EXPECT_EQ(bf.spans_visible, 100'000u);
  EXPECT_LE(bf.boxes.size(), 800u);
  int64_t merged = 0;
  for (auto& b : bf.boxes) merged += b.count;
  EXPECT_EQ(merged, 100'000);
  EXPECT_TRUE(bm.tracks[0].gpu);
}

// The live runner over the real CPU engine: results it writes load back and
// give frames whose figures match its counters.
TEST(DashboardLive, EngineRunProducesResultsTheViewsRead) {
  TempDir dir;
  LiveSettings ls;
  ls.stages = {"baseline", "P1"};
  ls.prompt_tokens = 8;
  ls.new_tokens = 12;
  ls.repetitions = 2;
  ls.cache_slots = 6;
  ls.trace_path = dir.str("trace.json");
  int updates = 0;
  LiveOutcome o = run_live(ls, [&](const LiveSnapshot& s) {
    ++updates;
    EXPECT_EQ(s.latency_ns.size(), s.phase.size());
  }, nullptr);
  ASSERT_EQ(o.state, LiveState::done) << o.error;
  ASSERT_EQ(o.results.cases.size(), 2u);
  // baseline: 2 reps; P1: warm-up + 2 reps; each: one more generation for the trace
  EXPECT_EQ(updates, 12 * (2 + 2 + 1 + 2));
  for (auto& c : o.results.cases) {
    ASSERT_EQ(c.status, reports::CaseStatus::ok) << c.error;
    ASSERT_EQ(c.samples.size(), 2u);
    EXPECT_EQ(c.samples[0].latency_ns.size(), 12u);
    EXPECT_EQ(c.samples[0].phase[0], reports::Phase::prefill);
    EXPECT_TRUE(c.samples[0].ttft_cold_ns.has_value());
    EXPECT_GT(c.aggregates.decode_tok_s, 0);
    ASSERT_EQ(c.experts.usage.size(), 4u);  // tiny: 4 layers x 8 experts, top-2
    // Every routed expert is one usage count and one hit or miss of the engine's cache.
    for (size_t l = 0; l < 4; ++l)
      EXPECT_EQ(std::accumulate(c.experts.usage[l].begin(), c.experts.usage[l].end(), int64_t{0}),
                c.experts.hits_per_layer[l] + c.experts.misses_per_layer[l]);
    EXPECT_GT(c.experts.misses, 0);  // 6 slots for 32 experts
    EXPECT_GE(c.experts.loads, c.experts.misses);
    EXPECT_EQ(c.hit_rate.overall.size(), 12u);
    EXPECT_EQ(c.hit_rate.per_layer.size(), 4u);
    EXPECT_GT(c.experts.hits + c.experts.misses, 0);
    EXPECT_EQ(c.settings.knobs.at("cache_slots_used"), 6);
  }
  EXPECT_EQ(o.results.cases[1].warmup, 1);  // P1 warms up

  reports::save_results(dir.str("live.json"), o.results);
  Sources s = load({dir.str("live.json")});
  s.traces.push_back(load_trace_file(ls.trace_path));
  ASSERT_TRUE(s.errors().empty()) << s.errors()[0];
  RunsFrame runs = build_runs_frame(s, {});
  ASSERT_EQ(runs.rows.size(), 2u);
  EXPECT_EQ(runs.rows[0].cells[static_cast<size_t>(runs_column_index("stage"))], "baseline");
  EXPECT_EQ(runs.rows[1].cells[static_cast<size_t>(runs_column_index("policy"))], "lfu-prefetch");  // P1's policy
  StagesFrame st = build_stages_frame(s);
  EXPECT_EQ(st.stages, (std::vector<std::string>{"baseline", "P1"}));
  EXPECT_DOUBLE_EQ(metric(st, "hit_rate").bars[0].value, o.results.cases[0].experts.hit_rate());
  HeatmapFrame hm = build_heatmap_frame(*s.find({0, 0}), false);
  ASSERT_EQ(hm.cells.size(), 32u);
  EXPECT_EQ(hm.cells[9].count, o.results.cases[0].experts.usage[1][1]);
  // The trace: one step slice per token of each case's first measured repetition,
  // and the engine's own ranges (router, expert loads and compute) beside them.
  const TraceModel& tm = *s.traces[0].trace;
  size_t steps = 0;
  for (auto& t : tm.tracks)
    if (t.label.find("steps") != std::string::npos) steps += t.spans.size();
  EXPECT_EQ(steps, 12u * 2u);
  for (const char* name : {"router", "expert_compute", "expert_load", "model load"})
    EXPECT_NE(std::find(tm.names.begin(), tm.names.end(), name), tm.names.end()) << name;
}

TEST(DashboardLive, CancelStopsAfterTheCurrentToken) {
  std::atomic<bool> cancel{false};
  LiveSettings ls;
  ls.stages = {"baseline", "P0"};
  ls.new_tokens = 50;
  int tokens = 0;
  LiveOutcome o = run_live(ls, [&](const LiveSnapshot&) {
    if (++tokens == 3) cancel = true;
  }, &cancel);
  EXPECT_EQ(o.state, LiveState::cancelled);
  EXPECT_EQ(tokens, 3);
  EXPECT_TRUE(o.results.cases.empty());

  // The background runner: start, watch, finish.
  auto runner = make_engine_live_runner();
  LiveSettings one;
  one.stages = {"P0"};
  one.new_tokens = 6;
  one.repetitions = 1;
  runner->start(one);
  LiveSnapshot snap;
  for (int i = 0; i < 6000; ++i) {
    snap = runner->poll();
    if (snap.state != LiveState::running) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(snap.state, LiveState::done) << snap.error;
  ASSERT_TRUE(snap.results);
  EXPECT_EQ(snap.results->cases.size(), 1u);
  EXPECT_EQ(snap.latency_ns.size(), 6u);
}

// Every view, drawn by ImGui with no backend, on good, broken and empty inputs.
TEST(DashboardViews, NullBackendFramesDrawEveryView) {
  TempDir dir;
  reports::save_results(dir.str("b.json"), stage_results());
  write_text(dir.str("bad.json"), "not json");
  nlohmann::json trace = nlohmann::json::array();
  for (int i = 0; i < 2000; ++i)
    trace.push_back({{"ph", "X"}, {"name", i % 2 ? "gemv" : "memcpy H2D"}, {"pid", 100}, {"tid", 7 + i % 2}, {"ts", i * 2.0}, {"dur", 1.5}});
  write_text(dir.str("trace.json"), trace.dump());

  DashboardOptions o;
  o.results_files = {dir.str("bad.json"), dir.str("b.json")};
  o.trace_files = {dir.str("trace.json")};
  o.live = false;
  Dashboard d(o);
  ASSERT_EQ(d.views().size(), 9u);
  for (auto& v : d.views()) EXPECT_EQ(v->open, std::string(v->name()) != "Benchmarks") << v->name();  // no benchmark file
  EXPECT_EQ(d.state().selected, (CaseRef{1, 0}));  // the first case of the good file
  EXPECT_EQ(d.state().sources.errors().size(), 1u);
  EXPECT_GT(render_headless(d, 3), 1000);

  DashboardOptions empty;
  empty.live = false;
  Dashboard e(empty);
  EXPECT_GT(render_headless(e, 2), 0);
}

// The live view while a run streams, and the finished run joining the Runs table.
TEST(DashboardViews, LiveRunJoinsTheLoadedResults) {
  DashboardOptions o;  // nothing loaded, live runner on
  Dashboard d(o);
  ASSERT_TRUE(d.state().live);
  LiveSettings ls;
  ls.stages = {"P0"};
  ls.new_tokens = 8;
  ls.repetitions = 1;
  d.state().live->start(ls);
  ImGuiContext* ctx = ImGui::CreateContext();
  ImGuiIO& io = ImGui::GetIO();
  io.IniFilename = nullptr;
  io.DisplaySize = ImVec2(1600, 1000);
  io.DeltaTime = 1.0f / 60;
  unsigned char* pixels = nullptr;
  int w = 0, h = 0;
  io.Fonts->GetTexDataAsRGBA32(&pixels, &w, &h);
  bool done = false;
  for (int i = 0; i < 6000 && !done; ++i) {
    done = d.state().live->poll().state != LiveState::running;
    ImGui::NewFrame();
    d.frame();  // draws the live view; after the run, appends its results
    ImGui::Render();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ImGui::DestroyContext(ctx);
  ASSERT_TRUE(done);
  ASSERT_EQ(d.state().sources.results.size(), 1u);
  EXPECT_EQ(d.state().sources.results[0].path, "live run 1");
  EXPECT_EQ(build_runs_frame(d.state().sources, {}).rows.size(), 1u);
  EXPECT_EQ(d.state().selected, (CaseRef{0, 0}));
}

// A folder with CPU and GPU results: the stage comparison takes one (device, model,
// backend) group at a time, never one median across them, and names the group.
TEST(DashboardFrames, StagesNeverMixDevicesModelsOrBackends) {
  const std::string gpu = test::source_dir() + "/ui/testdata/gpu_h200_mixtral32l_stages.json";
  const std::string cpu = test::source_dir() + "/ui/testdata/cpu_tiny_stages.json";
  Sources s = load({gpu, cpu});
  ASSERT_TRUE(s.errors().empty()) << s.errors()[0];
  const reports::Results& g = *s.results[0].results;
  const reports::Results& c = *s.results[1].results;
  ASSERT_EQ(g.device.kind, reports::DeviceKind::cuda);
  ASSERT_EQ(c.device.kind, reports::DeviceKind::cpu);
  StagesFrame f = build_stages_frame(s);
  ASSERT_EQ(f.groups.size(), 2u);
  EXPECT_EQ(f.group, 0);  // the first file's group
  EXPECT_EQ(f.groups[0].label(), "NVIDIA H200 / mixtral-8x7b / cuda");
  EXPECT_EQ(f.groups[1].backend, "cpu");
  EXPECT_EQ(f.groups[0].n_cases, static_cast<int>(g.cases.size()));
  // Each group's bars are the medians of its own cases only.
  auto expected = [](const reports::Results& r, const std::string& stage) {
    std::vector<double> v;
    for (auto& x : r.cases)
      if (x.settings.stage == stage && x.status == reports::CaseStatus::ok) v.push_back(x.aggregates.decode_tok_s);
    return std::make_pair(profiler::median(v), static_cast<int>(v.size()));
  };
  for (int gi = 0; gi < 2; ++gi) {
    const reports::Results& r = gi == 0 ? g : c;
    StagesFrame fg = build_stages_frame(s, f.groups[static_cast<size_t>(gi)].label());
    EXPECT_EQ(fg.group, gi);
    for (const StageBar& b : metric(fg, "decode_tok_s").bars) {
      auto [median, n] = expected(r, b.stage);
      EXPECT_EQ(b.n_cases, n) << gi << " " << b.stage;
      EXPECT_DOUBLE_EQ(b.value, median) << gi << " " << b.stage;
    }
    // The case picker lists the group's cases only.
    for (auto& k : fg.case_keys) {
      bool in_file = false;
      for (auto& x : r.cases) in_file = in_file || case_key(x) == k;
      EXPECT_TRUE(in_file) << k;
    }
  }
  // Two models on one device are two groups as well.
  reports::Results other = c;
  other.model.name = "another-model";
  TempDir dir;
  reports::save_results(dir.str("other.json"), other);
  Sources two_models = load({cpu, dir.str("other.json")});
  EXPECT_EQ(build_stages_frame(two_models).groups.size(), 2u);
  // A "backend" knob (moebench bench records one) is the case's backend.
  reports::Case k = c.cases[0];
  k.settings.knobs["backend"] = "cuda";
  EXPECT_EQ(case_backend(c, k), "cuda");
  EXPECT_EQ(case_backend(c, c.cases[0]), "cpu");
}

// Heatmap axis labels and stage-bar texts fit whatever the size: 32, 48 or 56
// layers in windows from 120 to 1200 pixels tall.
TEST(DashboardLayout, LabelsNeverOverlapAndTextsFit) {
  const float text_h = 13;  // ImGui's default font
  for (int layers : {2, 8, 32, 48, 56, 100}) {
    for (float h = 120; h <= 1200; h += 7) {
      float cell = std::max(2.0f, (h - 20) / static_cast<float>(layers));
      int k = label_stride(layers, cell, text_h);
      ASSERT_GE(k, 1);
      ASSERT_LE(k, layers);
      if (k < layers) {
        EXPECT_GE(static_cast<float>(k) * cell, text_h + 2) << layers << " layers, " << h << " px";
      }
      // The smallest round stride: the next smaller candidate would overlap.
      if (k > 1 && k < layers) {
        int smaller = 0;
        for (int c : {1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64})
          if (c < k) smaller = c;
        EXPECT_LT(static_cast<float>(smaller) * cell, text_h + 2) << layers << " layers, " << h << " px";
      }
    }
  }
  EXPECT_EQ(label_stride(32, 30, 13), 1);
  EXPECT_EQ(label_stride(32, 7.5f, 13), 2);  // 2 x 7.5 px = 15 px: a 13 px label and its gap
  EXPECT_EQ(label_stride(32, 7.4f, 13), 4);  // rows 14.8 px apart would overlap
  EXPECT_EQ(label_stride(56, 0.5f, 13), 32);
  EXPECT_EQ(label_stride(8, 0.5f, 13), 8);   // only the first label
}

TEST(DashboardLayout, StageTextBesideOrUnderItsBar) {
  for (float avail = 100; avail <= 900; avail += 13)
    for (float text_w : {80.0f, 200.0f, 320.0f, 480.0f}) {
      StageRowLayout l = stage_row_layout(avail, 60, text_w);
      EXPECT_GT(l.bar_w, 0);
      if (!l.text_below) {
        EXPECT_LE(60 + l.bar_w + 8 + text_w, avail + 1e-3) << avail << " " << text_w;
        EXPECT_GE(l.bar_w, 80);
      } else {
        EXPECT_LE(60 + l.bar_w, std::max(avail, 61.0f));
      }
    }
}

namespace {
// Writes `text` gzip-compressed (as `gzip` does).
void write_gzip(const std::string& path, const std::string& text) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, text.data(), static_cast<unsigned>(text.size())), static_cast<int>(text.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}
}  // namespace

// .json.gz results and traces open like plain ones (the committed traces are .json.gz).
TEST(DashboardFrames, GzipResultsAndTraces) {
  TempDir dir;
  reports::Results r = stage_results();
  std::string text = reports::results_to_string(r);
  write_gzip(dir.str("r.json.gz"), text);
  ResultsFile f = load_results_file(dir.str("r.json.gz"));
  ASSERT_TRUE(f.results.has_value()) << f.error;
  EXPECT_EQ(f.results->cases.size(), r.cases.size());
  EXPECT_EQ(read_text_maybe_gzip(dir.str("r.json.gz")), text);
  // Two gzip members back to back are one text (what `cat a.gz b.gz` gives).
  write_gzip(dir.str("a.gz"), "[1, ");
  write_gzip(dir.str("b.gz"), "2]");
  write_text(dir.str("ab.gz"), read_file(dir.str("a.gz")) + read_file(dir.str("b.gz")));
  EXPECT_EQ(read_text_maybe_gzip(dir.str("ab.gz")), "[1, 2]");
  // A truncated or corrupt stream is one error line naming the file.
  std::string gz = read_file(dir.str("r.json.gz"));
  write_text(dir.str("cut.json.gz"), gz.substr(0, gz.size() / 2));
  ResultsFile cut = load_results_file(dir.str("cut.json.gz"));
  EXPECT_FALSE(cut.results.has_value());
  EXPECT_NE(cut.error.find("cut.json.gz: truncated gzip"), std::string::npos) << cut.error;
  std::string bad = gz;
  for (size_t i = 20; i < 60 && i < bad.size(); ++i) bad[i] = static_cast<char>(bad[i] ^ 0x5a);
  write_text(dir.str("bad.json.gz"), bad);
  ResultsFile corrupt = load_results_file(dir.str("bad.json.gz"));
  EXPECT_FALSE(corrupt.results.has_value());
  EXPECT_NE(corrupt.error.find("bad.json.gz: "), std::string::npos) << corrupt.error;
  EXPECT_EQ(corrupt.error.find('\n'), std::string::npos);

  // The committed H200 trace of the stages-gpu run: GPU kernels, CPU ranges, counters.
  TraceFile t = load_trace_file(test::source_dir() + "/reports/baselines/stages_gpu_mixtral32l_trace_h200_2026-11-29.json.gz");
  ASSERT_TRUE(t.trace.has_value()) << t.error;
  EXPECT_GT(t.trace->span_count(), 1000u);
  int gpu_tracks = 0;
  for (auto& tr : t.trace->tracks) gpu_tracks += tr.gpu;
  EXPECT_GT(gpu_tracks, 0);
  EXPECT_FALSE(t.trace->counters.empty());
  for (auto& c : t.trace->counters) EXPECT_FALSE(c.label.empty());
}

// Google Benchmark JSON (the kernel microbenchmarks) opens as its own table.
TEST(DashboardFrames, GoogleBenchmarkFileIsATable) {
  const std::string path = test::source_dir() + "/reports/baselines/kernels_h200_2026-11-28.json";
  Sources s;
  s.add_results_or_benchmark(path);
  ASSERT_TRUE(s.results.empty());
  ASSERT_EQ(s.benchmarks.size(), 1u);
  ASSERT_TRUE(s.benchmarks[0].table.has_value()) << s.benchmarks[0].error;
  const BenchTable& t = *s.benchmarks[0].table;
  nlohmann::json j = read_json_file(path);
  ASSERT_EQ(t.rows.size(), j["benchmarks"].size());
  const BenchRow& r0 = t.rows[0];
  EXPECT_EQ(r0.name, j["benchmarks"][0]["run_name"].get<std::string>());
  EXPECT_EQ(r0.time_unit, "us");
  EXPECT_DOUBLE_EQ(r0.real_time.median, j["benchmarks"][0]["real_time"].get<double>());
  EXPECT_EQ(r0.real_time.n, 1);
  EXPECT_EQ(r0.iterations, j["benchmarks"][0]["iterations"].get<int64_t>());
  EXPECT_DOUBLE_EQ(r0.counters.at("bytes"), j["benchmarks"][0]["bytes"].get<double>());
  EXPECT_EQ(t.counter_names, (std::vector<std::string>{"bytes", "experts_read", "flops", "splits"}));  // every counter some row has
  EXPECT_EQ(t.context.at("device"), "NVIDIA H200");
  EXPECT_TRUE(s.errors().empty());
  // As a results file it is refused with a line that says what it is.
  ResultsFile as_results = load_results_file(path);
  EXPECT_NE(as_results.error.find("Google Benchmark"), std::string::npos) << as_results.error;

  // Repetitions: the median ± interval over them (median_interval), aggregates skipped;
  // a file of aggregates only shows the median aggregate; a failed benchmark its error.
  nlohmann::json reps = {{"context", {{"host_name", "h"}}}, {"benchmarks", nlohmann::json::array()}};
  const double times[] = {10, 12, 11, 30, 9};
  for (int i = 0; i < 5; ++i)
    reps["benchmarks"].push_back({{"name", "bm/1"}, {"run_name", "bm/1"}, {"run_type", "iteration"}, {"repetitions", 5},
                                  {"iterations", 100}, {"real_time", times[i]}, {"cpu_time", times[i] + 1},
                                  {"time_unit", "ns"}, {"bytes_per_second", 1e9 * (i + 1)}});
  reps["benchmarks"].push_back({{"name", "bm/1_mean"}, {"run_name", "bm/1"}, {"run_type", "aggregate"}, {"aggregate_name", "mean"},
                                {"iterations", 5}, {"real_time", 14.4}, {"cpu_time", 15.4}, {"time_unit", "ns"}});
  reps["benchmarks"].push_back({{"name", "agg/2_median"}, {"run_name", "agg/2"}, {"run_type", "aggregate"}, {"aggregate_name", "median"},
                                {"repetitions", 7}, {"iterations", 7}, {"real_time", 4.5}, {"cpu_time", 4.6}, {"time_unit", "ms"}});
  reps["benchmarks"].push_back({{"name", "err/3"}, {"run_name", "err/3"}, {"run_type", "iteration"}, {"error_occurred", true},
                                {"error_message", "no CUDA device"}, {"iterations", 0}, {"real_time", 0}, {"cpu_time", 0}, {"time_unit", "ns"}});
  BenchTable rt = bench_table_from_json(reps, "reps.json");
  ASSERT_EQ(rt.rows.size(), 3u);
  reports::MedianInterval want = reports::median_interval({10, 12, 11, 30, 9});
  EXPECT_EQ(rt.rows[0].real_time.n, 5);
  EXPECT_DOUBLE_EQ(rt.rows[0].real_time.median, 11);
  EXPECT_DOUBLE_EQ(rt.rows[0].real_time.lo, want.lo);
  EXPECT_DOUBLE_EQ(rt.rows[0].real_time.hi, want.hi);
  EXPECT_DOUBLE_EQ(rt.rows[0].counters.at("bytes_per_second"), 3e9);
  EXPECT_EQ(rt.counter_names.front(), "bytes_per_second");
  EXPECT_TRUE(rt.rows[1].from_aggregate);
  EXPECT_EQ(rt.rows[1].aggregate_repetitions, 7);
  EXPECT_DOUBLE_EQ(rt.rows[1].real_time.median, 4.5);
  EXPECT_EQ(rt.rows[2].error, "no CUDA device");
  std::string text = interval_text(rt.rows[0].real_time, [](double v) { return fmt::format("{:g} ns", v); });
  EXPECT_EQ(text.rfind("11 ns ±", 0), 0u) << text;
  EXPECT_NE(text.find("n=5, 93% CI"), std::string::npos) << text;  // 5 samples cannot reach 95%
  // A row that is no benchmark: one line naming the file, the row and the field.
  reps["benchmarks"].push_back({{"name", "x"}, {"run_type", "iteration"}, {"real_time", "fast"}});
  try {
    bench_table_from_json(reps, "reps.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reps.json: benchmarks[8].real_time"), std::string::npos) << e.what();
  }
  // Optional fields of another type than Google Benchmark writes, or a count a double
  // cannot hold as an integer: the same kind of line (found by the dashboard's fuzz target:
  // nlohmann's own type error named no file).
  const std::pair<const char*, nlohmann::json> wrong[] = {
      {"run_type", 3},        {"aggregate_name", false}, {"error_occurred", "yes"}, {"time_unit", "weeks"},
      {"iterations", 1e300},  {"iterations", -4},        {"repetitions", 2.5},      {"repetitions", 1LL << 40}};
  for (const auto& [field, value] : wrong) {
    nlohmann::json one = {{"context", nlohmann::json::object()},
                          {"benchmarks", {{{"name", "a"}, {"run_type", "aggregate"}, {"aggregate_name", "median"},
                                           {"real_time", 1}, {"cpu_time", 1}}}}};
    one["benchmarks"][0][field] = value;
    try {
      bench_table_from_json(one, "one.json");
      ADD_FAILURE() << field << " = " << value.dump() << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("one.json: benchmarks[0].") + field), std::string::npos)
          << e.what();
    }
  }
}

// Times at the ends of what a double holds: spans past 2^53 us (or whose end overflows) are
// skipped, the extent stays finite, and a window zoomed in on a trace stamped in microseconds
// since 1970 keeps a width (a double steps by 0.25 us there; found by the dashboard's fuzz target).
TEST(DashboardFrames, TraceTimesAtTheLimitsOfADouble) {
  nlohmann::json huge = nlohmann::json::array(
      {{{"ph", "X"}, {"name", "overflows"}, {"pid", 1}, {"tid", 1}, {"ts", 1.7e308}, {"dur", 1.7e308}},
       {{"ph", "X"}, {"name", "far"}, {"pid", 1}, {"tid", 1}, {"ts", -1e300}, {"dur", 1}},
       {{"ph", "B"}, {"name", "open"}, {"pid", 1}, {"tid", 1}, {"ts", 1e17}},
       {{"ph", "C"}, {"name", "c"}, {"pid", 1}, {"ts", 1e18}, {"args", {{"v", 1}}}},
       {{"ph", "X"}, {"name", "kept"}, {"pid", 1}, {"tid", 1}, {"ts", 5}, {"dur", 2}}});
  TraceModel m = trace_from_json(huge);
  ASSERT_EQ(m.span_count(), 1u);
  EXPECT_TRUE(m.counters.empty());
  EXPECT_DOUBLE_EQ(m.t_min_us, 5);
  EXPECT_DOUBLE_EQ(m.t_max_us, 7);

  const double epoch_us = 1.7e15;
  nlohmann::json now = nlohmann::json::array(
      {{{"ph", "X"}, {"name", "a"}, {"pid", 1}, {"tid", 1}, {"ts", epoch_us}, {"dur", 10}},
       {{"ph", "X"}, {"name", "b"}, {"pid", 1}, {"tid", 1}, {"ts", epoch_us + 20}, {"dur", 10}}});
  TraceModel n = trace_from_json(now);
  TimeWindow all = full_window(n);
  TimeWindow z = all;
  for (int i = 0; i < 60; ++i) z = zoom_window(z, epoch_us + 5, 0.5, all);  // far past 1 ns
  EXPECT_GT(z.width(), 0);
  EXPECT_GE(z.width(), 16 * epoch_us * std::numeric_limits<double>::epsilon() * 0.99);
  EXPECT_LE(z.t0_us, epoch_us + 5);
  EXPECT_GE(z.t1_us, epoch_us + 5);
  TraceFrame f = build_trace_frame(n, z, 800);
  EXPECT_EQ(f.spans_visible, 1u);
  // Near zero, 1 ns is still the narrowest window.
  TraceModel k = trace_from_json(huge);
  TimeWindow kall = full_window(k), kz = kall;
  for (int i = 0; i < 60; ++i) kz = zoom_window(kz, 6, 0.5, kall);
  EXPECT_NEAR(kz.width(), 1e-3, 1e-9);
}

// The memory pane of an H200 `moebench bench` case (no timeline) names CUDA, not the CPU.
TEST(DashboardFrames, MemoryNoteOfACommittedCudaBenchCase) {
  Sources s = load({test::source_dir() + "/reports/baselines/bench_mixtral8l_batch_h200_2026-11-28.json"});
  ASSERT_TRUE(s.errors().empty()) << s.errors()[0];
  const reports::Results& r = *s.results[0].results;
  const reports::Case& c = r.cases[0];
  ASSERT_TRUE(c.memory.timeline.empty());
  EXPECT_EQ(case_backend(r, c), "cuda");
  std::string note = build_memory_frame(c, 100, case_backend(r, c)).note;
  EXPECT_EQ(note.find("CPU backend"), std::string::npos) << note;
  EXPECT_NE(note.find("moebench bench"), std::string::npos) << note;
}

// Every view over a folder of CPU and GPU results, the GPU run's .json.gz trace and a
// Google Benchmark file.
TEST(DashboardViews, MixedDevicesGzTraceAndBenchmarks) {
  DashboardOptions o;
  o.results_files = {test::source_dir() + "/ui/testdata/gpu_h200_mixtral32l_stages.json",
                     test::source_dir() + "/ui/testdata/cpu_tiny_stages.json",
                     test::source_dir() + "/ui/testdata/kernels_h200_linear.json"};
  o.trace_files = {test::source_dir() + "/reports/baselines/stages_gpu_mixtral32l_trace_h200_2026-11-29.json.gz"};
  o.live = false;
  Dashboard d(o);
  const Sources& s = d.state().sources;
  EXPECT_EQ(s.results.size(), 2u);
  EXPECT_EQ(s.benchmarks.size(), 1u);
  for (auto& t : s.traces) EXPECT_TRUE(t.trace.has_value()) << t.error;
  for (auto& v : d.views()) EXPECT_TRUE(v->open || std::string(v->name()) == "Live run") << v->name();
  EXPECT_EQ(d.state().selected, (CaseRef{0, 0}));  // the H200 case: a 32-layer heatmap
  EXPECT_EQ(build_heatmap_frame(*s.find(d.state().selected), true).n_layers, 32);
  EXPECT_GT(render_headless(d, 3), 1000);
}

// The committed GPU results (moebench run --suite stages-gpu on an H200, 32 Mixtral-8x7B
// layers offloaded under a 22 GiB budget) open, and every view has something to show.
TEST(DashboardFrames, CommittedGpuStagesResults) {
  const std::string path = test::source_dir() + "/reports/baselines/stages_gpu_mixtral32l_h200_2026-11-29.json";
  Sources s = load({path});
  ASSERT_TRUE(s.results.front().results.has_value()) << s.results.front().error;
  RunsFrame runs = build_runs_frame(s, {});
  EXPECT_EQ(runs.total, 12);
  ASSERT_EQ(runs.rows.size(), 12u);
  EXPECT_EQ(runs.rows[0].cells[static_cast<size_t>(column(runs, "device"))], "NVIDIA H200");
  StagesFrame st = build_stages_frame(s);
  ASSERT_EQ(st.stages, (std::vector<std::string>{"baseline", "P0", "P1", "P2"}));
  const StageMetric& tok = metric(st, "decode_tok_s");
  ASSERT_EQ(tok.bars.size(), 4u);
  for (const auto& b : tok.bars) {
    EXPECT_GT(b.value, 0) << b.stage;
    ASSERT_TRUE(b.bound_percent.has_value()) << b.stage;  // measured H2D and HBM in the file
  }
  EXPECT_GT(tok.bars[3].value, tok.bars[1].value);  // P2 over P0 on this device
  const reports::Case& c = s.results.front().results->cases.back();
  HeatmapFrame h = build_heatmap_frame(c, true);
  EXPECT_EQ(h.n_layers, 32);
  EXPECT_EQ(h.n_experts, 8);
  EXPECT_EQ(h.cells.size(), 256u);
  EXPECT_GT(h.max_count, 0);
  HitRateFrame hr = build_hitrate_frame(c, 1000);
  EXPECT_EQ(hr.layer_hit_rate.size(), 32u);  // per layer from the counters
  EXPECT_FALSE(hr.overall.empty());
  EXPECT_FALSE(build_latency_frame(c, 0, 1000).decode.empty());
  EXPECT_FALSE(build_memory_frame(c, 1000, case_backend(*s.results.front().results, c)).arena.empty());
}

}  // namespace dashboard_test

#else

TEST(Dashboard, SkippedWithoutUi) { GTEST_SKIP() << "built without the dashboard (MOEBENCH_UI=OFF or its packages missing)"; }

#endif
