// formats.h: a results file (or a comparison) in the formats people feed to other
// tools, the way llama-bench's -o does: md (the Markdown summary), csv and jsonl (one
// row per case: the summary columns of reports/fields.h by their keys, suite and case
// first, with raw numbers; each timing followed by its 95% interval of the median
// over the repetitions as KEY_ci_lo, KEY_ci_hi, KEY_ci_coverage and KEY_n),
// json (the results file itself), html (the self-contained report). One function per
// format, one dispatcher by name.
#pragma once
#include <string>

#include "reports/compare.h"
#include "reports/results.h"

namespace moebench::reports {

// "md|csv|json|jsonl|html": the names render_as takes.
const char* format_names();
// Throws Error naming the value and the formats when `name` is not one of them.
void check_format(const std::string& name);

std::string render_csv(const Results& r);
std::string render_jsonl(const Results& r);
std::string render_as(const Results& r, const std::string& format);

// A comparison as JSON: every row (case, metric, both values, ratio, verdict, note),
// the notes, the tolerance and the overall verdict.
std::string compare_to_json(const CompareReport& rep);

}  // namespace moebench::reports
