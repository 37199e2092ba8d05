// heatmap_view.cpp: layer x expert usage of the selected case (token -> expert
// assignments), coloured per layer or over the whole matrix; hover for counts.
#include <fmt/format.h>
#include <imgui.h>

#include <algorithm>

#include "ui/model/chart_frames.h"
#include "ui/views/chart.h"
#include "ui/views/view.h"

namespace moebench::ui {

namespace {

class HeatmapView : public View {
 public:
  const char* name() const override { return "Expert usage"; }

  void draw(DashboardState& s) override {
    const reports::Case* c = selected_case(s);
    if (!c) return;
    HeatmapFrame f = build_heatmap_frame(*c, per_layer_);
    ImGui::Text("%s", case_label(*c).c_str());
    ImGui::SameLine();
    ImGui::Checkbox("scale per layer", &per_layer_);
    if (!f.note.empty()) note_line(f.note);
    if (f.cells.empty()) return;
    ImVec2 avail = ImGui::GetContentRegionAvail();
    const float left = 56, top = 16;
    float cw = std::max(2.0f, (avail.x - left - 4) / static_cast<float>(f.n_experts));
    float ch = std::max(2.0f, (avail.y - top - 4) / static_cast<float>(f.n_layers));
    ImVec2 o = ImGui::GetCursorScreenPos();
    ImGui::InvisibleButton("heat", ImVec2(left + cw * f.n_experts, top + ch * f.n_layers));
    bool hovered = ImGui::IsItemHovered();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    int label_every = std::max(1, static_cast<int>(14.0f / ch));
    for (int l = 0; l < f.n_layers; l += label_every)
      dl->AddText(ImVec2(o.x, o.y + top + l * ch), color::text, fmt::format("layer {}", l).c_str());
    int e_every = std::max(1, static_cast<int>(24.0f / cw));
    for (int e = 0; e < f.n_experts; e += e_every)
      dl->AddText(ImVec2(o.x + left + e * cw + 2, o.y), color::text, fmt::format("{}", e).c_str());
    for (const HeatCell& cell : f.cells) {
      ImVec2 a(o.x + left + cell.expert * cw, o.y + top + cell.layer * ch);
      dl->AddRectFilled(a, ImVec2(a.x + cw - 1, a.y + ch - 1), color::heat(cell.intensity));
    }
    if (hovered) {
      ImVec2 m = ImGui::GetIO().MousePos;
      int e = static_cast<int>((m.x - o.x - left) / cw), l = static_cast<int>((m.y - o.y - top) / ch);
      if (e >= 0 && e < f.n_experts && l >= 0 && l < f.n_layers) {
        const HeatCell& cell = f.cells[static_cast<size_t>(l * f.n_experts + e)];
        ImGui::SetTooltip("layer %d, expert %d: %lld assignments (%s of the layer)", l, e,
                          static_cast<long long>(cell.count), fmt_percent(cell.share).c_str());
      }
    }
  }

 private:
  bool per_layer_ = true;
};

}  // namespace

std::unique_ptr<View> make_heatmap_view() { return std::make_unique<HeatmapView>(); }

}  // namespace moebench::ui
