// runs_frame.h: the runs table as plain rows — one per case of every loaded
// results file — filtered and sorted. Columns are the file's identity (model,
// device, policy, routing) followed by reports::summary_columns(), the same
// table the Markdown and HTML reports print; timings measured once per repetition
// (decode and prefill tok/s, TTFT) read "median ±interval (n=R)" (case_intervals.h).
#pragma once
#include <string>
#include <vector>

#include "ui/model/sources.h"

namespace moebench::ui {

// Case-insensitive substring filters; empty matches everything.
struct RunsFilter {
  std::string model, stage, suite, policy, routing, device;
};

struct RunsColumn {
  std::string key;     // "model", then summary_columns() keys
  std::string header;
  bool numeric = false;
};

struct RunRow {
  CaseRef ref;
  std::vector<std::string> cells;  // (n_columns)
  std::vector<double> values;      // (n_columns) NaN where not numeric / n/a
  bool failed = false;
  std::string error;               // the case's error line when failed
};

struct RunsFrame {
  std::vector<RunsColumn> columns;
  std::vector<RunRow> rows;  // filtered, sorted
  int total = 0;             // rows before filtering
};

// The columns of the table (identity columns first).
std::vector<RunsColumn> runs_columns();
// Index of a column by key, or -1.
int runs_column_index(const std::string& key);

// sort_column < 0 keeps file order. Numeric columns sort by value with n/a
// last; text columns by text. Ties keep file order.
RunsFrame build_runs_frame(const Sources& s, const RunsFilter& filter, int sort_column = -1, bool ascending = true);

// The knob a case ran with, as text ("" when absent).
std::string knob_text(const reports::Case& c, const std::string& key);

}  // namespace moebench::ui
