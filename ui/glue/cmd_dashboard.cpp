// cmd_dashboard.cpp: `moebench dashboard` — the ImGui dashboard over results
// files, Chrome traces and live runs; `--screenshot` renders N frames and writes
// a PNG (CI runs it under Xvfb); `--record` runs the live runner headless and
// writes its results (and trace) without opening a window.
#include <filesystem>
#include <memory>
#include <sstream>

#include "cli/command.h"
#include "common/error.h"
#include "reports/results.h"
#include "ui/glue/window.h"
#include "ui/model/live_runner.h"
#include "ui/views/dashboard.h"

namespace {

struct Args {
  std::vector<std::string> results;
  std::vector<std::string> traces;
  std::string screenshot;
  int frames = 3;
  std::string size = "1600x1000";
  bool no_live = false;
  // --record
  std::string record;
  std::string record_trace;
  std::string stages = "baseline,P0,P1,P2";
  moebench::ui::LiveSettings live;
};

int record(const Args& a) {
  using namespace moebench;
  ui::LiveSettings s = a.live;
  s.trace_path = a.record_trace;
  s.stages.clear();
  std::stringstream ss(a.stages);
  for (std::string st; std::getline(ss, st, ',');)
    if (!st.empty()) s.stages.push_back(st);
  int last_case = -1;
  ui::LiveOutcome o = ui::run_live(
      s,
      [&](const ui::LiveSnapshot& p) {
        if (p.case_index != last_case) {
          last_case = p.case_index;
          fmt::print(stderr, "case {}/{}: {}\n", p.case_index + 1, p.n_cases, p.case_label);
        }
      },
      nullptr);
  if (!a.record_trace.empty()) {
    // Stored relative to the results file, so the pair can move together.
    namespace fs = std::filesystem;
    fs::path base = fs::absolute(a.record).parent_path();
    o.results.run.trace_file = fs::absolute(a.record_trace).lexically_relative(base).string();
  }
  reports::save_results(a.record, o.results);
  for (auto& c : o.results.cases)
    if (c.status == reports::CaseStatus::failed) fmt::print(stderr, "case {} failed: {}\n", c.name, c.error);
  fmt::print(stderr, "wrote {} ({} cases){}\n", a.record, o.results.cases.size(),
             a.record_trace.empty() ? "" : " and " + a.record_trace);
  if (o.state == ui::LiveState::failed) fail("the live run failed: {}", o.error);
  return 0;
}

int run(const Args& a) {
  using namespace moebench;
  if (!a.record.empty()) return record(a);
  ui::WindowOptions w;
  if (std::sscanf(a.size.c_str(), "%dx%d", &w.width, &w.height) != 2 || w.width < 200 || w.height < 150)
    fail("--size {}: expected WIDTHxHEIGHT, at least 200x150", a.size);
  w.screenshot = a.screenshot;
  w.frames = a.frames;
  ui::DashboardOptions d;
  d.results_files = a.results;
  d.trace_files = a.traces;
  d.live = !a.no_live;
  ui::Dashboard dash(d);
  // A screenshot of a dashboard that could not read its inputs shows nothing worth
  // checking: the first problem fails the command.
  if (!a.screenshot.empty()) {
    const ui::Sources& src = dash.state().sources;
    for (auto& f : src.results)
      if (!f.results) fail("--screenshot: {}", f.error);
    for (auto& t : src.traces)
      if (!t.trace) fail("--screenshot: {}", t.error);
    for (auto& b : src.benchmarks)
      if (!b.table) fail("--screenshot: {}", b.error);
  }
  return ui::run_window(dash, w);
}

}  // namespace

MOEBENCH_COMMAND(dashboard, "Interactive ImGui dashboard over results, traces and live runs", [](CLI::App& sub) {
  auto a = std::make_shared<Args>();
  sub.add_option("results", a->results,
                 "Results files (moebench results JSON) or Google Benchmark JSON to show; .json.gz is read too");
  sub.add_option("--trace", a->traces, "Chrome trace (trace.json or trace.json.gz) for the timeline; repeatable");
  auto* shot = sub.add_option("--screenshot", a->screenshot,
                              "Render --frames frames, write this PNG and exit (fails on a blank image or a file it cannot read)");
  sub.add_option("--frames", a->frames, "Frames before the screenshot (default 3)")->check(moebench::app::kPositiveNumber)->needs(shot);
  sub.add_option("--size", a->size, "Window size WIDTHxHEIGHT (default 1600x1000)");
  sub.add_flag("--no-live", a->no_live, "Hide the live-run view's runner");
  auto* rec = sub.add_option("--record", a->record, "No window: run the live runner (cpu) and write its results here");
  rec->excludes(shot);
  sub.add_option("--record-trace", a->record_trace, "With --record: also write a Chrome trace of the run")->needs(rec);
  sub.add_option("--model", a->live.model, "Live runs: DIR or synthetic:PRESET (default synthetic:tiny)");
  sub.add_option("--seed", a->live.seed, "Live runs: seed of synthetic weights and prompt");
  sub.add_option("--stages", a->stages, "Live runs: comma-separated stage presets (default baseline,P0,P1,P2)");
  sub.add_option("--prompt-tokens", a->live.prompt_tokens, "Live runs: prompt length")->check(moebench::app::kPositiveNumber);
  sub.add_option("--new-tokens", a->live.new_tokens, "Live runs: tokens to generate")->check(moebench::app::kPositiveNumber);
  sub.add_option("--repetitions", a->live.repetitions, "Live runs: measured repetitions")->check(moebench::app::kPositiveNumber);
  sub.add_option("--cache-slots", a->live.cache_slots, "Live runs: expert slots for every stage (0: the stage's own)")
      ->check(moebench::app::kNonNegativeNumber);
  return [a] { return run(*a); };
});
