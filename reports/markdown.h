// markdown.h: the Markdown summary of a results file (what `moebench run`
// prints on stdout and `moebench report --md` writes): a header naming model,
// device and build, then one row per case with the columns of fields.h (timings
// as median ± their 95% confidence interval over the repetitions, with n), and
// under it what the ± means and which intervals are too wide to trust.
#pragma once
#include <string>
#include <vector>

#include "reports/results.h"

namespace moebench::reports {

// A GitHub pipe table whose columns are padded to equal width so it also reads
// well on a terminal; `right[i]` right-aligns column i. '|' in cells is escaped.
std::string markdown_table(const std::vector<std::string>& headers, const std::vector<bool>& right,
                           const std::vector<std::vector<std::string>>& rows);

// The device in one line, with only the fields that apply to its kind: a CUDA
// device's SMs, driver and measured HBM (read stream / copy kernel), host->device
// and disk read bandwidths; a CPU's memory and measured copy bandwidth. The
// Markdown and HTML reports share it.
std::string device_line(const DeviceInfo& d);

std::string render_markdown(const Results& r);

}  // namespace moebench::reports
