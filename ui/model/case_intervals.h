// case_intervals.h: the timings of a case as median ± a confidence interval over
// its measured repetitions (reports::median_interval, the interval the Markdown
// and HTML reports print), for the dashboard's tables. The per-repetition values
// are the ones reports::compute_aggregates takes the median of, so the median
// here is the aggregate the file stores.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "reports/results.h"
#include "reports/significance.h"

namespace moebench::ui {

// Summary column keys that are timings with one value per repetition:
// decode_tok_s, prefill_tok_s, ttft_cold_ns, ttft_warm_ns.
bool has_repetition_values(const std::string& key);
// One value per measured repetition of `c` for that key (empty for other keys,
// a failed case, or repetitions that lack it).
std::vector<double> repetition_values(const reports::Case& c, const std::string& key);
// median_interval of repetition_values; nullopt when there are none.
std::optional<reports::MedianInterval> case_interval(const reports::Case& c, const std::string& key);
// The cell text: "12.3 tok/s ±0.4 (n=5)" (bench_table.h interval_text), with the
// column's own formatting.
std::string case_interval_text(const reports::Case& c, const std::string& key);

}  // namespace moebench::ui
