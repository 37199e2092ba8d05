// cmd_compare.cpp: `moebench compare BASE.json NEW.json` — the regression gate
// (reports/compare.h). Prints the delta table on stdout; exit 0 within bounds,
// 1 on a regression or a bad file, 2 on a usage error.
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "common/error.h"
#include "reports/compare.h"
#include "reports/formats.h"

namespace cmd_compare {

namespace {

struct CompareArgs {
  std::string base, current;
  std::string max_slowdown = "5%";
  std::string normalize_by;
  bool force = false;
  std::string format = "md";
};

int run_compare(const CompareArgs& a) {
  using namespace moebench::reports;
  if (a.format != "md" && a.format != "json") moebench::fail("--format {}: expected md or json", a.format);
  Results base = load_results(a.base);
  Results cur = load_results(a.current);
  CompareOptions opt;
  opt.max_slowdown = parse_percent(a.max_slowdown);
  opt.normalize_by = a.normalize_by;
  opt.force = a.force;
  CompareReport rep = compare_results(base, cur, opt);
  std::fputs((a.format == "json" ? compare_to_json(rep) : format_compare(rep)).c_str(), stdout);
  return rep.pass ? 0 : 1;
}

}  // namespace

MOEBENCH_COMMAND(compare, "Compare two results files; exit 1 on a regression (CI gate)", [](CLI::App& sub) {
  auto a = std::make_shared<CompareArgs>();
  sub.footer(
      "Cases are matched by (suite, case, stage). Output hash, expert hit rate, bytes moved and allocation count\n"
      "must be identical. Timings (every decode step; prefill and TTFT warm/cold per repetition; decode steps against\n"
      "the case's bound when both files have one) are sample sets: a Mann-Whitney U test says whether they differ\n"
      "beyond their noise (p < 0.05) and a fixed-seed bootstrap gives the 95% interval of the NEW/BASE median ratio;\n"
      "a timing is a REGRESSION only when both say so and the whole interval is above 1 + --max-slowdown. Too few\n"
      "samples to reach p < 0.05 (e.g. 3 repetitions against 3) is 'inconclusive', which does not fail.\n"
      "Exit status: 0 within bounds; 1 on a regression, a changed/missing/failed case, different devices\n"
      "without --force, or a malformed results file (one-line error naming the file and field); 2 on a usage error.");
  sub.add_option("-o,--format", a->format, "md (the table, default) or json (every metric and verdict, for bots)");
  sub.add_option("BASE", a->base, "baseline results JSON")->required()->check(CLI::ExistingFile);
  sub.add_option("NEW", a->current, "new results JSON")->required()->check(CLI::ExistingFile);
  sub.add_option("--max-slowdown", a->max_slowdown,
                 "largest allowed timing slowdown, applied to the 95% interval of the median ratio, e.g. 5% (default 5%)")
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            try {
              moebench::reports::parse_percent(s);
              return {};
            } catch (const std::exception& e) {
              return e.what();
            }
          },
          "PERCENT"));
  sub.add_option("--normalize-by", a->normalize_by,
                 "divide each timing by the same timing of this case (CASE, SUITE/CASE or SUITE/CASE@STAGE) in its own "
                 "file, so a uniformly slower machine cancels out (a reference whose timings are zero is an error)");
  sub.add_flag("--force", a->force, "compare results from different devices anyway");
  return [a] { return run_compare(*a); };
});

}  // namespace cmd_compare
