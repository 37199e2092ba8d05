// compare.h: the regression gate. Compares a BASE results file with a NEW one
// case by case, matched on (suite, case, stage):
//  - deterministic metrics must be identical: output_token_hash, expert hit
//    rate, bytes moved, allocation count (when both files have it); and a NEW
//    case whose repetitions gave other tokens than its first fails (row
//    "repetition_tokens");
//  - timings are sample sets: every decode step; prefill, TTFT warm and cold one
//    per repetition; and, when both cases carry a tok/s bound, every decode step
//    in units of the bound's time per token ("% of bound", which normalises by
//    the bandwidths measured in the same run). For each: the Mann-Whitney U test
//    (two-sided) says whether the sets differ beyond their noise, and a
//    fixed-seed bootstrap gives the 95% interval of NEW/BASE medians. A timing is
//    a regression only when the test finds a difference (p < kSignificance) and
//    the whole interval lies above 1 + max_slowdown (faster: below
//    1 - max_slowdown); when the sample sizes cannot reach significance at all
//    (3 repetitions against 3) the row is inconclusive, which does not fail.
//    Optionally each timing sample is first divided by the median of the same
//    metric of a reference case of its own file (normalize_by), so a uniformly
//    slower machine cancels out; a reference whose timings are zero is an error;
//  - a case of BASE that is missing or failed in NEW fails the gate.
// Results from different devices are refused unless `force`.
#pragma once
#include <string>
#include <vector>

#include "reports/results.h"

namespace moebench::reports {

// The significance level of the timing test.
inline constexpr double kSignificance = 0.05;

struct CompareOptions {
  double max_slowdown = 0.05;  // NEW may be this fraction slower (0.05 = 5%)
  std::string normalize_by;    // reference case: "case", "suite/case" or "suite/case@stage"; "" = off
  bool force = false;          // compare results from different devices
};

enum class Verdict {
  ok,          // equal (exact metrics) or within the threshold (timings)
  faster,      // timing improved by more than the threshold
  regression,  // timing slower than allowed             -> gate fails
  changed,     // a deterministic metric differs          -> gate fails
  missing,     // case in BASE, absent from NEW           -> gate fails
  failed,      // case ok in BASE, failed in NEW          -> gate fails
  added,       // case only in NEW (informational)
  skipped,     // not comparable (absent in one file, reference case, base failed)
  inconclusive,  // timing: too few samples to tell a change from noise (informational)
};
const char* to_string(Verdict v);
bool is_failure(Verdict v);

struct CompareRow {
  std::string suite;
  std::string case_name;
  std::string stage;
  std::string metric;   // "decode_step_ns", "output_token_hash", "status", ...
  std::string base;     // formatted BASE value ("" when absent)
  std::string current;  // formatted NEW value
  double ratio = 0;     // NEW/BASE medians for timings (normalised when asked); NaN otherwise
  Verdict verdict = Verdict::ok;
  std::string note;
};

struct CompareReport {
  std::vector<CompareRow> rows;
  std::vector<std::string> notes;  // device forced, settings differ, normalisation used, ...
  double max_slowdown = 0.05;
  bool pass = true;                // no row is_failure()
  int failures() const;
};

// Throws Error when devices differ without force, or when normalize_by names
// no case (or an ambiguous or failed one, or one whose timings are zero) in either file.
CompareReport compare_results(const Results& base, const Results& current, const CompareOptions& opt);

// Delta table (Markdown, padded), notes and a final PASS/FAIL line.
std::string format_compare(const CompareReport& rep);

// "5%", "5" (percent) or "0.5%" -> 0.05 / 0.05 / 0.005. Throws Error for
// anything else, negatives, or 1000% and more.
double parse_percent(const std::string& s);

}  // namespace moebench::reports
