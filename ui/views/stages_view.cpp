// stages_view.cpp: the stage comparison — for each metric, one horizontal bar per
// stage (baseline -> P0 -> P1 -> P2), the value ± its interval, and its % of the
// physical bound where the results carry one — over the cases of one (device,
// model, backend) group, picked in a combo and named above the bars.
#include <fmt/format.h>
#include <imgui.h>

#include <algorithm>
#include <cmath>

#include "ui/model/layout.h"
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

std::string bar_text(const StageBar& b) {
  std::string t = b.text;
  if (b.bound_percent) t += fmt::format("  {:.1f}% of bound", *b.bound_percent);
  return t;
}

// One metric: its title, then per stage the name, the bar and its text. Every
// width is measured, so a text that does not fit beside its bar goes under it.
void draw_metric(const StageMetric& m) {
  ImGui::TextUnformatted(m.title.c_str());
  ImGui::SameLine();
  ImGui::TextDisabled(m.higher_is_better ? "(higher is better)" : "(lower is better)");
  ImDrawList* dl = ImGui::GetWindowDrawList();
  const float h = ImGui::GetTextLineHeight() + 2;
  float label_w = 0, text_w = 0;
  for (auto& b : m.bars) {
    label_w = std::max(label_w, ImGui::CalcTextSize(b.stage.c_str()).x);
    text_w = std::max(text_w, ImGui::CalcTextSize(bar_text(b).c_str()).x);
  }
  label_w += 8;
  float avail = ImGui::GetContentRegionAvail().x;
  StageRowLayout lay = stage_row_layout(avail, label_w, text_w);
  for (auto& b : m.bars) {
    ImVec2 pos = ImGui::GetCursorScreenPos();
    dl->AddText(pos, color::text, b.stage.c_str());
    ImVec2 a(pos.x + label_w, pos.y + 1), z(a.x + lay.bar_w, pos.y + h - 1);
    dl->AddRectFilled(a, z, IM_COL32(40, 42, 50, 255));
    if (std::isfinite(b.value) && m.max_value > 0) {
      float fw = static_cast<float>(b.value / m.max_value) * lay.bar_w;
      dl->AddRectFilled(a, ImVec2(a.x + std::max(fw, 1.0f), z.y), stage_color(b.stage));
    }
    std::string t = bar_text(b);
    ImVec2 tp = lay.text_below ? ImVec2(a.x, pos.y + h) : ImVec2(z.x + 8, pos.y);
    dl->AddText(tp, std::isfinite(b.value) ? color::text : IM_COL32(140, 140, 140, 255), t.c_str());
    ImGui::Dummy(ImVec2(avail, lay.text_below ? 2 * h : h));
  }
}

class StagesView : public View {
 public:
  const char* name() const override { return "Stage comparison"; }

  void draw(DashboardState& s) override {
    StagesFrame f = build_stages_frame(s.sources, group_, key_);
    if (f.group < 0) {
      ImGui::TextDisabled("no finished cases to compare");
      return;
    }
    const StageGroup& g = f.groups[static_cast<size_t>(f.group)];
    // Cases of different devices, models or backends are never compared: one group at a time.
    if (f.groups.size() > 1) {
      ImGui::SetNextItemWidth(std::min(420.0f, ImGui::GetContentRegionAvail().x * 0.6f));
      if (ImGui::BeginCombo("group", g.label().c_str())) {
        for (auto& x : f.groups) {
          std::string item = fmt::format("{}  ({} cases)", x.label(), x.n_cases);
          if (ImGui::Selectable(item.c_str(), x.label() == g.label())) {
            group_ = x.label();
            key_.clear();
          }
        }
        ImGui::EndCombo();
      }
      ImGui::SameLine();
      ImGui::TextDisabled("%zu groups, never mixed", f.groups.size());
    } else {
      ImGui::TextDisabled("group: %s", g.label().c_str());
    }
    ImGui::SetNextItemWidth(std::min(300.0f, ImGui::GetContentRegionAvail().x * 0.6f));
    if (ImGui::BeginCombo("case", key_.empty() ? "all cases (median per stage)" : key_.c_str())) {
      if (ImGui::Selectable("all cases (median per stage)", key_.empty())) key_.clear();
      for (auto& k : f.case_keys)
        if (ImGui::Selectable(k.c_str(), k == key_)) key_ = k;
      ImGui::EndCombo();
    }
    if (f.stages.empty()) {
      ImGui::TextDisabled("no finished cases to compare");
      return;
    }
    // Two columns only when a column is wide enough for a bar beside its widest text.
    float widest = 0;
    for (auto& m : f.metrics)
      for (auto& b : m.bars) widest = std::max(widest, ImGui::CalcTextSize(bar_text(b).c_str()).x);
    int cols = ImGui::GetContentRegionAvail().x >= 2 * (widest + 180) ? 2 : 1;
    if (!ImGui::BeginTable("metrics", cols, ImGuiTableFlags_SizingStretchSame)) return;
    for (size_t i = 0; i < f.metrics.size(); ++i) {
      if (i % static_cast<size_t>(cols) == 0) ImGui::TableNextRow();
      ImGui::TableSetColumnIndex(static_cast<int>(i % static_cast<size_t>(cols)));
      draw_metric(f.metrics[i]);
    }
    ImGui::EndTable();
  }

 private:
  std::string group_;  // StageGroup::label() of the group compared; "" the first
  std::string key_;
};

}  // namespace

std::unique_ptr<View> make_stages_view() { return std::make_unique<StagesView>(); }

}  // namespace moebench::ui
