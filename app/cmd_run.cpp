// cmd_run.cpp: `moebench run --suite S` runs a benchmark suite (suites/*.json),
// writes the results JSON (rewritten atomically after every case), prints the
// Markdown summary on stdout and optionally an HTML report and a Chrome trace.
// Progress goes to stderr. SIGINT abandons the running case, keeps the finished
// ones in the results file and exits 130; a second SIGINT kills at once.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>

#include "app/command.h"
#include "app/progress.h"
#include "engine/error.h"
#include "engine/generate.h"
#include "engine/log.h"
#include "engine/settings.h"
#include "reports/atomic_file.h"
#include "reports/html.h"
#include "reports/markdown.h"
#include "suites/machine.h"
#include "suites/runner.h"
#include "suites/suite.h"

namespace {

struct RunArgs {
  std::string suite;
  std::string model;
  std::string backend;
  std::string stage;
  std::vector<std::string> set;
  std::string out, html, trace, tokenizer;
  int repetitions = 0;
  int warmup_runs = -1;
  bool list = false;
};

// The one piece of process state: what the SIGINT handler sets. The runner
// only ever sees a pointer to it (RunOptions::stop).
std::atomic<bool> g_stop{false};
extern "C" void on_sigint(int) { g_stop.store(true); }

void install_sigint() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;  // a second Ctrl-C gets the default action
  sigaction(SIGINT, &sa, nullptr);
}

std::vector<std::string> own_command_line() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> out;
  std::string arg;
  while (std::getline(f, arg, '\0')) out.push_back(arg);
  return out;
}

std::string default_out(const std::string& suite_name) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return fmt::format("results/{}-{}.json", suite_name, buf);
}

void make_parent(const std::string& path) {
  std::filesystem::path p = std::filesystem::path(path).parent_path();
  if (p.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(p, ec);
  if (ec) moebench::fail("{}: cannot create folder {}: {}", path, p.string(), ec.message());
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
  suites::Suite suite = suites::load_suite(a.suite);
  suites::Overrides o;
  o.model = a.model;
  o.backend = a.backend;
  o.stage = a.stage;
  o.repetitions = a.repetitions;
  o.warmup_runs = a.warmup_runs;
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
  opt.trace_path = a.trace;
  opt.tokenizer_path = a.tokenizer;
  opt.inject_slowdown = inject_slowdown_from_env();  // the CI gate's test switch
  opt.stop = &g_stop;
  opt.command_line = own_command_line();
  make_parent(opt.out_path);
  if (!a.html.empty()) make_parent(a.html);
  if (!a.trace.empty()) make_parent(a.trace);
  log::info("suite {} ({}): {} instance(s), {} model load(s), backend {}", suite.name, suite.source, instances.size(),
            suites::count_reloads(instances), instances.empty() ? "-" : instances.front().backend);

  app::Progress progress(isatty(STDERR_FILENO) != 0);
  install_sigint();
  suites::RunOutcome out = suites::run_suite(instances, opt, progress.events());
  signal(SIGINT, SIG_DFL);
  progress.finish();

  std::fputs(reports::render_markdown(out.results).c_str(), stdout);
  std::fflush(stdout);
  if (!a.html.empty()) write_file_atomic(a.html, reports::render_html(out.results));
  std::string wrote = opt.out_path;
  if (!a.html.empty()) wrote += ", " + a.html;
  if (!out.results.run.trace_file.empty()) wrote += ", " + out.results.run.trace_file;
  if (out.interrupted) {
    fmt::print(stderr, "interrupted: {} of {} case(s) finished and kept in {}\n", out.results.cases.size(),
               instances.size(), wrote);
    return 130;
  }
  if (out.failed > 0) fmt::print(stderr, "{} case(s) failed (see \"Failed cases\" above)\n", out.failed);
  fmt::print(stderr, "wrote {}\n", wrote);
  return 0;
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
      "The results file is rewritten after every case; Ctrl-C abandons the running case, keeps the finished ones\n"
      "and exits 130. Exit status: 0 when the suite ran (failed cases are listed in the summary), 1 on an error\n"
      "(bad suite file: one line naming the file and field), 2 on a usage error, 130 when interrupted.");
  sub.add_option("--suite", a->suite, "suite name (short, medium, long, stages, default, ci, capacity) or a JSON file");
  sub.add_flag("--list", a->list, "list the suites found and exit");
  sub.add_option("--model", a->model, "model for every case: checkpoint DIR, PRESET or synthetic:PRESET[:layers=N]");
  sub.add_option("--backend", a->backend, "auto|cpu|cuda (default: the suite's, usually auto)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  sub.add_option("--stage", a->stage, "stage preset for every case (baseline, P0, P1, P2); replaces a stage sweep");
  sub.add_option("--set", a->set, "override a setting for every case: key=value (repeatable)")->take_all();
  sub.add_option("--repetitions", a->repetitions, "measured repetitions per case (default: the suite's)")
      ->check(CLI::PositiveNumber);
  sub.add_option("--warmup-runs", a->warmup_runs, "untimed generations before measuring, when the warmup knob is on")
      ->check(CLI::NonNegativeNumber);
  sub.add_option("--out", a->out, "results JSON (default results/SUITE-YYYYMMDD-HHMMSS.json)");
  sub.add_option("--html", a->html, "also write a self-contained HTML report");
  sub.add_option("--trace", a->trace, "Chrome trace (Perfetto) of the last repetition of the last finished case");
  sub.add_option("--tokenizer", a->tokenizer, "tokenizer.json (default: MODEL/tokenizer.json, else the built-in Mistral one)");
  return [a] { return run(*a); };
});
