// stages_view.cpp: the stage comparison — for each metric, one horizontal bar per
// stage (baseline -> P0 -> P1 -> P2), the value, and its % of the physical bound
// where the results carry one.
#include <fmt/format.h>
#include <imgui.h>

#include <algorithm>
#include <cmath>

#include "ui/model/stages_frame.h"
#include "ui/views/chart.h"
#include "ui/views/view.h"

namespace moebench::ui {

namespace {

ImU32 stage_color(const std::string& stage) {
  int r = stage_rank(stage);
  static const ImU32 c[] = {IM_COL32(150, 150, 160, 255), IM_COL32(80, 170, 255, 255), IM_COL32(110, 210, 130, 255),
                            IM_COL32(255, 170, 60, 255), IM_COL32(200, 120, 220, 255)};
  return c[std::clamp(r, 0, 4)];
}

void draw_metric(const StageMetric& m) {
  ImGui::TextUnformatted(m.title.c_str());
  ImGui::SameLine();
  ImGui::TextDisabled(m.higher_is_better ? "(higher is better)" : "(lower is better)");
  ImDrawList* dl = ImGui::GetWindowDrawList();
  const float label_w = 64, text_w = 170, h = ImGui::GetTextLineHeight() + 2;
  float avail = ImGui::GetContentRegionAvail().x;
  float bar_w = std::max(40.0f, avail - label_w - text_w);
  for (auto& b : m.bars) {
    ImVec2 pos = ImGui::GetCursorScreenPos();
    dl->AddText(pos, color::text, b.stage.c_str());
    ImVec2 a(pos.x + label_w, pos.y + 1), z(a.x + bar_w, pos.y + h - 1);
    dl->AddRectFilled(a, z, IM_COL32(40, 42, 50, 255));
    if (std::isfinite(b.value) && m.max_value > 0) {
      float fw = static_cast<float>(b.value / m.max_value) * bar_w;
      dl->AddRectFilled(a, ImVec2(a.x + std::max(fw, 1.0f), z.y), stage_color(b.stage));
    }
    std::string t = b.text;
    if (b.bound_percent) t += fmt::format("  {:.1f}% of bound", *b.bound_percent);
    if (b.n_cases > 1) t += fmt::format("  (median of {})", b.n_cases);
    dl->AddText(ImVec2(z.x + 6, pos.y), std::isfinite(b.value) ? color::text : IM_COL32(140, 140, 140, 255), t.c_str());
    ImGui::Dummy(ImVec2(avail, h));
  }
}

class StagesView : public View {
 public:
  const char* name() const override { return "Stage comparison"; }

  void draw(DashboardState& s) override {
    StagesFrame f = build_stages_frame(s.sources, key_);
    ImGui::SetNextItemWidth(260);
    if (ImGui::BeginCombo("case", key_.empty() ? "every case (median per stage)" : key_.c_str())) {
      if (ImGui::Selectable("every case (median per stage)", key_.empty())) key_.clear();
      for (auto& k : f.case_keys)
        if (ImGui::Selectable(k.c_str(), k == key_)) key_ = k;
      ImGui::EndCombo();
    }
    if (f.stages.empty()) {
      ImGui::TextDisabled("no finished cases to compare");
      return;
    }
    if (!ImGui::BeginTable("metrics", 2, ImGuiTableFlags_SizingStretchSame)) return;
    for (size_t i = 0; i < f.metrics.size(); ++i) {
      if (i % 2 == 0) ImGui::TableNextRow();
      ImGui::TableSetColumnIndex(static_cast<int>(i % 2));
      draw_metric(f.metrics[i]);
    }
    ImGui::EndTable();
  }

 private:
  std::string key_;
};

}  // namespace

std::unique_ptr<View> make_stages_view() { return std::make_unique<StagesView>(); }

}  // namespace moebench::ui
