// fields.h: the one table of summary columns. The Markdown table, the HTML
// table and the dashboard's runs table all iterate summary_columns(), so a
// column is added in one place and appears in every output. Timing columns also
// give their per-repetition samples, from which the reports draw a 95% confidence
// interval of the median they show, and name the cells whose interval is wide.
#pragma once
#include <string>
#include <vector>

#include "reports/results.h"
#include "reports/significance.h"

namespace moebench::reports {

struct SummaryColumn {
  const char* key;     // stable id: "decode_tok_s"
  const char* header;  // what a table prints: "decode tok/s"
  bool numeric;        // right-aligned, sortable by value()
  std::string (*text)(const Case&);  // formatted cell ("n/a" / "-" when not applicable)
  double (*value)(const Case&);      // raw value for sorting and charts; NaN when not numeric or n/a
  // Timings: the per-repetition values whose median value() is (empty when the case
  // failed); nullptr for columns that are not a median over repetitions.
  std::vector<double> (*samples)(const Case&) = nullptr;
};

const std::vector<SummaryColumn>& summary_columns();

// Device memory peak (the larger of the arena peak and the cudaMemGetInfo peak), or,
// when the case used no device memory (the CPU backend), the process's peak
// resident set; bytes.
int64_t memory_peak_bytes(const Case& c);

// ---- confidence intervals of the timing columns ----
// The level every report states: 95%.
inline constexpr double kIntervalLevel = 0.95;
// An interval wider than this (relative margin) is named under the tables as noisy.
inline constexpr double kWideIntervalMargin = 0.05;

// median_interval() of a timing column's samples for a case; n = 0 when the column
// has no samples (not a timing, or the case failed).
MedianInterval column_interval(const SummaryColumn& col, const Case& c);
// The "±" a table prints: the larger distance from the median to an end of its
// interval, relative to the median, so median ± margin covers the whole interval
// (order statistics need not lie symmetrically around the median). 0 when n < 2.
double interval_margin(const MedianInterval& m);
// What follows a timing cell's median: " ±1.2% (n=10)"; with fewer repetitions than
// reach 95% the range of the samples and its own confidence: " ±4.0% (n=3, 75% CI)";
// one repetition: " (n=1, no CI)". "" when there are no samples.
std::string interval_suffix(const MedianInterval& m);
// A summary cell: col.text(c), followed by interval_suffix() for timing columns.
std::string cell_with_interval(const SummaryColumn& col, const Case& c);

// A timing cell of an ok case whose margin exceeds kWideIntervalMargin.
struct WideInterval {
  std::string case_label;  // "short/c0 (P0)"
  std::string column;      // the column's header
  double margin = 0;       // interval_margin(), e.g. 0.081
  int n = 0;               // repetitions
};
std::vector<WideInterval> wide_intervals(const Results& r);

// What the tables print under themselves: what the ± means ("" when no case has a
// timing), and when some interval is wide a warning with what narrows them and one
// line per noisy case naming its wide cells.
struct IntervalNotes {
  std::string legend;
  std::string warning;              // "" when every interval is narrow
  std::vector<std::string> noisy;   // "short/c0 (P0): decode tok/s (per sequence) ±8.1% (n=10)"
};
IntervalNotes interval_notes(const Results& r);

}  // namespace moebench::reports
