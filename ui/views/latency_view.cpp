// latency_view.cpp: per-step latency of the selected case — prefill steps and
// decode steps in their own colours, decode p50/p90/p99 marked. Wheel zooms the
// step axis, drag pans, double-click resets; series are decimated to the plot width.
#include <fmt/format.h>
#include <imgui.h>

#include "ui/model/chart_frames.h"
#include "ui/views/chart.h"
#include "ui/views/view.h"

namespace moebench::ui {

namespace {

class LatencyView : public View {
 public:
  const char* name() const override { return "Token latency"; }

  void draw(DashboardState& s) override {
    const reports::Case* c = selected_case(s);
    if (!c) return;
    ImGui::Text("%s", case_label(*c).c_str());
    const size_t max_points = chart_max_points();
    LatencyFrame f = build_latency_frame(*c, rep_, max_points, range_);
    if (f.n_repetitions > 1) {
      ImGui::SameLine();
      ImGui::SetNextItemWidth(120);
      ImGui::SliderInt("repetition", &rep_, 0, f.n_repetitions - 1);
    }
    if (!f.note.empty()) note_line(f.note);
    if (f.n_steps == 0) return;
    legend_item(color::prefill, "prefill");
    legend_item(color::decode, "decode");
    ImGui::Checkbox("scale to prefill", &scale_to_prefill_);
    ImGui::SameLine();
    dim_wrapped(fmt::format("{} steps; decode p50 {}, p90 {}, p99 {} (this repetition)", f.n_steps, fmt_ns(f.p50_ns),
                            fmt_ns(f.p90_ns), fmt_ns(f.p99_ns)));
    double y_max = scale_to_prefill_ || f.decode_y_max_ns <= 0 ? f.y_max_ns : f.decode_y_max_ns;
    Plot p = begin_plot("latency", ImVec2(0, 0), static_cast<double>(f.first), static_cast<double>(f.last), 0,
                        y_max * 1.1, fmt_plain, fmt_ns);
    plot_line(p, f.decode, color::decode, 1.2f);
    // Prefill steps above the scale sit on the top edge, labelled with their value.
    std::vector<reports::Point> pre = f.prefill;
    for (auto& q : pre)
      if (q.y > p.y1) {
        std::string t = "prefill " + fmt_ns(q.y);
        ImVec2 a = p.map(q.x, p.y1);
        p.dl->AddText(ImVec2(a.x + 6, a.y + 2), color::prefill, t.c_str());
        q.y = p.y1;
      }
    plot_dots(p, pre, color::prefill, 3.5f);
    plot_hline(p, f.p50_ns, IM_COL32(200, 255, 200, 230), "p50 " + fmt_ns(f.p50_ns), 1.0f);
    plot_hline(p, f.p90_ns, IM_COL32(255, 230, 120, 230), "p90 " + fmt_ns(f.p90_ns), 0.7f);
    plot_hline(p, f.p99_ns, IM_COL32(255, 120, 120, 230), "p99 " + fmt_ns(f.p99_ns), 0.4f);
    plot_zoom_x(p, range_, static_cast<double>(f.n_steps));
    if (p.hovered) {
      double x = p.x_of(ImGui::GetIO().MousePos.x);
      size_t i = static_cast<size_t>(std::max(0.0, x + 0.5));
      const auto& r = c->samples[static_cast<size_t>(f.repetition)];
      if (i < r.latency_ns.size())
        ImGui::SetTooltip("step %zu (%s): %s", i, reports::to_string(r.phase[i]),
                          fmt_ns(static_cast<double>(r.latency_ns[i])).c_str());
    }
  }

 private:
  int rep_ = 0;
  XRange range_;
  bool scale_to_prefill_ = false;
};

}  // namespace

std::unique_ptr<View> make_latency_view() { return std::make_unique<LatencyView>(); }

}  // namespace moebench::ui
