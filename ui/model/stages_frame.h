// stages_frame.h: the stage comparison — baseline -> P0 -> P1 -> P2 — as bars:
// one group per metric (decode tok/s, TTFT cold and warm, hit rate, expert load
// time, memory peak), one bar per stage, each bar the median over the matching
// cases, with its % of the physical bound where the results carry one.
// Values come from reports::summary_columns(), so they match the reports.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "ui/model/sources.h"

namespace moebench::ui {

struct StageBar {
  std::string stage;
  double value = 0;     // NaN: no case of this stage has the metric
  std::string text;     // formatted value, "-" when n/a
  int n_cases = 0;      // cases whose value went into the median
  std::optional<double> bound_percent;  // median % of the physical bound (decode tok/s)
};

struct StageMetric {
  std::string key;       // summary column key, "decode_tok_s"
  std::string title;     // "decode tok/s"
  bool higher_is_better = true;
  std::vector<StageBar> bars;  // one per stage present, in stage order
  double max_value = 0;        // largest finite bar (for scaling)
};

struct StagesFrame {
  std::vector<std::string> case_keys;  // "suite/case" of every case, sorted, for the picker
  std::vector<std::string> stages;     // stages present, in order baseline, P0, P1, P2, then others
  std::vector<StageMetric> metrics;
};

// "suite/case": cases with the same key are compared across stages.
std::string case_key(const reports::Case& c);
// Position of a stage in the canonical order (baseline 0, P0 1, ...; others after).
int stage_rank(const std::string& stage);

// case_key_filter "" compares every ok case (median per stage); otherwise only
// cases of that key. Failed cases are left out.
StagesFrame build_stages_frame(const Sources& s, const std::string& case_key_filter = "");

}  // namespace moebench::ui
