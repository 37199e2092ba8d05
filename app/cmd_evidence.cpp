// cmd_evidence.cpp: `moebench evidence check|write` — the committed measurements and
// their manifest (reports/evidence.h). `check` lists every file the manifest misses,
// every listed file that is missing and every results file whose device disagrees
// with its claim (exit 1 when any); `write OUT.md` renders docs/RESULTS.md from the
// manifest (atomically).
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/command.h"
#include "common/log.h"
#include "common/atomic_file.h"
#include "reports/evidence.h"
#include "reports/results.h"
#include "suites/bound.h"

namespace cmd_evidence {

namespace {

struct EvidenceArgs {
  std::string dir = "reports/baselines";
  std::string out;
  std::string doc_to_dir;
};

// Prints every problem between the folder and its manifest; 0 when there is none.
int report_problems(const std::string& dir, const moebench::reports::Manifest& m) {
  const auto problems = moebench::reports::check_evidence(dir, m);
  for (const std::string& p : problems) std::fprintf(stderr, "evidence: %s\n", p.c_str());
  if (problems.empty()) moebench::log::info("{}: {} claims, every file backs one", dir, m.claims.size());
  return problems.empty() ? 0 : 1;
}

int run_check(const EvidenceArgs& a) {
  return report_problems(a.dir, moebench::reports::load_manifest(a.dir + "/MANIFEST.json"));
}

int run_write(const EvidenceArgs& a) {
  using namespace moebench::reports;
  moebench::check_paths({}, {{"OUT", a.out}});
  const Manifest m = load_manifest(a.dir + "/MANIFEST.json");
  if (int rc = report_problems(a.dir, m)) return rc;
  std::string rel = a.doc_to_dir;
  if (rel.empty())
    rel = std::filesystem::relative(std::filesystem::absolute(a.dir),
                                    std::filesystem::absolute(a.out).parent_path()).generic_string();
  moebench::write_file_atomic(a.out, render_evidence(a.dir, m, rel, [](Results& r) { moebench::suites::rederive_recorded_bounds(r); }));
  moebench::log::info("wrote {}", a.out);
  return 0;
}

moebench::app::Runner setup_evidence(CLI::App& sub) {
  auto a = std::make_shared<EvidenceArgs>();
  sub.require_subcommand(1);
  auto* check = sub.add_subcommand("check", "every file under DIR backs exactly one claim of DIR/MANIFEST.json (exit 1 if not)");
  check->add_option("--dir", a->dir, "the evidence folder (default reports/baselines)");
  auto* write = sub.add_subcommand("write", "render the manifest and its results tables as Markdown");
  write->add_option("OUT", a->out, "the Markdown file to write (docs/RESULTS.md)")->required();
  write->add_option("--dir", a->dir, "the evidence folder (default reports/baselines)");
  write->add_option("--link-base", a->doc_to_dir, "the folder as links in OUT see it (default: relative to OUT)");
  return [a, check]() { return check->parsed() ? run_check(*a) : run_write(*a); };
}

}  // namespace

MOEBENCH_COMMAND(evidence, "Check the committed measurements against their manifest, or write docs/RESULTS.md from it",
                 setup_evidence);

}  // namespace cmd_evidence
