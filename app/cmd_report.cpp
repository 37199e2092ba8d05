// cmd_report.cpp: `moebench report RESULTS.json [--html OUT.html] [--md]` —
// renders a results file as a Markdown table on stdout and/or a
// self-contained HTML report (reports/markdown.h, reports/html.h). Bounds recorded
// by an older model of the limit are re-derived from the file's fields
// (suites/bound.h), and cases past their bound are named on stderr.
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "common/log.h"
#include "common/atomic_file.h"
#include "reports/html.h"
#include "reports/formats.h"
#include "reports/markdown.h"
#include "suites/bound.h"

namespace cmd_report {

namespace {

struct ReportArgs {
  std::string results;
  std::string html;
  bool md = false;
  std::string format;
};

int run_report(const ReportArgs& a) {
  using namespace moebench::reports;
  if (!a.format.empty()) moebench::reports::check_format(a.format);
  moebench::check_paths({{"RESULTS", a.results}}, {{"--html", a.html}});
  Results r = load_results(a.results);
  if (int n = moebench::suites::rederive_recorded_bounds(r))
    moebench::log::info("{}: {} bound(s) recorded by an older model of the limit, shown re-derived from the file's own fields",
                        a.results, n);
  if (!a.html.empty()) {
    moebench::write_file_atomic(a.html, render_html(r));
    moebench::log::info("wrote {}", a.html);
  }
  if (!a.format.empty()) std::fputs(render_as(r, a.format).c_str(), stdout);
  else if (a.md || a.html.empty()) std::fputs(render_markdown(r).c_str(), stdout);
  for (const std::string& w : moebench::suites::bound_warnings(r)) moebench::log::warn("results check: {}", w);
  return 0;
}

}  // namespace

MOEBENCH_COMMAND(report, "Render a results file as a Markdown table and/or a self-contained HTML report", [](CLI::App& sub) {
  auto a = std::make_shared<ReportArgs>();
  sub.footer("Without --html the Markdown summary is printed. A malformed results file is a one-line error (exit 1).");
  sub.add_option("-o,--format", a->format, "print the results as md|csv|json|jsonl|html (default md)");
  sub.add_option("RESULTS", a->results, "results JSON")->required()->check(CLI::ExistingFile);
  sub.add_option("--html", a->html, "write a self-contained HTML report (inline CSS and SVG, no network) to this file");
  sub.add_flag("--md", a->md, "print the Markdown summary on stdout (default when --html is not given)");
  return [a] { return run_report(*a); };
});

}  // namespace cmd_report
