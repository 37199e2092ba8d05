// bench_view.cpp: the Google Benchmark files (kernel and offload microbenchmarks)
// as tables — benchmark name, real time as median ± interval (n = repetitions),
// CPU time, iterations, bytes/s, items/s and every user counter the file has —
// with the file's context (device, host, date) above each table.
#include <fmt/format.h>
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>
#include <cmath>

#include "ui/model/bench_table.h"
#include "ui/views/chart.h"
#include "ui/views/view.h"

namespace moebench::ui {

namespace {

// A value with SI prefix: 3.36e12 -> "3.36 T"; counters carry no unit in the file.
std::string si(double v) {
  static const char* prefix[] = {"", " k", " M", " G", " T", " P"};
  int i = 0;
  double a = std::fabs(v);
  while (a >= 1000 && i < 5) {
    a /= 1000;
    v /= 1000;
    ++i;
  }
  return fmt::format("{:.3g}{}", v, prefix[i]);
}

std::string time_text(double v, const std::string& unit) { return fmt::format("{:.4g} {}", v, unit); }

class BenchView : public View {
 public:
  const char* name() const override { return "Benchmarks"; }

  void draw(DashboardState& s) override {
    auto& files = s.sources.benchmarks;
    if (files.empty()) {
      ImGui::TextDisabled("no Google Benchmark file loaded: moebench dashboard kernels.json (moebench_bench --benchmark_format=json)");
      return;
    }
    std::vector<std::string> paths;
    for (auto& f : files) paths.push_back(f.path);
    file_combo("file", paths, current_, 360);
    const BenchFile& bf = files[static_cast<size_t>(current_)];
    if (!bf.table) {
      note_line(bf.error, true);
      return;
    }
    const BenchTable& t = *bf.table;
    auto ctx = [&](const char* k) {
      auto it = t.context.find(k);
      return it == t.context.end() ? std::string("?") : it->second;
    };
    ImGui::TextUnformatted(bf.path.c_str());
    ImGui::TextDisabled("device %s, host %s, %s cpus, %s build of the benchmark library, %s", ctx("device").c_str(),
                        ctx("host_name").c_str(), ctx("num_cpus").c_str(), ctx("library_build_type").c_str(), ctx("date").c_str());
    ImGui::SetNextItemWidth(220);
    ImGui::InputTextWithHint("##filter", "filter by name", &filter_);
    size_t shown = 0;
    for (auto& r : t.rows) shown += filter_.empty() || r.name.find(filter_) != std::string::npos;
    ImGui::SameLine();
    ImGui::TextDisabled("%zu of %zu benchmarks; counters as the file gives them (a rate counter is per second)", shown, t.rows.size());
    int ncols = 4 + static_cast<int>(t.counter_names.size());
    ImGuiTableFlags flags = ImGuiTableFlags_Borders | ImGuiTableFlags_RowBg | ImGuiTableFlags_ScrollX | ImGuiTableFlags_ScrollY |
                            ImGuiTableFlags_Resizable | ImGuiTableFlags_SizingFixedFit;
    if (!ImGui::BeginTable("bench", ncols, flags)) return;
    ImGui::TableSetupScrollFreeze(1, 1);
    ImGui::TableSetupColumn("benchmark");
    ImGui::TableSetupColumn("real time (median ± interval)");
    ImGui::TableSetupColumn("CPU time");
    ImGui::TableSetupColumn("iterations");
    for (auto& c : t.counter_names) ImGui::TableSetupColumn(c.c_str());
    ImGui::TableHeadersRow();
    for (const BenchRow& r : t.rows) {
      if (!filter_.empty() && r.name.find(filter_) == std::string::npos) continue;
      ImGui::TableNextRow();
      ImGui::TableSetColumnIndex(0);
      ImGui::TextUnformatted(r.name.c_str());
      ImGui::TableSetColumnIndex(1);
      if (!r.error.empty()) {
        ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(color::error), "%s", r.error.c_str());
        continue;
      }
      auto in_unit = [&](double v) { return time_text(v, r.time_unit); };
      std::string real = interval_text(r.real_time, in_unit);
      if (r.from_aggregate) real = fmt::format("{} (median aggregate of {})", in_unit(r.real_time.median), r.aggregate_repetitions);
      ImGui::TextUnformatted(real.c_str());
      ImGui::TableSetColumnIndex(2);
      ImGui::TextUnformatted(in_unit(r.cpu_time.median).c_str());
      ImGui::TableSetColumnIndex(3);
      ImGui::Text("%lld", static_cast<long long>(r.iterations));
      for (size_t c = 0; c < t.counter_names.size(); ++c) {
        ImGui::TableSetColumnIndex(4 + static_cast<int>(c));
        auto it = r.counters.find(t.counter_names[c]);
        ImGui::TextUnformatted(it == r.counters.end() ? "-" : si(it->second).c_str());
      }
    }
    ImGui::EndTable();
  }

 private:
  int current_ = 0;
  std::string filter_;
};

}  // namespace

std::unique_ptr<View> make_bench_view() { return std::make_unique<BenchView>(); }

}  // namespace moebench::ui
