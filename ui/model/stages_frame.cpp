// stages_frame.cpp: see stages_frame.h.
#include "ui/model/stages_frame.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "profiler/stats.h"
#include "reports/fields.h"
#include "ui/model/bench_table.h"
#include "ui/model/case_intervals.h"

namespace moebench::ui {

namespace {

struct MetricSpec {
  const char* key;
  const char* title;
  bool higher_is_better;
  std::string (*format)(double);
};

const std::vector<MetricSpec>& metric_specs() {
  static const std::vector<MetricSpec> m = {
      {"decode_tok_s", "decode tok/s", true, [](double v) { return profiler::format_rate(v, "tok/s"); }},
      {"ttft_cold_ns", "TTFT cold (load included)", false, [](double v) { return profiler::format_ns(v); }},
      {"ttft_warm_ns", "TTFT warm", false, [](double v) { return profiler::format_ns(v); }},
      {"hit_rate", "expert-cache hit rate", true, [](double v) { return profiler::format_percent(v); }},
      {"mean_expert_load_ns", "expert load time (mean)", false, [](double v) { return profiler::format_ns(v); }},
      {"memory_peak_bytes", "memory peak", false, [](double v) { return profiler::format_bytes(v); }},
  };
  return m;
}

const reports::SummaryColumn* column(const std::string& key) {
  for (auto& c : reports::summary_columns())
    if (key == c.key) return &c;
  return nullptr;
}

double median_of(std::vector<double> v) { return v.empty() ? std::numeric_limits<double>::quiet_NaN() : profiler::median(std::move(v)); }

}  // namespace

std::string StageGroup::label() const { return device + " / " + model + " / " + backend; }

std::string case_key(const reports::Case& c) { return c.suite + "/" + c.name; }

int stage_rank(const std::string& stage) {
  static const char* order[] = {"baseline", "P0", "P1", "P2"};
  for (int i = 0; i < 4; ++i)
    if (stage == order[i]) return i;
  return 4;
}

StagesFrame build_stages_frame(const Sources& s, const std::string& group_label, const std::string& key_filter) {
  StagesFrame f;
  // Group every ok case; the group compared is the one asked for, else the first.
  std::vector<int> group_of;  // per all_cases() entry, -1 for failed cases
  std::vector<CaseRef> refs = s.all_cases();
  for (CaseRef ref : refs) {
    const reports::Case& c = *s.find(ref);
    if (c.status != reports::CaseStatus::ok) {
      group_of.push_back(-1);
      continue;
    }
    const reports::Results& r = *s.results_of(ref);
    StageGroup g{r.device.name, r.model.name, case_backend(r, c), 0};
    auto it = std::find_if(f.groups.begin(), f.groups.end(), [&](const StageGroup& x) {
      return x.device == g.device && x.model == g.model && x.backend == g.backend;
    });
    if (it == f.groups.end()) it = f.groups.insert(f.groups.end(), g);
    ++it->n_cases;
    group_of.push_back(static_cast<int>(it - f.groups.begin()));
  }
  if (f.groups.empty()) return f;
  f.group = 0;
  for (size_t g = 0; g < f.groups.size(); ++g)
    if (f.groups[g].label() == group_label) f.group = static_cast<int>(g);

  std::set<std::string> keys;
  std::map<std::string, std::vector<const reports::Case*>> by_stage;
  for (size_t i = 0; i < refs.size(); ++i) {
    if (group_of[i] != f.group) continue;
    const reports::Case& c = *s.find(refs[i]);
    keys.insert(case_key(c));
    if (!key_filter.empty() && case_key(c) != key_filter) continue;
    by_stage[c.settings.stage].push_back(&c);
  }
  f.case_keys.assign(keys.begin(), keys.end());
  for (auto& [stage, cases] : by_stage) f.stages.push_back(stage);
  std::stable_sort(f.stages.begin(), f.stages.end(), [](const std::string& a, const std::string& b) {
    int ra = stage_rank(a), rb = stage_rank(b);
    return ra != rb ? ra < rb : a < b;
  });
  for (auto& spec : metric_specs()) {
    const reports::SummaryColumn* col = column(spec.key);
    if (!col) continue;
    StageMetric m;
    m.key = spec.key;
    m.title = spec.title;
    m.higher_is_better = spec.higher_is_better;
    for (auto& stage : f.stages) {
      std::vector<double> vals, bounds;
      const reports::Case* only = nullptr;  // the case behind the bar when there is one
      for (const reports::Case* c : by_stage[stage]) {
        double v = col->value(*c);
        // A peak of 0 bytes is "not measured" (the cpu backend has no device arena).
        if (m.key == "memory_peak_bytes" && v == 0) continue;
        if (std::isfinite(v)) {
          vals.push_back(v);
          only = c;
        }
        if (m.key == "decode_tok_s" && c->bound && std::isfinite(c->bound->percent)) bounds.push_back(c->bound->percent);
      }
      StageBar b;
      b.stage = stage;
      b.n_cases = static_cast<int>(vals.size());
      b.value = median_of(vals);
      b.text = std::isfinite(b.value) ? spec.format(b.value) : "-";
      if (b.n_cases > 1) {
        b.interval = reports::median_interval(vals);
      } else if (b.n_cases == 1 && has_repetition_values(m.key)) {
        b.interval = case_interval(*only, m.key);
        // The bar is the stored aggregate; the interval's median is the same figure.
        if (b.interval && std::fabs(b.interval->median - b.value) > 1e-9 * std::fabs(b.value)) b.interval.reset();
      }
      if (b.interval) b.text = interval_text(*b.interval, spec.format, b.n_cases > 1 ? "cases" : "reps");
      if (!bounds.empty()) b.bound_percent = median_of(bounds);
      if (std::isfinite(b.value)) m.max_value = std::max(m.max_value, b.value);
      m.bars.push_back(std::move(b));
    }
    f.metrics.push_back(std::move(m));
  }
  return f;
}

}  // namespace moebench::ui
