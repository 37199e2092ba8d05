// live_runner.cpp: see live_runner.h.
#include "ui/model/live_runner.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "engine/build_info.h"
#include "engine/checkpoint_cache.h"
#include "engine/cpu_expert_provider.h"
#include "engine/cpu_model.h"
#include "engine/engine.h"
#include "common/error.h"
#include "engine/generate.h"
#include "engine/weight_source.h"
#include "profiler/chrome_trace.h"
#include "common/clock.h"
#include "suites/runner.h"
#include "variants/stages.h"

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

struct Cancelled {};

// A temporary folder, removed with everything in it.
std::string utc_now() {
  auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

reports::HostInfo host_info() {
  reports::HostInfo h;
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) == 0) h.name = name;
  std::ifstream cpu("/proc/cpuinfo");
  for (std::string line; std::getline(cpu, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      h.cpu_model = line.substr(line.find(':') + 2);
      break;
    }
  h.cores = static_cast<int>(std::thread::hardware_concurrency());
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) h.memory_bytes = static_cast<int64_t>(pages) * page;
  return h;
}

// A knob's text as a JSON scalar: numbers and booleans typed, the rest strings.
nlohmann::json knob_value(const std::string& v) {
  if (v == "true") return true;
  if (v == "false") return false;
  if (!v.empty()) {
    char* end = nullptr;
    double d = std::strtod(v.c_str(), &end);
    if (end && *end == '\0') {
      if (v.find_first_of(".eE") == std::string::npos) return static_cast<int64_t>(d);
      return d;
    }
  }
  return v;
}

// Deterministic prompt ids (BOS then a seeded spread over the vocabulary): the
// timing and routing of a synthetic model do not depend on meaningful text.
std::vector<int32_t> make_prompt(const ModelConfig& cfg, int n, uint64_t seed) {
  std::vector<int32_t> p;
  p.push_back(cfg.bos_token_id >= 0 ? cfg.bos_token_id : 1);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  while (static_cast<int>(p.size()) < n) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p.push_back(static_cast<int32_t>(3 + x % static_cast<uint64_t>(std::max(4, cfg.vocab_size - 3))));
  }
  return p;
}


// What the trace keeps: the engine's ranges and steps of a case's first measured
// repetition (and its model load), so a trace stays small enough to read.
struct TraceParts {
  std::vector<profiler::TokenSample> steps;
  std::vector<profiler::CpuRange> ranges;
  std::vector<std::string> thread_names;
  void take(const profiler::Profiler& p, bool with_steps) {
    auto r = p.trace.ranges();
    auto names = p.trace.thread_names();
    // Thread indexes are per CpuTrace: map them onto one list of names.
    for (auto& x : r) {
      const std::string& n = x.thread < static_cast<int32_t>(names.size()) ? names[static_cast<size_t>(x.thread)] : "engine";
      auto it = std::find(thread_names.begin(), thread_names.end(), n);
      if (it == thread_names.end()) it = thread_names.insert(thread_names.end(), n);
      x.thread = static_cast<int32_t>(it - thread_names.begin());
      ranges.push_back(x);
    }
    if (with_steps) steps.insert(steps.end(), p.tokens.samples.begin(), p.tokens.samples.end());
  }
};

reports::Case run_case(const LiveSettings& s, const std::string& stage, int case_index, int n_cases,
                       reports::Results& results, bool tracing, TraceParts& trace,
                       const std::function<void(const LiveSnapshot&)>& progress, const std::atomic<bool>* cancel,
                       std::shared_ptr<const reports::Results> done_so_far) {
  reports::Case c;
  c.suite = s.suite;
  c.name = fmt::format("prompt{}_new{}", s.prompt_tokens, s.new_tokens);
  c.prompt_tokens = s.prompt_tokens;
  c.new_tokens = s.new_tokens;
  c.repetitions = s.repetitions;
  c.settings.stage = stage;

  LiveSnapshot snap;
  snap.state = LiveState::running;
  snap.case_index = case_index;
  snap.n_cases = n_cases;
  snap.results = std::move(done_so_far);
  snap.case_label = fmt::format("{}/{} [{}]", c.suite, c.name, stage);

  EngineSettings es = stage_settings(stage);
  if (s.cache_slots > 0) es.cache_slots = s.cache_slots;
  profiler::Profiler prof;
  prof.trace.set_enabled(tracing);
  prof.trace.name_this_thread("engine");
  int64_t load_start = profiler::now_ns();
  std::unique_ptr<Model> model;
  WeightSource w;
  {
    profiler::ScopedRange r(prof.trace, profiler::RangeKind::other, -1, -1, "model load");
    w = WeightSource::open(s.model, s.seed);
    EngineContext ctx;
    ctx.weights = &w;
    ctx.settings = es;
    ctx.backend = s.backend;
    ctx.prof = &prof;
    model = create_model(ctx);
  }
  int64_t load_ns = profiler::now_ns() - load_start;
  if (tracing) trace.take(prof, false);
  const ModelConfig& cfg = model->config();
  if (results.model.name.empty()) {
    results.model.name = cfg.name;
    results.model.config = config_to_json(cfg);
    results.model.dtype = w.is_synthetic() ? "bf16" : "checkpoint";
    if (results.model.weight_source.empty()) results.model.weight_source = w.describe();
  }
  for (auto& [k, v] : es.to_list()) c.settings.knobs[k] = knob_value(v);
  c.settings.knobs["backend"] = model->backend();
  if (auto* cpu = dynamic_cast<CpuModel*>(model.get())) {
    c.routing_source = cpu->routing_name();
    if (es.expert_tier != "resident") c.settings.knobs["cache_slots_used"] = cpu_cache_slots(es, cfg);
  } else {
    c.routing_source = es.routing;
  }

  const int n_layers = cfg.num_hidden_layers;
  std::vector<int64_t> layer_hits(static_cast<size_t>(n_layers)), layer_misses(static_cast<size_t>(n_layers));
  std::vector<int32_t> prompt = make_prompt(cfg, s.prompt_tokens, s.seed);
  GenerateOptions opt;
  opt.max_new_tokens = s.new_tokens;
  opt.stop_at_eos = false;
  opt.prof = &prof;
  bool cold_pending = true;
  int64_t cold_ns = 0;
  int total_reps = s.repetitions + (es.warmup ? 1 : 0);
  std::vector<int32_t> first_output;
  for (int rep = 0; rep < total_reps; ++rep) {
    bool measured = !(es.warmup && rep == 0);
    int measured_index = es.warmup ? rep - 1 : rep;
    bool first_measured = measured && measured_index == 0;
    prof.reset_repetition();
    std::fill(layer_hits.begin(), layer_hits.end(), 0);
    std::fill(layer_misses.begin(), layer_misses.end(), 0);
    if (first_measured) c.hit_rate.per_layer.assign(static_cast<size_t>(n_layers), {});
    snap.repetition = measured ? measured_index : -1;
    snap.latency_ns.clear();
    snap.phase.clear();
    int64_t prev = profiler::now_ns();
    GenerateResult g;
    {
      profiler::ScopedRange r(prof.trace, profiler::RangeKind::other, -1, -1, measured ? "repetition" : "warm-up");
      g = generate(*model, prompt, opt, [&](int32_t, int index) {
        int64_t now = profiler::now_ns();
        snap.latency_ns.push_back(now - prev);
        snap.phase.push_back(index == 0 ? reports::Phase::prefill : reports::Phase::decode);
        prev = now;
        // Per-layer hit rate of this step, from the engine's counters.
        if (first_measured && prof.experts.n_layers() == n_layers)
          for (int l = 0; l < n_layers; ++l) {
            const profiler::ExpertStats& st = prof.experts.layer(l);
            int64_t h = st.hits - layer_hits[static_cast<size_t>(l)], m = st.misses - layer_misses[static_cast<size_t>(l)];
            layer_hits[static_cast<size_t>(l)] = st.hits;
            layer_misses[static_cast<size_t>(l)] = st.misses;
            c.hit_rate.per_layer[static_cast<size_t>(l)].push_back(h + m > 0 ? static_cast<double>(h) / (h + m) : 1.0);
          }
        ++snap.version;
        if (progress) progress(snap);
        if (cancel && cancel->load()) throw Cancelled{};
      });
    }
    if (cold_pending) {
      cold_ns = load_ns + (g.token_latency_ns.empty() ? 0 : g.token_latency_ns[0]);
      cold_pending = false;
    }
    if (tracing && first_measured) trace.take(prof, true);
    if (!measured) continue;
    if (prof.experts.n_layers() > 0) suites::add_expert_counters(c.experts, prof.experts);
    if (first_measured) c.hit_rate.overall = prof.experts.hit_rate_series(false);
    reports::Repetition r;
    r.latency_ns = g.token_latency_ns;
    for (size_t i = 0; i < g.token_latency_ns.size(); ++i)
      r.phase.push_back(i == 0 ? reports::Phase::prefill : reports::Phase::decode);
    r.ttft_warm_ns = g.token_latency_ns.empty() ? 0 : g.token_latency_ns[0];
    if (c.samples.empty()) {
      r.ttft_cold_ns = cold_ns;
      first_output = g.output;
    }
    c.samples.push_back(std::move(r));
  }
  if (c.experts.hits + c.experts.misses == 0) c.hit_rate = {};  // no expert cache counted (other backends)
  c.warmup = es.warmup ? 1 : 0;
  c.output_token_hash = suites::token_hash(first_output);
  c.aggregates = reports::compute_aggregates(c);
  return c;
}

}  // namespace

LiveOutcome run_live(const LiveSettings& s, const std::function<void(const LiveSnapshot&)>& progress,
                     const std::atomic<bool>* cancel) {
  LiveOutcome out;
  reports::Results& r = out.results;
  r.run.tool_version = kVersion;
  r.run.commit = moebench::build_commit();
  r.run.build_type = MOEBENCH_BUILD_TYPE;
  r.run.start_time = utc_now();
  r.run.command_line = {"moebench", "dashboard", "live", "--model", s.model, "--stages"};
  for (auto& st : s.stages) r.run.command_line.push_back(st);
  r.run.trace_file = s.trace_path;
  r.host = host_info();
  r.device.kind = reports::DeviceKind::cpu;
  r.device.name = r.host.cpu_model.empty() ? "cpu" : r.host.cpu_model;
  r.device.memory_bytes = r.host.memory_bytes;

  TraceParts trace;
  const bool tracing = !s.trace_path.empty();
  int n = static_cast<int>(s.stages.size());
  try {
    if (s.repetitions < 1) fail("repetitions must be >= 1, got {}", s.repetitions);
    if (s.prompt_tokens < 1 || s.new_tokens < 1) fail("prompt and new tokens must be >= 1");
    // The disk tier reads experts from safetensors files: a synthetic model is loaded
    // from its cached checkpoint (same values, engine/checkpoint_cache.h), and every
    // stage loads from it alike.
    LiveSettings run = s;
    bool needs_disk = false;
    for (auto& st : s.stages) needs_disk = needs_disk || stage_settings(st).expert_tier == "disk";
    if (needs_disk && WeightSource::open(s.model, s.seed).is_synthetic()) {
      WeightSource w = WeightSource::open(s.model, s.seed);
      run.model = cached_synthetic_checkpoint(w);
      r.model.name = w.config().name;  // not the cache folder's name
      r.model.config = config_to_json(w.config());
      r.model.dtype = "bf16";
      r.model.weight_source = w.describe() + " (from its cached checkpoint, for the disk tier)";
    }
    for (int i = 0; i < n; ++i) {
      auto done = std::make_shared<const reports::Results>(r);
      try {
        r.cases.push_back(run_case(run, s.stages[static_cast<size_t>(i)], i, n, r, tracing, trace, progress, cancel, done));
      } catch (const Error& e) {
        reports::Case c;
        c.suite = s.suite;
        c.name = fmt::format("prompt{}_new{}", s.prompt_tokens, s.new_tokens);
        c.settings.stage = s.stages[static_cast<size_t>(i)];
        c.status = reports::CaseStatus::failed;
        c.error = e.what();
        r.cases.push_back(std::move(c));
      }
    }
  } catch (const Cancelled&) {
    out.state = LiveState::cancelled;
  } catch (const std::exception& e) {
    out.state = LiveState::failed;
    out.error = e.what();
  }
  if (tracing && !trace.steps.empty()) {
    profiler::TraceInput in;
    in.steps = trace.steps;
    in.cpu_ranges = trace.ranges;
    in.cpu_thread_names = trace.thread_names;
    in.metadata = {{"source", "moebench dashboard live run"}, {"model", s.model}};
    try {
      profiler::write_chrome_trace(s.trace_path, in);
    } catch (const std::exception& e) {
      if (out.error.empty()) out.error = e.what();
    }
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
