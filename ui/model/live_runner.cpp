// live_runner.cpp: see live_runner.h.
#include "ui/model/live_runner.h"

#include <fmt/format.h>
#include <unistd.h>
#include <xxhash.h>

#include <chrono>
#include <fstream>
#include <mutex>
#include <thread>

#include "engine/cpu_model.h"
#include "engine/engine.h"
#include "engine/error.h"
#include "engine/generate.h"
#include "engine/weight_source.h"
#include "profiler/chrome_trace.h"
#include "profiler/clock.h"
#include "variants/expert_cache.h"
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

std::string token_hash(const std::vector<int32_t>& ids) {
  return fmt::format("{:016x}", XXH64(ids.data(), ids.size() * sizeof(int32_t), 0));
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

// Counts what the cache does with the gate's choices while a case runs.
struct CacheAccounting {
  std::unique_ptr<ExpertCache> cache;
  int n_layers = 0, n_experts = 0;
  int step = -1;
  bool measuring = false, record_series = false;
  std::vector<AccessResult> out;
  reports::ExpertCounters counters;
  reports::HitRateSeries series;
  std::vector<int64_t> step_hits, step_access;  // (n_layers) of the current step

  void begin_repetition(bool measured, bool series_too) {
    step = -1;
    measuring = measured;
    record_series = series_too;
  }
  void close_step() {
    if (step < 0 || !record_series) return;
    int64_t h = 0, a = 0;
    for (int l = 0; l < n_layers; ++l) {
      h += step_hits[l];
      a += step_access[l];
      series.per_layer[l].push_back(step_access[l] ? static_cast<double>(step_hits[l]) / step_access[l] : 0.0);
    }
    series.overall.push_back(a ? static_cast<double>(h) / a : 0.0);
  }
  void on_route(int layer, int n, const int32_t* ids) {
    if (layer == 0) {
      close_step();
      ++step;
      std::fill(step_hits.begin(), step_hits.end(), 0);
      std::fill(step_access.begin(), step_access.end(), 0);
    }
    int k = n_experts ? static_cast<int>(cache->shape().top_k) : 0;
    cache->access_layer(step, layer, std::span<const int32_t>(ids, static_cast<size_t>(n) * k), out);
    for (auto& r : out) {
      step_access[layer] += 1;
      if (r.hit) step_hits[layer] += 1;
      if (!measuring) continue;
      if (r.hit) {
        ++counters.hits;
        ++counters.hits_per_layer[layer];
      } else {
        ++counters.misses;
        ++counters.misses_per_layer[layer];  // no copy follows: loads stay 0 on the cpu backend
      }
    }
    if (measuring)
      for (int i = 0; i < n * k; ++i) counters.usage[layer][ids[i]] += 1;
  }
};

reports::Case run_case(const LiveSettings& s, const std::string& stage, int case_index, int n_cases,
                       reports::Results& results, profiler::CpuTrace& trace, std::vector<profiler::TokenSample>& steps,
                       const std::function<void(const LiveSnapshot&)>& progress, const std::atomic<bool>* cancel,
                       std::shared_ptr<const reports::Results> done_so_far) {
  reports::Case c;
  c.suite = s.suite;
  c.name = fmt::format("prompt{}_new{}", s.prompt_tokens, s.new_tokens);
  c.routing_source = "model";
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
  int64_t load_start = profiler::now_ns();
  std::unique_ptr<Model> model;
  WeightSource w;
  {
    profiler::ScopedRange r(trace, profiler::RangeKind::other, -1, -1, "model load");
    w = WeightSource::open(s.model, s.seed);
    EngineContext ctx;
    ctx.weights = &w;
    ctx.settings = es;
    ctx.backend = s.backend;
    model = create_model(ctx);
  }
  int64_t load_ns = profiler::now_ns() - load_start;
  const ModelConfig& cfg = model->config();
  if (results.model.name.empty()) {
    results.model.name = cfg.name;
    results.model.config = config_to_json(cfg);
    results.model.dtype = w.is_synthetic() ? "bf16 (upcast to f32 on the cpu backend)" : "checkpoint";
    results.model.weight_source = w.describe();
  }

  CacheAccounting acc;
  acc.n_layers = cfg.num_hidden_layers;
  acc.n_experts = cfg.num_local_experts;
  int n_keys = acc.n_layers * acc.n_experts;
  int slots = s.cache_slots > 0 ? s.cache_slots : (es.cache_slots > 0 ? es.cache_slots : n_keys);
  slots = std::clamp(slots, cfg.num_experts_per_tok, n_keys);
  CacheShape shape{acc.n_layers, acc.n_experts, cfg.num_experts_per_tok, slots};
  PolicyContext pctx;
  pctx.shape = shape;
  acc.cache = std::make_unique<ExpertCache>(shape, make_cache_policy(es.cache_policy, pctx));
  acc.cache->warm_up();  // no weights to copy on the cpu backend; residency only
  auto zeros = std::vector<int64_t>(static_cast<size_t>(acc.n_layers), 0);
  acc.counters.hits_per_layer = acc.counters.misses_per_layer = acc.counters.loads_per_layer = zeros;
  acc.counters.bytes_moved_per_layer = acc.counters.load_time_ns_per_layer = acc.counters.stall_ns_per_layer = zeros;
  acc.counters.usage.assign(static_cast<size_t>(acc.n_layers), std::vector<int64_t>(static_cast<size_t>(acc.n_experts), 0));
  acc.series.per_layer.assign(static_cast<size_t>(acc.n_layers), {});
  acc.step_hits = acc.step_access = zeros;
  if (auto* cpu = dynamic_cast<CpuModel*>(model.get()))
    cpu->set_routing_observer([&acc](int layer, int, int n, const int32_t* ids, const float*) { acc.on_route(layer, n, ids); });

  for (auto& [k, v] : es.to_list()) c.settings.knobs[k] = knob_value(v);
  c.settings.knobs["backend"] = s.backend;
  c.settings.knobs["cache_slots_used"] = slots;
  c.settings.knobs["cache_accounting"] =
      "ExpertCache over the real gate's choices; cpu backend keeps every expert resident, no bytes move, "
      "no next-layer predictions (prefetch counts as lru)";

  std::vector<int32_t> prompt = make_prompt(cfg, s.prompt_tokens, s.seed);
  GenerateOptions opt;
  opt.max_new_tokens = s.new_tokens;
  opt.stop_at_eos = false;
  bool cold_pending = true;
  int64_t cold_ns = 0;
  int total_reps = s.repetitions + (es.warmup ? 1 : 0);
  std::vector<int32_t> first_output;
  for (int rep = 0; rep < total_reps; ++rep) {
    bool measured = !(es.warmup && rep == 0);
    int measured_index = es.warmup ? rep - 1 : rep;
    acc.begin_repetition(measured, measured && measured_index == 0);
    snap.repetition = measured ? measured_index : -1;
    snap.latency_ns.clear();
    snap.phase.clear();
    int64_t prev = profiler::now_ns();
    GenerateResult g;
    {
      profiler::ScopedRange r(trace, profiler::RangeKind::other, -1, -1, measured ? "repetition" : "warm-up");
      g = generate(*model, prompt, opt, [&](int32_t, int index) {
        int64_t now = profiler::now_ns();
        auto phase = index == 0 ? profiler::Phase::prefill : profiler::Phase::decode;
        steps.push_back({phase, index == 0 ? s.prompt_tokens : 1, prev, now - prev});
        snap.latency_ns.push_back(now - prev);
        snap.phase.push_back(index == 0 ? reports::Phase::prefill : reports::Phase::decode);
        prev = now;
        ++snap.version;
        if (progress) progress(snap);
        if (cancel && cancel->load()) throw Cancelled{};
      });
    }
    acc.close_step();
    acc.record_series = false;
    if (cold_pending) {
      cold_ns = load_ns + (g.token_latency_ns.empty() ? 0 : g.token_latency_ns[0]);
      cold_pending = false;
    }
    if (!measured) continue;
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
  acc.cache->finish();
  c.warmup = es.warmup ? 1 : 0;
  c.experts = std::move(acc.counters);
  c.hit_rate = std::move(acc.series);
  c.output_token_hash = token_hash(first_output);
  c.aggregates = reports::compute_aggregates(c);
  return c;
}

}  // namespace

LiveOutcome run_live(const LiveSettings& s, const std::function<void(const LiveSnapshot&)>& progress,
                     const std::atomic<bool>* cancel) {
  LiveOutcome out;
  reports::Results& r = out.results;
  r.run.tool_version = "moebench dashboard live";
  r.run.commit = MOEBENCH_GIT_COMMIT;
  r.run.build_type = MOEBENCH_BUILD_TYPE;
  r.run.start_time = utc_now();
  r.run.command_line = {"moebench", "dashboard", "live", "--model", s.model, "--stages"};
  for (auto& st : s.stages) r.run.command_line.push_back(st);
  r.run.trace_file = s.trace_path;
  r.host = host_info();
  r.device.kind = reports::DeviceKind::cpu;
  r.device.name = r.host.cpu_model.empty() ? "cpu" : r.host.cpu_model;
  r.device.memory_bytes = r.host.memory_bytes;

  profiler::CpuTrace trace;
  trace.set_enabled(!s.trace_path.empty());
  trace.name_this_thread("engine");
  std::vector<profiler::TokenSample> steps;
  int n = static_cast<int>(s.stages.size());
  try {
    if (s.repetitions < 1) fail("repetitions must be >= 1, got {}", s.repetitions);
    if (s.prompt_tokens < 1 || s.new_tokens < 1) fail("prompt and new tokens must be >= 1");
    for (int i = 0; i < n; ++i) {
      auto done = std::make_shared<const reports::Results>(r);
      try {
        r.cases.push_back(run_case(s, s.stages[static_cast<size_t>(i)], i, n, r, trace, steps, progress, cancel, done));
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
  if (!s.trace_path.empty() && !steps.empty()) {
    profiler::TraceInput in;
    in.steps = steps;
    in.cpu_ranges = trace.ranges();
    in.cpu_thread_names = trace.thread_names();
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
