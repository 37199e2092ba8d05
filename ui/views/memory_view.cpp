// memory_view.cpp: device memory over the selected case — arena in use and
// cudaMemGetInfo used — with the peaks and pinned host memory.
#include <fmt/format.h>
#include <imgui.h>

#include <string>

#include "ui/model/chart_frames.h"
#include "ui/views/chart.h"
#include "ui/views/view.h"

namespace moebench::ui {

namespace {

class MemoryView : public View {
 public:
  const char* name() const override { return "Memory"; }

  void draw(DashboardState& s) override {
    const reports::Case* c = selected_case(s);
    if (!c) return;
    const size_t max_points = chart_max_points();
    const reports::Results& r = *s.sources.results_of(s.selected);
    const std::string backend = case_backend(r, *c);
    MemoryFrame f = build_memory_frame(*c, max_points, backend);
    ImGui::Text("%s", case_label(*c).c_str());
    dim_wrapped(fmt::format("{}, {} backend", r.device.name, backend));
    // 0 bytes is "not recorded", not an empty arena.
    auto bytes = [](int64_t b) { return b > 0 ? fmt_bytes(static_cast<double>(b)) : std::string("not recorded"); };
    std::string peaks = fmt::format("arena peak {}, device used peak {}, host pinned {}", bytes(f.arena_peak_bytes),
                                    bytes(f.device_used_peak_bytes), bytes(f.host_pinned_bytes));
    if (f.allocation_count) peaks += fmt::format(", {} allocations", *f.allocation_count);
    dim_wrapped(peaks);
    if (!f.note.empty()) note_line(f.note);
    if (f.arena.empty()) return;
    legend_item(IM_COL32(110, 210, 130, 255), "arena in use");
    if (!f.device_used.empty()) legend_item(IM_COL32(255, 170, 60, 255), "device used");
    ImGui::NewLine();
    Plot p = begin_plot("memory", ImVec2(0, 0), 0, f.t_max_ns, 0, f.y_max_bytes * 1.1, fmt_ns, fmt_bytes);
    plot_line(p, f.arena, IM_COL32(110, 210, 130, 255), 1.5f);
    plot_line(p, f.device_used, IM_COL32(255, 170, 60, 255), 1.5f);
    plot_hline(p, static_cast<double>(f.arena_peak_bytes), IM_COL32(110, 210, 130, 200), "arena peak");
  }
};

}  // namespace

std::unique_ptr<View> make_memory_view() { return std::make_unique<MemoryView>(); }

}  // namespace moebench::ui
