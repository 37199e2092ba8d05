// runs_view.cpp: the runs table — every case of every loaded file, sortable by
// any column and filtered by model, stage, suite, policy, routing and device.
// Clicking a row selects the case the chart views show.
#include <imgui.h>
#include <imgui_stdlib.h>

#include "ui/model/runs_frame.h"
#include "ui/views/chart.h"
#include "ui/views/view.h"

namespace moebench::ui {

namespace {

class RunsView : public View {
 public:
  const char* name() const override { return "Runs"; }

  void draw(DashboardState& s) override {
    for (auto& e : s.sources.errors()) note_line(e, true);
    const float w = 110;
    auto field = [&](const char* label, std::string& v) {
      ImGui::SetNextItemWidth(w);
      ImGui::InputTextWithHint(label, "filter", &v);
      ImGui::SameLine();
    };
    field("model", filter_.model);
    field("stage", filter_.stage);
    field("suite", filter_.suite);
    field("policy", filter_.policy);
    field("routing", filter_.routing);
    ImGui::SetNextItemWidth(w);
    ImGui::InputTextWithHint("device", "filter", &filter_.device);

    RunsFrame f = build_runs_frame(s.sources, filter_, sort_column_, ascending_);
    ImGui::TextDisabled("%zu of %d cases", f.rows.size(), f.total);
    if (f.total == 0) {
      ImGui::TextDisabled("no results loaded: moebench dashboard RESULTS.json ... (or start a live run)");
      return;
    }
    ImGuiTableFlags flags = ImGuiTableFlags_Sortable | ImGuiTableFlags_Borders | ImGuiTableFlags_RowBg |
                            ImGuiTableFlags_ScrollX | ImGuiTableFlags_ScrollY | ImGuiTableFlags_Resizable |
                            ImGuiTableFlags_SizingFixedFit;
    if (!ImGui::BeginTable("runs", static_cast<int>(f.columns.size()), flags)) return;
    ImGui::TableSetupScrollFreeze(0, 1);
    for (size_t i = 0; i < f.columns.size(); ++i)
      ImGui::TableSetupColumn(f.columns[i].header.c_str(), ImGuiTableColumnFlags_None, 0, static_cast<ImGuiID>(i));
    ImGui::TableHeadersRow();
    if (ImGuiTableSortSpecs* specs = ImGui::TableGetSortSpecs(); specs && specs->SpecsDirty) {
      if (specs->SpecsCount > 0) {
        sort_column_ = static_cast<int>(specs->Specs[0].ColumnUserID);
        ascending_ = specs->Specs[0].SortDirection == ImGuiSortDirection_Ascending;
      }
      specs->SpecsDirty = false;
    }
    for (size_t r = 0; r < f.rows.size(); ++r) {
      const RunRow& row = f.rows[r];
      ImGui::TableNextRow();
      for (size_t c = 0; c < row.cells.size(); ++c) {
        ImGui::TableSetColumnIndex(static_cast<int>(c));
        if (c == 0) {
          ImGui::PushID(static_cast<int>(r));
          bool sel = row.ref == s.selected;
          if (ImGui::Selectable(row.cells[c].c_str(), sel, ImGuiSelectableFlags_SpanAllColumns)) s.selected = row.ref;
          if (row.failed && ImGui::IsItemHovered()) ImGui::SetTooltip("%s", row.error.c_str());
          ImGui::PopID();
        } else if (row.failed && f.columns[c].key == "status") {
          ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(color::error), "%s", row.cells[c].c_str());
        } else {
          ImGui::TextUnformatted(row.cells[c].c_str());
        }
      }
    }
    ImGui::EndTable();
  }

 private:
  RunsFilter filter_;
  int sort_column_ = -1;
  bool ascending_ = true;
};

}  // namespace

std::unique_ptr<View> make_runs_view() { return std::make_unique<RunsView>(); }

}  // namespace moebench::ui
