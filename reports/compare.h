// compare.h: the regression gate. Compares a BASE results file with a NEW one
// case by case, matched on (suite, case, stage):
//  - deterministic metrics must be identical: output_token_hash, expert hit
//    rate, bytes moved, allocation count (when both files have it);
//  - timings (decode step, prefill, TTFT warm and cold) are per-repetition
//    values whose median over repetitions is compared as NEW/BASE against
//    1 + max_slowdown; optionally each is first divided by the same metric of
//    a reference case of its own file (normalize_by), so a uniformly slower
//    machine cancels out;
//  - a case of BASE that is missing or failed in NEW fails the gate.
// Results from different devices are refused unless `force`.
#pragma once
#include <string>
#include <vector>

#include "reports/results.h"

namespace moebench::reports {

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
  double ratio = 0;     // NEW/BASE for timings (normalised when asked); NaN otherwise
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
// no case (or an ambiguous or failed one) in either file.
CompareReport compare_results(const Results& base, const Results& current, const CompareOptions& opt);

// Delta table (Markdown, padded), notes and a final PASS/FAIL line.
std::string format_compare(const CompareReport& rep);

// "5%", "5" (percent) or "0.5%" -> 0.05 / 0.05 / 0.005. Throws Error for
// anything else, negatives, or 1000% and more.
double parse_percent(const std::string& s);

}  // namespace moebench::reports
