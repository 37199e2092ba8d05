// cmd_run.cpp: `moebench run --suite S` runs a benchmark suite (suites/*.json),
// prints the Markdown summary on stdout and writes the results JSON, optionally an
// HTML report and a Chrome trace, once the run is complete; while it runs, the
// finished cases are kept in OUT.partial.json. Progress goes to stderr. SIGINT or
// SIGTERM abandons the running case, keeps the finished ones in the progress file,
// leaves the outputs as they were and exits 128 + the signal; a second one kills at once.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "cli/command.h"
#include "app/progress.h"
#include "common/error.h"
#include "engine/generate.h"
#include "common/log.h"
#include "model/settings.h"
#include "common/atomic_file.h"
#include "reports/html.h"
#include "reports/formats.h"
#include "reports/markdown.h"
#include "suites/bound.h"
#include "suites/machine.h"
#include "suites/run_header.h"
#include "suites/runner.h"
#include "suites/suite.h"

namespace cmd_run {

namespace {

struct RunArgs {
  std::string suite;
  std::string model;
  std::string backend;
  std::string stage;
  std::string routing;
  std::vector<std::string> set;
  std::string out, html, trace, tokenizer;
  int repetitions = 0;
  int warmup_runs = -1;
  int threads = -1;
  std::string format = "md";
  bool list = false;
  bool no_quality = false;
};

// The one piece of process state: what the SIGINT/SIGTERM handler sets. The runner
// only ever sees a pointer to it (RunOptions::stop).
std::atomic<bool> g_stop{false};
volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_stop_signal(int sig) {
  g_signal = sig;
  g_stop.store(true);
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;  // a second Ctrl-C gets the default action
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// Exit status of a run whose cases (some or all) failed.
constexpr int kExitCasesFailed = 3;

std::string default_out(const std::string& suite_name) {
  return fmt::format("results/{}-{}.json", suite_name, moebench::suites::utc_now("%Y%m%d-%H%M%S"));
}

// Creates the folder of an output when it is missing; check_paths then says what is
// wrong with one that still cannot be written.
void make_parent(const std::string& path) {
  std::filesystem::path p = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!p.empty()) std::filesystem::create_directories(p, ec);
}

// Writes the HTML report of a saved run, says what was written (or kept, or left
// as it was) on stderr, and gives the exit status.
int report_outcome(const RunArgs& a, const moebench::suites::RunOptions& opt, const moebench::suites::RunOutcome& out,
                   size_t n_instances) {
  using namespace moebench;
  const size_t finished = out.results.cases.size();
  if (out.interrupted) {
    fmt::print(stderr, "interrupted: {} of {} case(s) finished{}; {} left as it was\n", finished, n_instances,
               finished > 0 ? " and kept in " + opt.progress_path : "", opt.out_path);
    return 128 + (g_signal != 0 ? static_cast<int>(g_signal) : SIGINT);
  }
  if (!out.saved) {
    fmt::print(stderr, "all {} case(s) failed (see \"Failed cases\" above): {} not written, {} kept\n", finished,
               opt.out_path, opt.progress_path);
    return kExitCasesFailed;
  }
  std::string wrote = opt.out_path;
  if (!a.html.empty()) {
    write_file_atomic(a.html, reports::render_html(out.results));
    wrote += ", " + a.html;
  }
  if (!out.results.run.trace_file.empty()) wrote += ", " + out.results.run.trace_file;
  fmt::print(stderr, "wrote {}\n", wrote);
  if (!out.trace_error.empty()) fail("--trace: {} (the results were written without it)", out.trace_error);
  if (out.failed > 0) {
    fmt::print(stderr, "{} of {} case(s) failed (see \"Failed cases\" above)\n", out.failed, finished);
    return kExitCasesFailed;
  }
  return 0;
}

int run(const RunArgs& a) {
  using namespace moebench;
  if (a.list) {
    for (const std::string& n : suites::suite_names()) {
      suites::Suite s = suites::load_suite(n);
      fmt::print("{:<10} {}\n", n, s.description);
    }
    return 0;
  }
  if (a.suite.empty()) fail("--suite is required (moebench run --list shows the suites)");
  reports::check_format(a.format);  // before any work
  suites::Suite suite = suites::load_suite(a.suite);
  suites::Overrides o;
  o.model = a.model;
  o.backend = a.backend;
  o.stage = a.stage;
  o.repetitions = a.repetitions;
  o.warmup_runs = a.warmup_runs;
  o.cpu_threads = a.threads;
  if (!a.routing.empty()) o.settings.emplace_back("routing", a.routing);
  for (const std::string& kv : a.set) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) fail("--set {}: expected key=value", kv);
    std::string key = kv.substr(0, eq);
    if (key == "stage") fail("--set stage=...: use --stage");
    o.settings.emplace_back(key, kv.substr(eq + 1));
  }
  std::vector<suites::Instance> instances = suites::expand(suite, o, suites::resolve_backend);

  suites::RunOptions opt;
  opt.out_path = a.out.empty() ? default_out(suite.name) : a.out;
  opt.progress_path = suites::progress_path_for(opt.out_path);
  opt.trace_path = a.trace;
  opt.tokenizer_path = a.tokenizer;
  opt.measure_quality = !a.no_quality;
  opt.inject_slowdown = inject_slowdown_from_env();  // the CI gate's test switch
  opt.stop = &g_stop;
  opt.command_line = suites::own_command_line({"moebench", "run"});
  for (const std::string& p : {opt.out_path, a.html, a.trace})
    if (!p.empty()) make_parent(p);
  check_paths({{"--suite", suite.source}, {"--tokenizer", a.tokenizer}},
              {{"--out", opt.out_path}, {"--out's progress file", opt.progress_path}, {"--html", a.html},
               {"--trace", a.trace}});
  log::info("suite {} ({}): {} instance(s), {} model load(s), backend {}", suite.name, suite.source, instances.size(),
            suites::count_reloads(instances), instances.empty() ? "-" : instances.front().backend);

  app::Progress progress(isatty(STDERR_FILENO) != 0);
  install_stop_handlers();
  suites::RunOutcome out = suites::run_suite(instances, opt, progress.events());
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  progress.finish();

  std::fputs(reports::render_as(out.results, a.format).c_str(), stdout);
  std::fflush(stdout);
  for (const std::string& w : suites::bound_warnings(out.results)) log::warn("results check: {}", w);
  return report_outcome(a, opt, out, instances.size());
}

}  // namespace

MOEBENCH_COMMAND(run, "Run a benchmark suite: results JSON, Markdown summary, optional HTML report and trace",
                 [](CLI::App& sub) {
  auto a = std::make_shared<RunArgs>();
  std::string knobs;
  for (const auto& k : moebench::setting_keys())
    if (k != "stage") knobs += (knobs.empty() ? "" : ", ") + k;
  sub.footer(
      "Suites are JSON files: NAME finds suites/NAME.json (or $MOEBENCH_SUITES_DIR/NAME.json); a path is read as is.\n"
      "--set takes any of: " + knobs + ".\n"
      "Every output path is checked before anything runs. The results (and HTML, trace) are written once the run\n"
      "is complete; meanwhile the finished cases are kept in OUT.partial.json (removed at the end). A file that\n"
      "was there before is replaced only by a complete run with at least one case that did not fail.\n"
      "Ctrl-C (or SIGTERM) abandons the running case, keeps the finished ones in the progress file and leaves\n"
      "the outputs as they were. Exit status: 0 when every case ran, 3 when some or all cases failed (listed in\n"
      "the summary), 1 on an error (bad suite file, bad path: one line naming it), 2 on a usage error,\n"
      "130 on SIGINT, 143 on SIGTERM.");
  sub.add_option("--suite", a->suite, "suite name (short, medium, long, stages, default, ci, capacity) or a JSON file");
  sub.add_flag("--list", a->list, "list the suites found and exit");
  sub.add_flag("--no-quality", a->no_quality,
               "skip the quality pass of quantised cases (no top-1 / KL against bf16; each such case loads one model, not three)");
  sub.add_option("--model", a->model, "model for every case: checkpoint DIR, PRESET or synthetic:PRESET[:layers=N][:dtype=F]");
  sub.add_option("--backend", a->backend, "auto|cpu|cuda (default: the suite's, usually auto)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  sub.add_option("--stage", a->stage, "stage preset for every case (baseline, P0, P1, P2); replaces a stage sweep");
  sub.add_option("--routing", a->routing, "routing source for every case: model|uniform|mixtral-locality|fine-grained-locality|trace:FILE");
  sub.add_option("--set", a->set, "override a setting for every case: key=value (repeatable)")->take_all();
  sub.add_option("--repetitions", a->repetitions, "measured repetitions per case (default: the suite's)")
      ->check(moebench::app::kPositiveNumber);
  sub.add_option("-o,--format", a->format, "what is printed on stdout: md|csv|json|jsonl|html (default md)");
  sub.add_option("--threads", a->threads, "OpenMP threads of the CPU engine for every case (default: the suite's cpu_threads)")
      ->check(CLI::Range(1, 1024));
  sub.add_option("--warmup-runs", a->warmup_runs, "untimed generations before measuring, when the warmup knob is on")
      ->check(moebench::app::kNonNegativeNumber);
  sub.add_option("--out", a->out, "results JSON (default results/SUITE-YYYYMMDD-HHMMSS.json)");
  sub.add_option("--html", a->html, "also write a self-contained HTML report");
  sub.add_option("--trace", a->trace,
                 "Chrome trace (Perfetto) of one more generation after the run's last case's repetitions (not "
                 "measured; CUDA: CUPTI attached only for it)");
  sub.add_option("--tokenizer", a->tokenizer, "tokenizer.json (default: MODEL/tokenizer.json, else the built-in Mistral one)");
  return [a] { return run(*a); };
});

}  // namespace cmd_run
