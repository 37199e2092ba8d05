// dashboard.h: the dashboard as ImGui calls, without a window system or GL: a
// menu bar (File info, View toggles, the case picker) and one window per view,
// tiled on first use. The glue (ui/glue/) owns the window and the renderer and
// calls frame() once per ImGui frame; the tests call it with no backend.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "ui/views/view.h"

namespace moebench::ui {

struct DashboardOptions {
  std::vector<std::string> results_files;  // results (.json or .json.gz) or Google Benchmark JSON
  std::vector<std::string> trace_files;  // also: each results file's run.trace_file, when it exists
  bool live = true;                      // offer the live view (engine runner)
};

class Dashboard {
 public:
  explicit Dashboard(const DashboardOptions& o);
  // Builds one ImGui frame's windows (between ImGui::NewFrame and ImGui::Render).
  void frame();
  DashboardState& state() { return state_; }
  const std::vector<std::unique_ptr<View>>& views() const { return views_; }

 private:
  void menu_bar();

  DashboardState state_;
  std::vector<std::unique_ptr<View>> views_;
  bool retile_ = false;
  bool bench_on_top_ = false;  // only Google Benchmark files: their table takes the upper two rows
};

}  // namespace moebench::ui
