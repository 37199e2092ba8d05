// cmd_profile_check.cpp: `moebench profile-check` (alias profile_check) measures the
// profiler's own cost and truthfulness (profiler/integrity.h). Its flags become a
// one-case suite (the synthetic prompt, suites/suite.h) that the suite runner runs
// (suites/runner.h): the case is measured and recorded like a `run` case (settings,
// steps, expert counters, bound), and on the CUDA model the runner's pass after it
// (the model still loaded) adds:
//   1. always-on counters: decode step time with the profiler attached vs detached,
//      same process and model, arms interleaved over rounds (rotating order);
//   2. CUPTI: kernel, memcpy and memset records collected (a probe checks memset and
//      both copy directions byte for byte), dropped records counted, GPU time by
//      category and by kernel per decode step, and per step the CUPTI kernel + copy
//      time against the CUDA-event step time;
//   3. optionally a Chrome trace of one more generation (CPU ranges, GPU tracks,
//      flows), checked by profiler/trace_validate before it is written.
// On the CPU backend parts 1-3 are not measured (the CPU model's profiler is fixed
// when the model is created, and CUPTI needs a GPU); the file says why.
// Results (run header, device with measured bandwidths, the runner's results with the
// case under "results", every raw per-round and per-step number) go to --out as JSON, a summary
// to stdout. `--validate-trace FILE` only checks a trace file (any backend, no model).
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

#include "cli/command.h"
#include "app/model_options.h"
#include "engine/engine.h"
#include "common/error.h"
#include "engine/generate.h"
#include "common/log.h"
#include "profiler/chrome_trace.h"
#include "common/clock.h"
#include "profiler/counters.h"
#include "profiler/cupti.h"
#include "profiler/integrity.h"
#include "profiler/stats.h"
#include "profiler/trace_validate.h"
#include "common/atomic_file.h"
#include "reports/results.h"
#include "suites/kernel_table.h"
#include "suites/machine.h"
#include "suites/run_header.h"
#include "suites/runner.h"
#include "suites/suite.h"
#if MOEBENCH_CUDA_MODEL
#include <cuda_runtime_api.h>

#include "engine/cuda/cuda_model.h"
#endif

namespace cmd_profile_check {

namespace {
using namespace moebench;
using json = nlohmann::json;

struct Args {
  app::ModelOptions model;
  int prompt_tokens = 16;
  int new_tokens = 64;
  int rounds = 12;
  int cupti_generations = 3;
  int trace_tokens = 16;
  double overhead_limit_pct = 1.0;
  double agreement_limit_pct = 10.0;
  std::string out;
  std::string trace;
  std::string validate_trace;
};

// What a trace holds, by track kind: checks that CPU ranges, GPU work and flows are there.
json trace_summary(const json& trace) {
  int64_t cpu_slices = 0, api_slices = 0, gpu_kernels = 0, gpu_copies = 0, gpu_memsets = 0, flow_s = 0, flow_f = 0,
          counters = 0, step_slices = 0;
  std::map<std::pair<int64_t, int64_t>, bool> gpu_tracks;
  const json& ev = trace.is_object() ? trace.at("traceEvents") : trace;
  for (const json& e : ev) {
    const std::string ph = e.value("ph", "");
    const std::string cat = e.value("cat", "");
    if (ph == "s") ++flow_s;
    if (ph == "f") ++flow_f;
    if (ph == "C") ++counters;
    if (ph != "X") continue;
    const int64_t pid = e.value("pid", int64_t{-1});
    if (pid >= 100) {
      gpu_tracks[{pid, e.value("tid", int64_t{-1})}] = true;
      if (cat == "kernel") ++gpu_kernels;
      else if (cat == "memcpy") ++gpu_copies;
      else if (cat == "memset") ++gpu_memsets;
    } else if (cat == "cuda_api") {
      ++api_slices;
    } else if (cat == "step") {
      ++step_slices;
    } else {
      ++cpu_slices;
    }
  }
  return {{"events", ev.size()},       {"step_slices", step_slices}, {"cpu_range_slices", cpu_slices},
          {"cuda_api_slices", api_slices}, {"gpu_tracks", gpu_tracks.size()}, {"gpu_kernels", gpu_kernels},
          {"gpu_memcpys", gpu_copies}, {"gpu_memsets", gpu_memsets},   {"flow_starts", flow_s},
          {"flow_ends", flow_f},       {"counter_points", counters}};
}

int validate_trace_file(const std::string& path) {
  json t;
  try {
    t = json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail("{}: not JSON: {}", path, e.what());
  }
  const auto problems = profiler::validate_chrome_trace(t);
  if (problems.empty()) fmt::print("{}: valid trace-event JSON; {}\n", path, trace_summary(t).dump());
  for (size_t i = 0; i < problems.size() && i < 20; ++i) fmt::print("{}: {}\n", path, problems[i]);
  if (problems.size() > 20) fmt::print("{}: ... {} problems in all\n", path, problems.size());
  return problems.empty() ? 0 : 1;
}

#if MOEBENCH_CUDA_MODEL

json overhead_json(const profiler::PairedOverhead& o, const std::vector<double>& rounds_ns, double limit_pct) {
  const double lo = o.mean_pct - o.ci95_half_pct, hi = o.mean_pct + o.ci95_half_pct;
  const char* verdict = hi <= limit_pct ? "within" : lo > limit_pct ? "exceeds" : "inconclusive";
  return {{"mean_pct", o.mean_pct},         {"ci95_half_pct", o.ci95_half_pct}, {"stddev_pct", o.stddev_pct},
          {"median_pct", o.median_pct},     {"mean_step_ns", o.arm_mean_ns},    {"rounds", o.n_rounds},
          {"per_round_mean_ns", rounds_ns}, {"limit_pct", limit_pct},           {"verdict", verdict}};
}

json ratio_json(const profiler::RatioSummary& r) {
  return {{"steps", r.n}, {"median", r.median}, {"p10", r.p10}, {"p90", r.p90},
          {"min", r.min}, {"max", r.max},       {"of_totals", r.of_totals}};
}

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("profile-check: {}: {}", what, cudaGetErrorString(e));
}

enum class Arm { off, counters, counters_device_memory };
constexpr Arm kArms[] = {Arm::off, Arm::counters, Arm::counters_device_memory};
const char* arm_name(Arm a) {
  switch (a) {
    case Arm::off: return "off";
    case Arm::counters: return "counters";
    case Arm::counters_device_memory: return "counters_device_memory";
  }
  return "?";
}

// One generation of an arm; returns its mean decode step (ns, the generation loop's
// steady-clock step times, measured the same way in every arm).
double run_arm(cuda::CudaModel& m, profiler::Profiler& prof, Arm arm, const std::vector<int32_t>& prompt,
               int new_tokens, std::vector<int64_t>& steps_out) {
  const bool on = arm != Arm::off;
  prof.options.sample_device_memory = arm == Arm::counters_device_memory;
  prof.reset_repetition();
  m.set_profiler(on ? &prof : nullptr);
  GenerateOptions g;
  g.max_new_tokens = new_tokens;
  g.stop_at_eos = false;
  g.prof = on ? &prof : nullptr;
  const GenerateResult r = generate(m, prompt, g);
  m.set_profiler(&prof);
  if (on && static_cast<int>(prof.tokens.samples.size()) != new_tokens)
    fail("profile-check: the profiler recorded {} steps for a generation of {} tokens (expected one per step)",
         prof.tokens.samples.size(), new_tokens);
  double sum = 0;
  for (size_t i = 1; i < r.token_latency_ns.size(); ++i) {
    sum += static_cast<double>(r.token_latency_ns[i]);
    steps_out.push_back(r.token_latency_ns[i]);
  }
  return sum / static_cast<double>(r.token_latency_ns.size() - 1);
}

// Known work on a stream of its own: a memset, a pinned H2D copy and a D2H copy of
// `bytes` each. Their CUPTI records must be there with the right kind and size.
json cupti_probe(profiler::CuptiCollector& cupti, size_t bytes) {
  void *d = nullptr, *h = nullptr;
  cudaStream_t s = nullptr;
  cuda_ok(cudaMalloc(&d, bytes), "cudaMalloc (probe)");
  cuda_ok(cudaHostAlloc(&h, bytes, cudaHostAllocDefault), "cudaHostAlloc (probe)");
  cuda_ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate (probe)");
  cupti.flush();
  cupti.take_events();
  const int64_t t0 = profiler::now_ns();
  cuda_ok(cudaMemsetAsync(d, 0, bytes, s), "cudaMemsetAsync (probe)");
  cuda_ok(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync H2D (probe)");
  cuda_ok(cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync D2H (probe)");
  cuda_ok(cudaStreamSynchronize(s), "cudaStreamSynchronize (probe)");
  const int64_t t1 = profiler::now_ns();
  cupti.flush();
  const auto events = cupti.take_events();
  cudaStreamDestroy(s);
  cudaFreeHost(h);
  cudaFree(d);
  json found = {{"memset", false}, {"memcpy_h2d", false}, {"memcpy_d2h", false}};
  json gbps = json::object();
  int64_t api = 0, in_window = 0;
  for (const auto& e : events) {
    if (e.kind == profiler::GpuEventKind::runtime_api) ++api;
    if (e.start_ns < t0 || e.end_ns > t1) continue;
    ++in_window;
    if (static_cast<size_t>(e.bytes) != bytes) continue;
    const double g = e.end_ns > e.start_ns ? static_cast<double>(e.bytes) / static_cast<double>(e.end_ns - e.start_ns) : 0;
    if (e.kind == profiler::GpuEventKind::memset) found["memset"] = true, gbps["memset"] = g;
    if (e.kind == profiler::GpuEventKind::memcpy && e.copy_kind == profiler::CopyKind::h2d)
      found["memcpy_h2d"] = true, gbps["memcpy_h2d"] = g;
    if (e.kind == profiler::GpuEventKind::memcpy && e.copy_kind == profiler::CopyKind::d2h)
      found["memcpy_d2h"] = true, gbps["memcpy_d2h"] = g;
  }
  const bool ok = found["memset"].get<bool>() && found["memcpy_h2d"].get<bool>() && found["memcpy_d2h"].get<bool>();
  return {{"bytes", bytes}, {"found", found}, {"gbps_from_cupti", gbps}, {"device_events_in_window", in_window},
          {"runtime_api_records", api}, {"ok", ok}};
}

// ---- 1. overhead of the always-on counters ----
json overhead_experiment(cuda::CudaModel& m, profiler::Profiler& prof, const std::vector<int32_t>& prompt,
                         const Args& a) {
  fmt::print(stderr, "profile-check: overhead, {} rounds x {} arms x {} decode steps\n", a.rounds, std::size(kArms),
             a.new_tokens - 1);
  {
    std::vector<int64_t> scratch;
    for (Arm arm : kArms) run_arm(m, prof, arm, prompt, a.new_tokens, scratch);  // warm-up of every arm
  }
  constexpr int kN = static_cast<int>(std::size(kArms));
  std::vector<std::vector<double>> per_round(kN);   // (arm, round) mean decode step ns
  std::vector<std::vector<int64_t>> all_steps(kN);  // (arm, steps)
  std::vector<std::vector<int>> order;              // (round, kN) arm order used
  for (int r = 0; r < a.rounds; ++r) {
    std::vector<int> ord(kN);
    for (int k = 0; k < kN; ++k) ord[k] = (k + r) % kN;  // rotating: each arm in each position
    if (r % (2 * kN) >= kN) std::reverse(ord.begin(), ord.end());
    for (int k : ord) per_round[k].push_back(run_arm(m, prof, kArms[k], prompt, a.new_tokens, all_steps[k]));
    order.push_back(ord);
  }
  json overhead = json::object();
  overhead["definition"] =
      "per round, one generation per arm (order rotating); mean decode step of each from the generation loop's "
      "steady-clock step times; overhead = mean over rounds of (arm - off) / off, 95% CI by Student t";
  double off_sum = 0;
  for (double v : per_round[0]) off_sum += v;
  overhead["off"] = {{"mean_step_ns", off_sum / static_cast<double>(per_round[0].size())},
                     {"per_round_mean_ns", per_round[0]},
                     {"median_step_ns", profiler::summarize(all_steps[0]).median_ns}};
  for (int k = 1; k < kN; ++k) {
    const auto o = profiler::paired_overhead(per_round[0], per_round[k]);
    overhead[arm_name(kArms[k])] = overhead_json(o, per_round[k], a.overhead_limit_pct);
    overhead[arm_name(kArms[k])]["median_step_ns"] = profiler::summarize(all_steps[k]).median_ns;
  }
  overhead["arms"] = {{"off", "no profiler: EngineContext's profiler detached, GenerateOptions.prof null"},
                      {"counters", "profiler attached, ProfilerOptions defaults (no cudaMemGetInfo)"},
                      {"counters_device_memory", "profiler attached as `moebench run` attaches it on CUDA: "
                                                 "cudaMemGetInfo at every step end"}};
  overhead["round_order"] = order;
  overhead["steps_recorded_per_generation"] = a.new_tokens;
  return overhead;
}

// ---- 2. CUPTI: records, probe, agreement with CUDA events ----

// What the CUPTI generations collect.
struct CuptiCollected {
  std::vector<profiler::StepAgreement> agree;  // (generations x decode steps)
  std::vector<int64_t> cpu_step_ns;            // (generations x decode steps)
  profiler::GpuTimeByCategory by_cat;
  std::vector<profiler::GpuEvent> kernel_events;  // device records inside the decode steps
  int64_t t0_ns = 0, t1_ns = 0;                   // (a window holding every one of them)
  std::map<std::string, int64_t> kinds;
  std::vector<profiler::GpuEvent> traced_events;  // of the extra, traced generation
};

// One generation with a CUDA event pair around each decode step (`steps` of them);
// returns the step windows, CUPTI's records taken after it.
std::vector<profiler::StepWindow> evented_generation(cuda::CudaModel& m, profiler::Profiler& prof,
                                                     const std::vector<int32_t>& prompt, int steps,
                                                     std::vector<cudaEvent_t>& ev) {
  const int P = static_cast<int>(prompt.size());
  m.reset();
  int64_t t0 = profiler::now_ns();
  int32_t tok = m.forward_argmax(prompt.data(), P, 0);
  prof.record_token(profiler::Phase::prefill, P, t0, profiler::now_ns());
  std::vector<profiler::StepWindow> win(static_cast<size_t>(steps));
  for (int i = 0; i < steps; ++i) {
    win[i].cpu_start_ns = profiler::now_ns();
    cuda_ok(cudaEventRecord(ev[2 * i], m.stream()), "cudaEventRecord");
    tok = m.forward_argmax(&tok, 1, P + i);
    cuda_ok(cudaEventRecord(ev[2 * i + 1], m.stream()), "cudaEventRecord");
    win[i].cpu_end_ns = profiler::now_ns();
    prof.record_token(profiler::Phase::decode, 1, win[i].cpu_start_ns, win[i].cpu_end_ns);
  }
  cuda_ok(cudaEventSynchronize(ev[2 * steps - 1]), "cudaEventSynchronize");
  for (int i = 0; i < steps; ++i) {
    float ms = 0;
    cuda_ok(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]), "cudaEventElapsedTime");
    win[i].event_ns = static_cast<int64_t>(std::llround(static_cast<double>(ms) * 1e6));
  }
  return win;
}

void collect(CuptiCollected& c, const std::vector<profiler::GpuEvent>& events,
             const std::vector<profiler::StepWindow>& win) {
  for (const auto& e : events) ++c.kinds[profiler::gpu_event_kind_name(e.kind)];
  const auto ag = profiler::step_agreement(events, win);
  c.agree.insert(c.agree.end(), ag.begin(), ag.end());
  for (const auto& s : win) c.cpu_step_ns.push_back(s.cpu_end_ns - s.cpu_start_ns);
  const int64_t t0 = win.front().cpu_start_ns, t1 = win.back().cpu_end_ns;
  const auto gt = profiler::aggregate_gpu_time(events, profiler::default_kernel_rules(), t0, t1);
  for (int k = 0; k < profiler::kGpuCategoryCount; ++k) c.by_cat.ns[k] += gt.ns[k], c.by_cat.count[k] += gt.count[k];
  if (c.t0_ns == 0) c.t0_ns = t0;
  c.t1_ns = t1;
  for (const auto& e : events)
    if (e.kind == profiler::GpuEventKind::kernel && e.start_ns >= t0 && e.start_ns < t1) c.kernel_events.push_back(e);
}

// The warm-up (CUPTI on, not counted), the measured generations and, with --trace, one
// more short traced generation.
CuptiCollected cupti_generations(cuda::CudaModel& m, profiler::Profiler& prof, profiler::CuptiCollector& cupti,
                                 const std::vector<int32_t>& prompt, const Args& a) {
  CuptiCollected c;
  const int n_dec = a.new_tokens - 1;
  std::vector<cudaEvent_t> ev(2 * static_cast<size_t>(n_dec));  // (n_dec, 2) before / after
  for (auto& e : ev) cuda_ok(cudaEventCreate(&e), "cudaEventCreate");
  const int gens = a.cupti_generations + (a.trace.empty() ? 0 : 1);
  m.set_profiler(&prof);
  prof.options.sample_device_memory = true;  // as `moebench run` on CUDA
  for (int gi = -1; gi < gens; ++gi) {
    const bool traced = gi == a.cupti_generations;  // the extra generation, for the trace only
    prof.reset_repetition();
    prof.trace.name_this_thread("engine");
    prof.trace.set_enabled(traced);
    // The traced generation is kept short (--trace-tokens): the trace stays small.
    const auto win = evented_generation(m, prof, prompt, traced ? std::min(n_dec, a.trace_tokens - 1) : n_dec, ev);
    prof.trace.set_enabled(false);
    cupti.flush();
    std::vector<profiler::GpuEvent> events = cupti.take_events();
    if (traced) c.traced_events = std::move(events);
    else if (gi >= 0) collect(c, events, win);
  }
  for (auto& e : ev) cudaEventDestroy(e);
  return c;
}

json agreement_json(const CuptiCollected& c, cuda::CudaModel& m, const Args& a) {
  std::vector<int64_t> evt, sum, busy, span, kern;
  int64_t n_k = 0, n_c = 0, n_m = 0;
  for (const auto& s : c.agree) {
    evt.push_back(s.event_ns);
    sum.push_back(s.device_sum_ns);
    busy.push_back(s.busy_ns);
    span.push_back(s.span_ns);
    kern.push_back(s.kernel_ns);
    n_k += s.n_kernels, n_c += s.n_copies, n_m += s.n_memsets;
  }
  const double steps = std::max<double>(1, static_cast<double>(c.agree.size()));
  double se = 0, ss = 0;
  for (size_t i = 0; i < evt.size(); ++i) se += static_cast<double>(evt[i]), ss += static_cast<double>(sum[i]);
  const auto sum_r = profiler::ratio_summary(sum, evt);
  return {
      {"definition",
       "per decode step: event_ns = cudaEventElapsedTime between events recorded on the compute stream before the "
       "step's first launch and after its token reached the host; device_sum_ns = sum of CUPTI kernel + memcpy + "
       "memset durations starting inside the step's host window; busy_ns = their union; span_ns = last end - first "
       "start"},
      {"steps", c.agree.size()},
      {"sum_over_event", ratio_json(sum_r)},
      {"busy_over_event", ratio_json(profiler::ratio_summary(busy, evt))},
      {"span_over_event", ratio_json(profiler::ratio_summary(span, evt))},
      {"kernel_over_event", ratio_json(profiler::ratio_summary(kern, evt))},
      {"event_over_cpu_step", ratio_json(profiler::ratio_summary(evt, c.cpu_step_ns))},
      {"limit_pct", a.agreement_limit_pct},
      {"within_limit", sum_r.n > 0 && std::abs(sum_r.median - 1.0) * 100.0 <= a.agreement_limit_pct},
      {"decode_syncs_inside_forward", m.decode_syncs()},
      {"per_step", {{"event_ns", evt}, {"device_sum_ns", sum}, {"busy_ns", busy}, {"span_ns", span},
                    {"cpu_step_ns", c.cpu_step_ns}}},
      {"per_step_mean", {{"event_ns", se / steps}, {"device_sum_ns", ss / steps}, {"kernels", n_k / steps},
                         {"memcpys", n_c / steps}, {"memsets", n_m / steps}}}};
}

// The CUPTI part's JSON; the trace's (or null) in *trace_j.
json cupti_pass(cuda::CudaModel& m, profiler::Profiler& prof, const std::vector<int32_t>& prompt, const Args& a,
                const json& trace_metadata, json* trace_j) {
  json cj = json::object();
  profiler::CuptiCollector cupti;
  cj["available"] = cupti.enable();
  if (!cj["available"].get<bool>()) {
    cj["reason"] = cupti.unavailable_reason();
    log::warn("profile-check: CUPTI unavailable: {}", cupti.unavailable_reason());
    return cj;
  }
  try {
    fmt::print(stderr, "profile-check: CUPTI, probe + {} generation(s)\n", a.cupti_generations);
    cj["clock"] = cupti.clock_source();
    cj["probe"] = cupti_probe(cupti, 4u << 20);
    CuptiCollected c = cupti_generations(m, prof, cupti, prompt, a);
    cj["agreement"] = agreement_json(c, m, a);
    const double steps = std::max<double>(1, static_cast<double>(c.agree.size()));
    json cat = json::object();
    for (int k = 0; k < profiler::kGpuCategoryCount; ++k)
      if (c.by_cat.count[k] > 0)
        cat[profiler::gpu_category_name(static_cast<profiler::GpuCategory>(k))] = {
            {"ns_per_step", static_cast<double>(c.by_cat.ns[k]) / steps},
            {"events_per_step", static_cast<double>(c.by_cat.count[k]) / steps}};
    cj["gpu_time_by_category_per_decode_step"] = cat;
    cj["top_kernels"] = suites::kernel_table(c.kernel_events, c.t0_ns, c.t1_ns, static_cast<int>(c.agree.size()), 12)
                            .at("kernels");
    cj["records_by_kind"] = c.kinds;
    if (!a.trace.empty()) {
      profiler::TraceInput in = profiler::make_trace_input(prof, std::move(c.traced_events));
      in.metadata = trace_metadata;
      const json t = profiler::chrome_trace_json(in);
      const auto problems = profiler::validate_chrome_trace(t);
      profiler::write_chrome_trace(a.trace, in);
      *trace_j = {{"file", a.trace}, {"summary", trace_summary(t)}, {"problems", problems}, {"valid", problems.empty()}};
    }
    cupti.disable();
    cj["records_seen"] = cupti.records_seen();
    cj["dropped_records"] = cupti.dropped_records();
  } catch (const Error& e) {
    cj["error"] = e.what();
    log::error("profile-check: CUPTI part failed: {}", e.what());
  }
  return cj;
}

#endif

void check_args(const Args& a) {
  if (a.prompt_tokens < 1) fail("--prompt-tokens {}: must be at least 1", a.prompt_tokens);
  if (a.new_tokens < 3) fail("--new-tokens {}: must be at least 3 (a prefill and two decode steps)", a.new_tokens);
  if (a.rounds < 2) fail("--rounds {}: must be at least 2 (a spread needs two rounds)", a.rounds);
  if (a.cupti_generations < 1) fail("--cupti-generations {}: must be at least 1", a.cupti_generations);
  if (a.trace_tokens < 2) fail("--trace-tokens {}: must be at least 2 (a prefill and a decode step)", a.trace_tokens);
}

// The one-case suite the flags describe: the model options' settings (stage,
// --routing, --max-model-len, --gpu-mem-budget, --set), the synthetic prompt, one
// measured generation after a warm-up.
suites::Suite check_suite(const Args& a) {
  const EngineSettings s = app::settings_from(a.model);
  if (a.prompt_tokens + a.new_tokens > s.max_model_len)
    fail("--prompt-tokens {} + --new-tokens {} exceed max_model_len {}", a.prompt_tokens, a.new_tokens, s.max_model_len);
  suites::Suite suite;
  suite.name = suite.source = "profile-check";
  suite.defaults.model["*"] = a.model.preset.empty() ? a.model.model : "synthetic:" + a.model.preset;
  if (suite.defaults.model["*"].empty()) fail("no model given: pass --model DIR|synthetic:PRESET or --preset PRESET");
  suite.defaults.backend = a.model.backend;
  suite.defaults.seed = a.model.seed;
  suite.defaults.repetitions = 1;
  suite.defaults.new_tokens = a.new_tokens;
  suite.defaults.cpu_threads = a.model.threads;
  suite.defaults.stage = a.model.stage;
  for (const auto& [k, v] : s.to_list())
    if (k != "stage") suite.defaults.settings.emplace_back(k, v);
  suites::CaseSpec c;
  c.name = fmt::format("p{}_n{}", a.prompt_tokens, a.new_tokens);
  c.prompt_tokens = a.prompt_tokens;
  suite.cases.push_back(c);
  return suite;
}

// The runner's pass after the case: parts 1-3 on the model it ran on, each saved as
// soon as it is done (part 1 is kept even if part 2 fails).
class CheckPass {
 public:
  CheckPass(const Args& a, json& out) : a_(a), out_(out) {}
  void save() const {
    if (!a_.out.empty()) write_file_atomic(a_.out, out_.dump(1) + "\n");
  }
  void operator()(const suites::InstanceContext& x, std::vector<reports::Case>&) {
    const ModelConfig& cfg = x.weights.config();
    const auto prompt = suites::synthetic_prompt(a_.prompt_tokens, cfg.vocab_size, cfg.bos_token_id);
#if MOEBENCH_CUDA_MODEL
    if (auto* m = dynamic_cast<cuda::CudaModel*>(&x.model)) {
      out_["overhead"] = overhead_experiment(*m, x.prof, prompt, a_);
      save();
      json trace_j = nullptr;
      const json meta = {{"command", "profile-check"}, {"model", cfg.name}, {"device", x.device.name}};
      out_["cupti"] = cupti_pass(*m, x.prof, prompt, a_, meta, &trace_j);
      if (!trace_j.is_null()) out_["trace"] = trace_j;
      return;
    }
#endif
    (void)prompt;
    const std::string why =
        x.instance.backend == "cuda"
            ? "the loaded model is not a CudaModel, whose profiler the overhead arms attach and detach"
            : fmt::format("backend {}: the overhead arms attach and detach the profiler of the CUDA model (the CPU "
                          "model's is fixed when it is created)", x.instance.backend);
    out_["overhead"] = {{"measured", false}, {"reason", why}};
    out_["cupti"] = {{"available", false},
                     {"reason", x.instance.backend == "cuda" ? "the CUPTI pass drives a CudaModel"
                                                             : "backend " + x.instance.backend + ": CUPTI traces a GPU"}};
    if (!a_.trace.empty()) log::warn("profile-check: --trace: no trace on backend {} (needs CUPTI)", x.instance.backend);
  }

 private:
  const Args& a_;
  json& out_;
};

void print_overhead(const json& overhead, const Args& a) {
  if (!overhead.contains("off")) {
    fmt::print("overhead: not measured: {}\n", overhead.value("reason", "-"));
    return;
  }
  fmt::print("decode step, profiler off: {} (mean of {} rounds)\n",
             profiler::format_ns(overhead["off"]["mean_step_ns"].get<double>()), a.rounds);
  for (const char* arm : {"counters", "counters_device_memory"}) {
    const json& o = overhead[arm];
    fmt::print("  {:<24} {:+.3f}% +- {:.3f}% (95% CI), median {:+.3f}%: {} the {}% limit\n", arm,
               o["mean_pct"].get<double>(), o["ci95_half_pct"].get<double>(), o["median_pct"].get<double>(),
               o["verdict"].get<std::string>(), a.overhead_limit_pct);
  }
}

void print_cupti(const json& cj, const Args& a) {
  if (!cj.value("available", false) || cj.contains("error")) {
    fmt::print("CUPTI: {}\n", cj.contains("error") ? "failed: " + cj["error"].get<std::string>()
                                                   : "not available: " + cj.value("reason", std::string("-")));
    return;
  }
  const json& ag = cj["agreement"];
  fmt::print("CUPTI: {} records, {} dropped; probe (memset, H2D, D2H) {}\n", cj["records_seen"].get<int64_t>(),
             cj["dropped_records"].get<int64_t>(), cj["probe"]["ok"].get<bool>() ? "ok" : "MISSING RECORDS");
  fmt::print("  per decode step: event {} vs kernel+copy {}; sum/event median {:.3f} (p10 {:.3f}, p90 {:.3f}), "
             "busy/event {:.3f}, span/event {:.3f}: {} {}%\n",
             profiler::format_ns(ag["per_step_mean"]["event_ns"].get<double>()),
             profiler::format_ns(ag["per_step_mean"]["device_sum_ns"].get<double>()),
             ag["sum_over_event"]["median"].get<double>(), ag["sum_over_event"]["p10"].get<double>(),
             ag["sum_over_event"]["p90"].get<double>(), ag["busy_over_event"]["median"].get<double>(),
             ag["span_over_event"]["median"].get<double>(), ag["within_limit"].get<bool>() ? "within" : "NOT within",
             a.agreement_limit_pct);
}

void print_summary(const reports::Results& res, const json& out, const Args& a) {
  fmt::print("profile-check on {} ({} SMs), model {} ({}), HBM {} / H2D {} measured\n", res.device.name,
             res.device.sm_count, res.model.name, res.model.weight_source, profiler::format_gbps(res.device.hbm_gbps),
             profiler::format_gbps(res.device.h2d_gbps));
  for (const reports::Case& c : res.cases)
    fmt::print("case {} (stage {}): {}\n", c.name, c.settings.stage,
               c.status == reports::CaseStatus::ok ? fmt::format("decode {:.1f} tok/s, TTFT {}", c.aggregates.decode_tok_s,
                                                                 profiler::format_ns(c.aggregates.ttft_warm_ns))
                                                   : "failed: " + c.error);
  if (out.contains("overhead")) print_overhead(out["overhead"], a);
  if (out.contains("cupti")) print_cupti(out["cupti"], a);
  if (out.contains("trace"))
    fmt::print("trace {}: {} ({})\n", a.trace, out["trace"]["valid"].get<bool>() ? "valid" : "INVALID",
               out["trace"]["summary"].dump());
}

int run_check(const Args& a) {
  check_args(a);
  const suites::Suite suite = check_suite(a);
  const auto instances =
      suites::expand(suite, app::suite_overrides(a.model, suite.defaults.model.at("*")), suites::resolve_backend);
  json out = json::object();
  out["schema"] = "moebench.profile_check";
  out["schema_version"] = 1;
  out["parameters"] = {{"prompt_tokens", a.prompt_tokens}, {"new_tokens", a.new_tokens}, {"rounds", a.rounds},
                       {"cupti_generations", a.cupti_generations}, {"trace_tokens", a.trace_tokens}};
  CheckPass pass(a, out);
  suites::RunOptions opt;
  opt.tokenizer_path = a.model.tokenizer;
  opt.command_line = suites::own_command_line({"moebench", "profile-check"});
  opt.after_instance = [&pass, &out](const suites::InstanceContext& x, std::vector<reports::Case>& cases) {
    json knobs = json::object();  // the case's settings, typed as in the results file
    for (const auto& [k, v] : cases.at(0).settings.knobs) knobs[k] = v;
    knobs["stage"] = cases.at(0).settings.stage;
    out["settings"] = knobs;
    pass(x, cases);
  };
  const suites::RunOutcome r = suites::run_suite(instances, opt);
  const json h = reports::to_json(r.results);
  for (const char* k : {"run", "host", "device", "model"})
    if (h.contains(k)) out[k] = h.at(k);
  out["results"] = h;  // the case in the results schema (reports/results.h), loadable as a results file
  if (r.failed == 0) pass.save();  // a failed case leaves an earlier file as it was
  print_summary(r.results, out, a);
  if (r.failed > 0) {
    fmt::print(stderr, "profile-check: the case failed: {}\n", r.results.cases.at(0).error);
    return 3;
  }
  if (!a.out.empty()) fmt::print(stderr, "wrote {}\n", a.out);
  return 0;
}

int run(const Args& a) {
  check_paths({{"--validate-trace", a.validate_trace}, {"--tokenizer", a.model.tokenizer}},
              {{"--out", a.out}, {"--trace", a.trace}});
  if (!a.validate_trace.empty()) return validate_trace_file(a.validate_trace);
  return run_check(a);
}

}  // namespace

MOEBENCH_COMMAND(profile_check, "Measure the profiler's overhead and CUPTI/event agreement on the GPU; check traces",
                 [](CLI::App& sub) {
  auto a = std::make_shared<Args>();
  sub.alias("profile-check");
  app::add_model_options(sub, a->model);
  sub.footer(
      "Runs one case through the suite runner (recorded like `run`'s), then on the CUDA model: (1) decode step time\n"
      "with the profiler off / counters / counters + cudaMemGetInfo, interleaved over rounds; (2) CUPTI records (probe\n"
      "of memset + copies), dropped records, GPU time by category and kernel, and CUPTI kernel+copy time vs CUDA-event\n"
      "time per decode step; (3) with --trace, a validated Chrome trace. On the CPU backend (1)-(3) are not measured\n"
      "and the file says why. --validate-trace FILE checks any trace-event JSON file and exits 0 (valid) or 1.\n"
      "Exit status: 0 ok, 3 when the case failed, 1 on an error, 2 on a usage error.");
  sub.add_option("--prompt-tokens", a->prompt_tokens, "prompt length (synthetic ids)");
  sub.add_option("--new-tokens", a->new_tokens, "tokens per generation (1 prefill + N-1 decode steps)");
  sub.add_option("--rounds", a->rounds, "overhead rounds (each runs every arm once)");
  sub.add_option("--cupti-generations", a->cupti_generations, "generations measured with CUPTI on");
  sub.add_option("--out", a->out, "results JSON");
  sub.add_option("--trace", a->trace, "also write a Chrome trace of one more generation (CUPTI on, CPU ranges)");
  sub.add_option("--trace-tokens", a->trace_tokens, "tokens of the traced generation");
  sub.add_option("--validate-trace", a->validate_trace, "only validate this trace-event JSON file");
  return [a] { return run(*a); };
});

}  // namespace cmd_profile_check
