// cmd_gate.cpp: `moebench gate` — the CI regression gate on work counts
// (docs/GATE.md; scripts/ci_gate.sh drives it):
//   moebench gate count --suite gate --dir D     (under valgrind --tool=callgrind):
//       runs the suite, its measured steps counted and dumped case by case
//   moebench gate summarize D [--out F]           sums D's callgrind dumps per case
//       and phase with the results' token hashes and expert counters (D/workcounts.json)
//   moebench gate compare BASELINE CURRENT        the verdict: exit 0 pass, 1 fail
#include <algorithm>
#include <filesystem>
#include <memory>

#include "cli/command.h"
#include "common/error.h"
#include "engine/generate.h"
#include "common/atomic_file.h"
#include "reports/workcount.h"
#include "suites/machine.h"
#include "suites/runner.h"
#include "suites/suite.h"

namespace cmd_gate {

namespace {

namespace fs = std::filesystem;

struct GateArgs {
  std::string suite = "gate";
  std::string dir;
  std::string out;
  std::string baseline, current;
  double tolerance_percent = 1.5;
  int top = 5;
};

std::string env_path(const std::string& dir) { return (fs::path(dir) / "environment.json").string(); }
std::string results_path(const std::string& dir) { return (fs::path(dir) / "results.json").string(); }

int count(const GateArgs& a) {
  using namespace moebench;
  if (!running_under_valgrind())
    fail("moebench gate count only means something under valgrind's callgrind: run it through scripts/ci_gate.sh "
         "(valgrind --tool=callgrind --collect-atstart=no --cache-sim=yes ...){}",
         MOEBENCH_CALLGRIND_HEADERS ? "" : "; and this build lacks valgrind's headers: install valgrind and rebuild");
  suites::Suite suite = suites::load_suite(a.suite);
  std::vector<suites::Instance> instances = suites::expand(suite, {}, suites::resolve_backend);
  reports::WorkEnvironment env = reports::this_process_environment();
  for (const suites::Instance& in : instances) {
    if (in.backend != "cpu" || in.cpu_threads <= 0 || in.spec->workload != suites::Workload::model)
      fail("{}: case {} must run the model on the cpu backend with a fixed cpu_threads (counts depend on both)",
           suite.source, in.case_name);
    if (env.threads != 0 && env.threads != in.cpu_threads)
      fail("{}: every case must use the same cpu_threads ({} and {})", suite.source, env.threads, in.cpu_threads);
    env.threads = in.cpu_threads;
  }
  std::error_code ec;
  fs::create_directories(a.dir, ec);
  if (ec) fail("{}: cannot create the folder: {}", a.dir, ec.message());
  suites::RunOptions opt;
  opt.out_path = results_path(a.dir);
  opt.measure_bandwidth = false;
  opt.inject_slowdown = inject_slowdown_from_env();
  // Only the measured repetitions are counted: warm-ups and model loads are not.
  suites::RunEvents ev;
  ev.on_step = [&](int index, const char* phase, int, int) {
    set_work_count_label(std::string(phase) == "repetition" ? instances[index].case_name : "");
  };
  ev.on_instance_end = [](int, const reports::Case&) { set_work_count_label(""); };
  suites::RunOutcome r = suites::run_suite(instances, opt, ev);
  set_work_count_label("");
  if (r.failed > 0 || r.interrupted) fail("{}: {} case(s) failed (see {})", suite.source, r.failed, opt.out_path);
  write_file_atomic(env_path(a.dir), reports::environment_to_json(env).dump(1) + "\n");
  return 0;
}

int summarize(const GateArgs& a) {
  using namespace moebench;
  reports::Results results = reports::load_results(results_path(a.dir));
  const std::string env_file = env_path(a.dir);
  nlohmann::json ej;
  try {
    ej = nlohmann::json::parse(read_file(env_file));
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: invalid JSON at byte {}", env_file, e.byte);
  }
  std::vector<reports::CallgrindDump> dumps;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(a.dir))
    if (e.path().filename().string().rfind("callgrind.out", 0) == 0) files.push_back(e.path());
  if (files.empty()) fail("{}: no callgrind.out* files (was `moebench gate count` run under callgrind?)", a.dir);
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) dumps.push_back(reports::parse_callgrind(read_file(f.string()), f.string()));
  reports::WorkCounts w = reports::summarise_work(results, dumps, reports::environment_from_json(ej, env_file));
  const std::string out = a.out.empty() ? (fs::path(a.dir) / "workcounts.json").string() : a.out;
  reports::save_workcounts(out, w);
  fmt::print(stderr, "wrote {}\n", out);
  return 0;
}

int compare(const GateArgs& a) {
  using namespace moebench;
  reports::WorkCounts base = reports::load_workcounts(a.baseline);
  reports::WorkCounts now = reports::load_workcounts(a.current);
  reports::GateVerdict v = reports::compare_work(base, now, a.tolerance_percent / 100.0, a.top);
  for (const std::string& l : v.lines) fmt::print("{}\n", l);
  fmt::print("gate: {} (estimated cost = Ir + 10 x L1 misses + 100 x LL misses; tolerance {:.2f}%; baseline {})\n",
             v.pass ? "PASS" : "FAIL", a.tolerance_percent, a.baseline);
  return v.pass ? 0 : 1;
}

}  // namespace

MOEBENCH_COMMAND(gate, "The CI regression gate on work counts under callgrind (docs/GATE.md; scripts/ci_gate.sh runs it)",
                 [](CLI::App& sub) {
  auto a = std::make_shared<GateArgs>();
  sub.require_subcommand(1);
  CLI::App* c = sub.add_subcommand("count", "run a suite under callgrind, counting only its measured engine steps");
  c->add_option("--suite", a->suite, "suite name or JSON file (default: gate)");
  c->add_option("--dir", a->dir, "folder for results.json and environment.json (callgrind writes its dumps there)")
      ->required();
  CLI::App* s = sub.add_subcommand("summarize", "sum a count folder's callgrind dumps per case and phase");
  s->add_option("dir", a->dir, "the folder `gate count` wrote")->required();
  s->add_option("--out", a->out, "work-counts JSON (default DIR/workcounts.json)");
  CLI::App* p = sub.add_subcommand("compare", "the verdict of CURRENT work counts against BASELINE: exit 0 pass, 1 fail");
  p->add_option("baseline", a->baseline, "baseline work counts (reports/ci-baseline/workcounts.json)")->required();
  p->add_option("current", a->current, "this build's work counts")->required();
  p->add_option("--tolerance-percent", a->tolerance_percent,
                "largest allowed growth of the estimated cost per prefill and per decode token (default 1.5)")
      ->check(CLI::Range(0.0, 99.0));
  p->add_option("--top", a->top, "functions named when a metric fails (default 5)")->check(CLI::Range(1, 100));
  return [=] {
    if (c->parsed()) return count(*a);
    if (s->parsed()) return summarize(*a);
    if (p->parsed()) return compare(*a);
    return 2;
  };
});

}  // namespace cmd_gate
