// live_view.cpp: launches a run on a background thread (LiveRunner), shows each
// token's latency as it arrives, and can cancel it. Finished runs join the
// loaded results (the Runs table and every chart see them) and can be saved.
#include <fmt/format.h>
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>

#include "reports/results.h"
#include "ui/views/chart.h"
#include "ui/views/view.h"

namespace moebench::ui {

namespace {

class LiveView : public View {
 public:
  LiveView() { open = true; }
  const char* name() const override { return "Live run"; }

  void draw(DashboardState& s) override {
    if (!s.live) {
      ImGui::TextDisabled("no live runner in this build");
      return;
    }
    LiveSnapshot snap = s.live->poll();
    bool running = snap.state == LiveState::running;
    ImGui::BeginDisabled(running);
    ImGui::SetNextItemWidth(200);
    ImGui::InputText("model", &settings_.model);
    ImGui::SameLine();
    static const char* stages[] = {"baseline", "P0", "P1", "P2"};
    for (int i = 0; i < 4; ++i) {
      ImGui::SameLine();
      ImGui::Checkbox(stages[i], &use_stage_[i]);
    }
    ImGui::SetNextItemWidth(80);
    ImGui::InputInt("prompt", &settings_.prompt_tokens, 0);
    ImGui::SameLine();
    ImGui::SetNextItemWidth(80);
    ImGui::InputInt("new tokens", &settings_.new_tokens, 0);
    ImGui::SameLine();
    ImGui::SetNextItemWidth(60);
    ImGui::InputInt("reps", &settings_.repetitions, 0);
    ImGui::SameLine();
    ImGui::SetNextItemWidth(60);
    ImGui::InputInt("slots (0: stage)", &settings_.cache_slots, 0);
    settings_.prompt_tokens = std::clamp(settings_.prompt_tokens, 1, 4096);
    settings_.new_tokens = std::clamp(settings_.new_tokens, 1, 100000);
    settings_.repetitions = std::clamp(settings_.repetitions, 1, 100);
    settings_.cache_slots = std::max(settings_.cache_slots, 0);
    if (ImGui::Button("Start")) {
      settings_.stages.clear();
      for (int i = 0; i < 4; ++i)
        if (use_stage_[i]) settings_.stages.push_back(stages[i]);
      if (!settings_.stages.empty()) {
        s.live->start(settings_);
        added_version_ = 0;
      }
    }
    ImGui::EndDisabled();
    ImGui::SameLine();
    ImGui::BeginDisabled(!running);
    if (ImGui::Button("Cancel")) s.live->cancel();
    ImGui::EndDisabled();
    ImGui::SameLine();
    ImGui::Text("%s", to_string(snap.state));
    if (snap.state == LiveState::idle) {
      ImGui::PushStyleColor(ImGuiCol_Text, ImGui::GetStyleColorVec4(ImGuiCol_TextDisabled));
      ImGui::TextWrapped("Start runs the engine's generate() loop on %s (cpu backend) on a background thread, one case per "
                         "stage; token latencies stream in here, and finished runs join the Runs table.",
                         settings_.model.c_str());
      ImGui::PopStyleColor();
      return;
    }
    if (!snap.error.empty()) note_line(snap.error, true);
    int done = snap.results ? static_cast<int>(snap.results->cases.size()) : 0;
    float frac = snap.n_cases > 0 ? static_cast<float>(done) / static_cast<float>(snap.n_cases) : 0;
    if (running && settings_.new_tokens > 0)
      frac += static_cast<float>(snap.latency_ns.size()) / static_cast<float>(settings_.new_tokens) /
              static_cast<float>(std::max(1, snap.n_cases)) / static_cast<float>(settings_.repetitions + 1);
    ImGui::ProgressBar(std::min(frac, 1.0f), ImVec2(-1, 0),
                       running ? fmt::format("case {}/{} {} rep {}  token {}", snap.case_index + 1, snap.n_cases,
                                             snap.case_label, snap.repetition < 0 ? "warm-up" : std::to_string(snap.repetition),
                                             snap.latency_ns.size()).c_str()
                               : fmt::format("{} cases finished", done).c_str());

    // Finished runs join the loaded results once.
    if (!running && snap.results && !snap.results->cases.empty() && added_version_ != snap.version) {
      added_version_ = snap.version;
      ResultsFile f;
      f.path = fmt::format("live run {}", ++s.live_files_added);
      f.results = *snap.results;
      s.sources.results.push_back(std::move(f));
      s.selected = {static_cast<int>(s.sources.results.size()) - 1, 0};
    }
    if (!running && snap.results && !snap.results->cases.empty()) {
      ImGui::SetNextItemWidth(260);
      ImGui::InputText("##save", &save_path_);
      ImGui::SameLine();
      if (ImGui::Button("Save results")) {
        try {
          reports::save_results(save_path_, *snap.results);
          save_msg_ = "saved " + save_path_;
        } catch (const std::exception& e) {
          save_msg_ = e.what();
        }
      }
      if (!save_msg_.empty()) ImGui::TextDisabled("%s", save_msg_.c_str());
    }

    // The current repetition, token by token.
    std::vector<reports::Point> pre, dec;
    double ymax = 1;
    for (size_t i = 0; i < snap.latency_ns.size(); ++i) {
      double v = static_cast<double>(snap.latency_ns[i]);
      (snap.phase[i] == reports::Phase::prefill ? pre : dec).push_back({static_cast<double>(i), v});
      ymax = std::max(ymax, v);
    }
    if (pre.empty() && dec.empty()) return;
    Plot p = begin_plot("live", ImVec2(0, 0), 0, std::max<double>(static_cast<double>(settings_.new_tokens), 2.0), 0,
                        ymax * 1.1, fmt_plain, fmt_ns);
    plot_line(p, dec, color::decode, 1.2f);
    plot_dots(p, pre, color::prefill, 3.0f);
  }

 private:
  LiveSettings settings_;
  bool use_stage_[4] = {true, true, true, true};
  uint64_t added_version_ = 0;
  std::string save_path_ = "live_results.json";
  std::string save_msg_;
};

}  // namespace

std::unique_ptr<View> make_live_view() { return std::make_unique<LiveView>(); }

}  // namespace moebench::ui
