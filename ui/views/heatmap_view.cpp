// heatmap_view.cpp: layer x expert usage of the selected case (token -> expert
// assignments), coloured per layer or over the whole matrix; hover for counts.
#include <fmt/format.h>
#include <imgui.h>

#include <algorithm>
#include <string>

#include "ui/model/chart_frames.h"
#include "ui/model/layout.h"
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
    // Labels are measured: the left margin holds the widest layer label, and only
    // every k-th layer / expert is labelled, k such that labels never overlap.
    const std::string widest_layer = fmt::format("layer {}", f.n_layers - 1);
    const float text_h = ImGui::GetTextLineHeight();
    const float left = ImGui::CalcTextSize(widest_layer.c_str()).x + 8, top = text_h + 3;
    float cw = std::max(2.0f, (avail.x - left - 4) / static_cast<float>(f.n_experts));
    float ch = std::max(2.0f, (avail.y - top - 4) / static_cast<float>(f.n_layers));
    ImVec2 o = ImGui::GetCursorScreenPos();
    ImGui::InvisibleButton("heat", ImVec2(left + cw * f.n_experts, top + ch * f.n_layers));
    bool hovered = ImGui::IsItemHovered();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    int label_every = label_stride(f.n_layers, ch, text_h);
    for (int l = 0; l < f.n_layers; l += label_every) {
      std::string t = fmt::format("layer {}", l);
      // Right-aligned against the cells, centred on the row.
      float tw = ImGui::CalcTextSize(t.c_str()).x;
      dl->AddText(ImVec2(o.x + left - 6 - tw, o.y + top + l * ch + (ch - text_h) / 2), color::text, t.c_str());
    }
    float expert_w = ImGui::CalcTextSize(fmt::format("{}", f.n_experts - 1).c_str()).x;
    int e_every = label_stride(f.n_experts, cw, expert_w, 6);
    for (int e = 0; e < f.n_experts; e += e_every) {
      std::string t = fmt::format("{}", e);
      float tw = ImGui::CalcTextSize(t.c_str()).x;
      dl->AddText(ImVec2(o.x + left + e * cw + (cw - tw) / 2, o.y), color::text, t.c_str());
    }
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
