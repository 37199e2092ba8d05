// dashboard.cpp: see dashboard.h.
#include "ui/views/dashboard.h"

#include <fmt/format.h>
#include <imgui.h>

#include <algorithm>
#include <filesystem>

#include "ui/views/chart.h"

namespace moebench::ui {

namespace {
// Where each view goes when tiled, as fractions of the area under the menu bar:
// {x, y, w, h}, in make-order (runs, stages, latency, hit rate, heatmap, memory, trace, live,
// benchmarks). The benchmarks table shares the live view's tile (the live view starts
// closed when Google Benchmark files are loaded) or, with no results loaded, takes the
// place of the per-case views above the trace row (they start closed: no case to show).
constexpr float kTiles[][4] = {
    {0.00f, 0.00f, 0.52f, 0.34f}, {0.52f, 0.00f, 0.48f, 0.34f},  // runs, stages
    {0.00f, 0.34f, 0.36f, 0.33f}, {0.36f, 0.34f, 0.36f, 0.33f},  // latency, hit rate
    {0.72f, 0.34f, 0.28f, 0.33f}, {0.72f, 0.67f, 0.28f, 0.33f},  // heatmap, memory
    {0.00f, 0.67f, 0.40f, 0.33f}, {0.40f, 0.67f, 0.32f, 0.33f},  // trace, live
    {0.40f, 0.67f, 0.32f, 0.33f},                                // benchmarks
};
constexpr float kBenchTopTile[4] = {0.00f, 0.00f, 1.00f, 0.67f};
}  // namespace

Dashboard::Dashboard(const DashboardOptions& o) {
  namespace fs = std::filesystem;
  for (auto& p : o.results_files) state_.sources.add_results_or_benchmark(p);
  std::vector<std::string> traces = o.trace_files;
  for (auto& f : state_.sources.results) {
    if (!f.results || f.results->run.trace_file.empty()) continue;
    fs::path t = f.results->run.trace_file;
    if (t.is_relative()) t = fs::path(f.path).parent_path() / t;
    std::error_code ec;
    if (fs::exists(t, ec) && std::find(traces.begin(), traces.end(), t.string()) == traces.end()) traces.push_back(t.string());
  }
  for (auto& p : traces) state_.sources.traces.push_back(load_trace_file(p));
  auto all = state_.sources.all_cases();
  for (CaseRef r : all)
    if (state_.sources.find(r)->status == reports::CaseStatus::ok) {
      state_.selected = r;
      break;
    }
  if (o.live) state_.live = make_engine_live_runner();
  views_.push_back(make_runs_view());
  views_.push_back(make_stages_view());
  views_.push_back(make_latency_view());
  views_.push_back(make_hitrate_view());
  views_.push_back(make_heatmap_view());
  views_.push_back(make_memory_view());
  views_.push_back(make_trace_view());
  views_.push_back(make_live_view());
  views_.push_back(make_bench_view());
  bool benchmarks = !state_.sources.benchmarks.empty();
  views_[8]->open = benchmarks;
  if (benchmarks) views_[7]->open = false;  // the live view's tile shows the benchmarks
  bench_on_top_ = benchmarks && state_.sources.results.empty();
  if (bench_on_top_)
    for (size_t i = 0; i < 6; ++i) views_[i]->open = false;  // runs, stages and the per-case charts
}

void Dashboard::menu_bar() {
  if (!ImGui::BeginMainMenuBar()) return;
  if (ImGui::BeginMenu("Files")) {
    for (auto& f : state_.sources.results) {
      if (f.results)
        ImGui::Text("%s: %zu cases, %s on %s", f.path.c_str(), f.results->cases.size(), f.results->model.name.c_str(),
                    f.results->device.name.c_str());
      else
        ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(color::error), "%s", f.error.c_str());
    }
    for (auto& t : state_.sources.traces)
      if (t.trace)
        ImGui::Text("%s: trace, %zu slices", t.path.c_str(), t.trace->span_count());
      else
        ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(color::error), "%s", t.error.c_str());
    for (auto& b : state_.sources.benchmarks)
      if (b.table)
        ImGui::Text("%s: Google Benchmark, %zu benchmarks", b.path.c_str(), b.table->rows.size());
      else
        ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(color::error), "%s", b.error.c_str());
    if (state_.sources.results.empty() && state_.sources.traces.empty() && state_.sources.benchmarks.empty())
      ImGui::TextDisabled("nothing loaded");
    ImGui::EndMenu();
  }
  if (ImGui::BeginMenu("View")) {
    for (auto& v : views_) ImGui::MenuItem(v->name(), nullptr, &v->open);
    ImGui::Separator();
    if (ImGui::MenuItem("Tile windows")) retile_ = true;
    ImGui::EndMenu();
  }
  const reports::Case* c = state_.sources.find(state_.selected);
  ImGui::SetNextItemWidth(360);
  if (ImGui::BeginCombo("##case", c ? case_label(*c).c_str() : "no case selected")) {
    for (CaseRef r : state_.sources.all_cases()) {
      const reports::Case* x = state_.sources.find(r);
      std::string label = fmt::format("{}  ({})##{}_{}", case_label(*x),
                                      std::filesystem::path(state_.sources.results[static_cast<size_t>(r.file)].path).filename().string(),
                                      r.file, r.index);
      if (ImGui::Selectable(label.c_str(), r == state_.selected)) state_.selected = r;
    }
    ImGui::EndCombo();
  }
  auto errors = state_.sources.errors();
  if (!errors.empty()) ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(color::error), "%zu file problem(s): %s", errors.size(), errors[0].c_str());
  ImGui::EndMainMenuBar();
}

void Dashboard::frame() {
  menu_bar();
  ImGuiViewport* vp = ImGui::GetMainViewport();
  ImVec2 o = vp->WorkPos, sz = vp->WorkSize;
  ImGuiCond cond = retile_ ? ImGuiCond_Always : ImGuiCond_FirstUseEver;
  for (size_t i = 0; i < views_.size(); ++i) {
    View& v = *views_[i];
    if (!v.open) continue;
    if (i < std::size(kTiles)) {
      const float* t = i == 8 && bench_on_top_ ? kBenchTopTile : kTiles[i];
      ImGui::SetNextWindowPos(ImVec2(o.x + t[0] * sz.x, o.y + t[1] * sz.y), cond);
      ImGui::SetNextWindowSize(ImVec2(t[2] * sz.x, t[3] * sz.y), cond);
    }
    if (ImGui::Begin(v.name(), &v.open)) {
      try {
        v.draw(state_);
      } catch (const std::exception& e) {
        note_line(fmt::format("{}: {}", v.name(), e.what()), true);
      }
    }
    ImGui::End();
  }
  retile_ = false;
}

}  // namespace moebench::ui
