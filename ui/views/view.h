// view.h: what every dashboard window is — a small unit with a name, an open
// flag toggled from the View menu, and a draw() that reads the shared state and
// draws its frame (ui/model/) with ImGui. One file per view.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "ui/model/live_runner.h"
#include "ui/model/sources.h"

namespace moebench::ui {

// Shared by all views; passed explicitly to each draw() (no globals).
struct DashboardState {
  Sources sources;
  CaseRef selected;                  // the case the per-case charts show
  std::unique_ptr<LiveRunner> live;  // null: the live view offers no runs
  int live_files_added = 0;          // live runs appended to sources.results
};

class View {
 public:
  virtual ~View() = default;
  virtual const char* name() const = 0;  // window title and menu entry
  // Draws the window's contents (the caller has already called ImGui::Begin).
  virtual void draw(DashboardState& s) = 0;
  bool open = true;
};

// The case selected in the Runs table; null (after a hint to select one) when none is.
const reports::Case* selected_case(const DashboardState& s);
// How many points a chart as wide as the window's free space should be thinned to.
size_t chart_max_points();

// One factory per view file.
std::unique_ptr<View> make_runs_view();
std::unique_ptr<View> make_stages_view();
std::unique_ptr<View> make_latency_view();
std::unique_ptr<View> make_hitrate_view();
std::unique_ptr<View> make_heatmap_view();
std::unique_ptr<View> make_memory_view();
std::unique_ptr<View> make_trace_view();
std::unique_ptr<View> make_live_view();
std::unique_ptr<View> make_bench_view();

}  // namespace moebench::ui
