// fields.h: the one table of summary columns. The Markdown table, the HTML
// table and the dashboard's runs table all iterate summary_columns(), so a
// column is added in one place and appears in every output.
#pragma once
#include <string>
#include <vector>

#include "reports/results.h"

namespace moebench::reports {

struct SummaryColumn {
  const char* key;     // stable id: "decode_tok_s"
  const char* header;  // what a table prints: "decode tok/s"
  bool numeric;        // right-aligned, sortable by value()
  std::string (*text)(const Case&);  // formatted cell ("n/a" / "-" when not applicable)
  double (*value)(const Case&);      // raw value for sorting and charts; NaN when not numeric or n/a
};

const std::vector<SummaryColumn>& summary_columns();

// Device memory peak (the larger of the arena peak and the cudaMemGetInfo peak), or,
// when the case used no device memory (the CPU backend), the process's peak
// resident set; bytes.
int64_t memory_peak_bytes(const Case& c);

}  // namespace moebench::reports
