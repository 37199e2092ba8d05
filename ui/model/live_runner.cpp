// live_runner.cpp: see live_runner.h.
#include "ui/model/live_runner.h"

#include <fmt/format.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include "engine/cpu_expert_provider.h"
#include "engine/cpu_model.h"
#include "engine/engine.h"
#include "common/error.h"
#include "suites/run_header.h"
#include "suites/runner.h"
#include "suites/suite.h"
#include "suites/machine.h"

namespace moebench::ui {

const char* to_string(LiveState s) {
  switch (s) {
    case LiveState::idle: return "idle";
    case LiveState::running: return "running";
    case LiveState::done: return "done";
    case LiveState::cancelled: return "cancelled";
    case LiveState::failed: return "failed";
  }
  return "?";
}

namespace {

// The suite the settings describe: one case per stage (the synthetic prompt), each
// case with its own model load (so each has a TTFT cold), in the order given.
suites::Suite live_suite(const LiveSettings& s) {
  suites::Suite suite;
  suite.name = s.suite;
  suite.source = "live run";
  suite.defaults.model["*"] = s.model;
  suite.defaults.backend = s.backend;
  suite.defaults.seed = s.seed;
  suite.defaults.warmup_runs = 1;
  suite.defaults.repetitions = s.repetitions;
  suite.defaults.new_tokens = s.new_tokens;
  suite.defaults.cold_each_case = true;
  if (s.cache_slots > 0) suite.defaults.settings.emplace_back("cache_slots", std::to_string(s.cache_slots));
  for (const std::string& stage : s.stages) {
    suites::CaseSpec c;
    c.name = fmt::format("prompt{}_new{}", s.prompt_tokens, s.new_tokens);
    c.prompt_tokens = s.prompt_tokens;
    c.stage = stage;
    suite.cases.push_back(c);
  }
  return suite;
}

// What the live view adds to a case: the backend, the routing source the CPU model
// names, and the expert slots its cache got.
void describe_case(const suites::InstanceContext& x, std::vector<reports::Case>& cases) {
  reports::Case& c = cases.at(0);
  c.settings.knobs["backend"] = x.model.backend();
  if (auto* cpu = dynamic_cast<CpuModel*>(&x.model)) {
    c.routing_source = cpu->routing_name();
    if (x.instance.settings.expert_tier != "resident")
      c.settings.knobs["cache_slots_used"] = cpu_cache_slots(x.instance.settings, x.weights.config());
  }
}

// The snapshots a run publishes, from the runner's events.
struct Snapshots {
  LiveSnapshot snap;
  reports::Results done;  // header + finished cases
  const std::function<void(const LiveSnapshot&)>& progress;

  suites::RunEvents events(const std::vector<suites::Instance>& instances) {
    suites::RunEvents ev;
    ev.on_instance_start = [this, &instances](int i, const suites::Instance& in) {
      snap.case_index = i;
      snap.n_cases = static_cast<int>(instances.size());
      snap.case_label = fmt::format("{}/{} [{}]", in.suite, in.case_name, in.settings.stage);
    };
    ev.on_token = [this](int, int rep, int64_t ns, reports::Phase phase) {
      if (phase == reports::Phase::prefill) {  // a new generation
        snap.latency_ns.clear();
        snap.phase.clear();
      }
      snap.repetition = rep;
      snap.latency_ns.push_back(ns);
      snap.phase.push_back(phase);
      ++snap.version;
      if (progress) progress(snap);
    };
    ev.on_instance_end = [this](int, const reports::Case& c) {
      done.cases.push_back(c);
      snap.results = std::make_shared<const reports::Results>(done);
    };
    return ev;
  }
};

}  // namespace

LiveOutcome run_live(const LiveSettings& s, const std::function<void(const LiveSnapshot&)>& progress,
                     const std::atomic<bool>* cancel) {
  LiveOutcome out;
  std::vector<std::string> command_line = {"moebench", "dashboard", "live", "--model", s.model, "--stages"};
  for (auto& st : s.stages) command_line.push_back(st);
  try {
    if (s.repetitions < 1) fail("repetitions must be >= 1, got {}", s.repetitions);
    if (s.prompt_tokens < 1 || s.new_tokens < 1) fail("prompt and new tokens must be >= 1");
    const suites::Suite suite = live_suite(s);
    auto instances = suites::expand(suite, suites::Overrides{}, suites::resolve_backend);
    std::stable_sort(instances.begin(), instances.end(), [](const suites::Instance& x, const suites::Instance& y) {
      return x.spec < y.spec;  // the stages in the order given (expand groups them by model)
    });
    Snapshots snaps{{}, suites::run_header(command_line, s.backend, false), progress};
    snaps.snap.state = LiveState::running;
    snaps.snap.results = std::make_shared<const reports::Results>(snaps.done);
    suites::RunOptions opt;
    opt.trace_path = s.trace_path;
    opt.trace_every_instance = true;
    opt.measure_bandwidth = false;  // the live view shows no bound
    opt.stop = cancel;
    opt.command_line = command_line;
    opt.after_instance = describe_case;
    suites::RunOutcome r = suites::run_suite(instances, opt, snaps.events(instances));
    out.results = std::move(r.results);
    out.state = r.interrupted ? LiveState::cancelled : LiveState::done;
    if (!r.trace_error.empty()) out.error = r.trace_error;
  } catch (const std::exception& e) {
    out.state = LiveState::failed;
    out.error = e.what();
    if (out.results.run.start_time.empty()) out.results = suites::run_header(command_line, s.backend, false);
  }
  return out;
}

namespace {

class EngineLiveRunner : public LiveRunner {
 public:
  ~EngineLiveRunner() override {
    cancel_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  void start(const LiveSettings& s) override {
    std::lock_guard lock(mu_);
    if (snap_.state == LiveState::running) return;
    if (thread_.joinable()) thread_.join();
    cancel_.store(false);
    snap_ = LiveSnapshot{};
    snap_.state = LiveState::running;
    snap_.n_cases = static_cast<int>(s.stages.size());
    snap_.version = ++version_;
    thread_ = std::thread([this, s] {
      LiveOutcome o = run_live(
          s,
          [this](const LiveSnapshot& p) {
            std::lock_guard lock(mu_);
            snap_ = p;
            snap_.version = ++version_;
          },
          &cancel_);
      std::lock_guard lock(mu_);
      snap_.state = o.state;
      snap_.error = o.error;
      snap_.results = std::make_shared<const reports::Results>(std::move(o.results));
      snap_.version = ++version_;
    });
  }
  LiveSnapshot poll() override {
    std::lock_guard lock(mu_);
    return snap_;
  }
  void cancel() override { cancel_.store(true); }

 private:
  std::mutex mu_;
  LiveSnapshot snap_;
  uint64_t version_ = 0;
  std::atomic<bool> cancel_{false};
  std::thread thread_;
};

}  // namespace

std::unique_ptr<LiveRunner> make_engine_live_runner() { return std::make_unique<EngineLiveRunner>(); }

}  // namespace moebench::ui
