// hitrate_view.cpp: expert-cache hit rate over the steps of the selected case —
// the overall series and one line per layer, with each layer's total hit rate.
#include <fmt/format.h>
#include <imgui.h>

#include <cmath>

#include "ui/model/chart_frames.h"
#include "ui/views/chart.h"
#include "ui/views/view.h"

namespace moebench::ui {

namespace {

class HitRateView : public View {
 public:
  const char* name() const override { return "Hit rate"; }

  void draw(DashboardState& s) override {
    const reports::Case* c = selected_case(s);
    if (!c) return;
    const size_t max_points = chart_max_points();
    HitRateFrame f = build_hitrate_frame(*c, max_points, smooth_);
    ImGui::Text("%s  overall %s", case_label(*c).c_str(), fmt_percent(c->aggregates.hit_rate).c_str());
    if (!f.note.empty()) note_line(f.note);
    if (f.n_steps == 0) return;
    ImGui::Checkbox("per layer", &per_layer_);
    ImGui::SameLine();
    ImGui::SetNextItemWidth(100);
    ImGui::SliderInt("mean of steps", &smooth_, 1, 64);
    int n = static_cast<int>(f.per_layer.size());
    if (per_layer_ && n > 0) {
      ImGui::SameLine();
      ImGui::SetNextItemWidth(140);
      ImGui::SliderInt("only layer (-1 all)", &only_, -1, n - 1);
    }
    Plot p = begin_plot("hitrate", ImVec2(0, 0), 0, static_cast<double>(f.n_steps), 0, 1.05, fmt_plain, fmt_percent);
    if (per_layer_)
      for (int l = 0; l < n; ++l)
        if (only_ < 0 || only_ == l) plot_line(p, f.per_layer[static_cast<size_t>(l)], color::series(l, n, 0.7f), 1.0f);
    plot_line(p, f.overall, IM_COL32(255, 255, 255, 255), 2.0f);
    if (p.hovered) {
      ImGui::BeginTooltip();
      ImGui::Text("step %.0f", p.x_of(ImGui::GetIO().MousePos.x));
      for (size_t l = 0; l < f.layer_hit_rate.size(); ++l)
        if (std::isfinite(f.layer_hit_rate[l]))
          ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(color::series(static_cast<int>(l), n)), "layer %zu: %s total",
                             l, fmt_percent(f.layer_hit_rate[l]).c_str());
      ImGui::EndTooltip();
    }
  }

 private:
  bool per_layer_ = true;
  int only_ = -1;
  int smooth_ = 16;
};

}  // namespace

std::unique_ptr<View> make_hitrate_view() { return std::make_unique<HitRateView>(); }

}  // namespace moebench::ui
