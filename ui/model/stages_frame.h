// stages_frame.h: the stage comparison — baseline -> P0 -> P1 -> P2 — as bars:
// one group per metric (decode tok/s, TTFT cold and warm, hit rate, expert load
// time, memory peak), one bar per stage, each bar the median over the matching
// cases, with its % of the physical bound where the results carry one.
// Values come from reports::summary_columns(), so they match the reports.
// A comparison never mixes machines: cases are grouped by (device, model,
// backend) and one group is compared at a time; every figure says its group.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "ui/model/sources.h"

namespace moebench::ui {

struct StageBar {
  std::string stage;
  double value = 0;     // NaN: no case of this stage has the metric
  std::string text;     // formatted value, "-" when n/a; timings "median ±interval (n=...)"
  int n_cases = 0;      // cases whose value went into the median
  // The interval of `value` (reports::median_interval): over the cases' values when
  // n_cases > 1, over the one case's repetitions for timings; absent otherwise.
  std::optional<reports::MedianInterval> interval;
  std::optional<double> bound_percent;  // median % of the physical bound (decode tok/s)
};

struct StageMetric {
  std::string key;       // summary column key, "decode_tok_s"
  std::string title;     // "decode tok/s"
  bool higher_is_better = true;
  std::vector<StageBar> bars;  // one per stage present, in stage order
  double max_value = 0;        // largest finite bar (for scaling)
};

// The cases of one (device, model, backend): the only cases compared together.
struct StageGroup {
  std::string device;   // results' device.name ("NVIDIA H200", the CPU model)
  std::string model;    // results' model.name
  std::string backend;  // case_backend(): "cuda", "cpu"
  int n_cases = 0;      // ok cases
  std::string label() const;  // "NVIDIA H200 / mixtral-8x7b / cuda"
};

struct StagesFrame {
  std::vector<StageGroup> groups;  // in order of first appearance in the files
  int group = -1;                  // the group compared (index into groups); -1: no ok case
  std::vector<std::string> case_keys;  // "suite/case" of every case of the group, sorted, for the picker
  std::vector<std::string> stages;     // stages present, in order baseline, P0, P1, P2, then others
  std::vector<StageMetric> metrics;
};

// "suite/case": cases with the same key are compared across stages.
std::string case_key(const reports::Case& c);
// Position of a stage in the canonical order (baseline 0, P0 1, ...; others after).
int stage_rank(const std::string& stage);

// Compares the ok cases of the group whose label() is group_label ("" or a label
// no group has: the first group); case_key_filter "" takes every case of the
// group (median per stage), otherwise only cases of that key. Failed cases are
// left out.
StagesFrame build_stages_frame(const Sources& s, const std::string& group_label = "", const std::string& case_key_filter = "");

}  // namespace moebench::ui
