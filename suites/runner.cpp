// runner.cpp: see runner.h.
#include "suites/runner.h"

#include <omp.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "engine/checkpoint_cache.h"
#include "engine/embedded_tokenizer.h"
#include "engine/engine.h"
#include "common/error.h"
#include "engine/expert_host_store.h"
#include "engine/generate.h"
#include "engine/quant.h"
#include "common/log.h"
#include "engine/tokenizer.h"
#include "engine/weight_source.h"
#include "profiler/chrome_trace.h"
#include "common/clock.h"
#include "profiler/counters.h"
#include "profiler/cupti.h"
#include "profiler/stats.h"
#include "suites/calibration.h"
#include "suites/machine.h"
#include "suites/quality.h"
#include "suites/run_header.h"

namespace moebench::suites {

namespace {


using profiler::now_ns;
using reports::Case;
using reports::CaseStatus;
using reports::Repetition;

// Thrown from inside a generation when *stop is set.
struct Interrupted {};

reports::Settings settings_of(const Instance& in, double inject_slowdown) {
  reports::Settings s;
  s.stage = in.settings.stage;
  for (const auto& [k, v] : in.settings.to_list()) s.knobs[k] = knob_json(v);
  s.knobs["batch_size"] = in.batch_size;
  if (in.cpu_threads > 0) s.knobs["cpu_threads"] = in.cpu_threads;
  if (inject_slowdown != 1.0) s.knobs["inject_slowdown"] = inject_slowdown;
  if (in.clock != "wall") s.knobs["clock"] = in.clock;
  return s;
}

}  // namespace

std::vector<reports::GpuRank> gpu_ranks_between(const std::vector<Model::GpuRankStats>& before,
                                                const std::vector<Model::GpuRankStats>& after) {
  std::vector<reports::GpuRank> out;
  for (size_t r = 0; r < after.size(); ++r) {
    const Model::GpuRankStats& a = after[r];
    const Model::GpuRankStats b = r < before.size() ? before[r] : Model::GpuRankStats{};
    reports::GpuRank g;
    g.device = a.device;
    g.arena_used_bytes = a.arena_used_bytes;
    g.arena_peak_bytes = a.arena_peak_bytes;
    g.decode_steps = a.decode_forwards - b.decode_forwards;
    if (g.decode_steps > 0) {
      g.collective_ns_per_step = (a.decode_collective_ns - b.decode_collective_ns) / g.decode_steps;
      g.collective_calls_per_step = (a.decode_collective_calls - b.decode_collective_calls) / g.decode_steps;
    }
    g.experts_held = a.experts_held;
    if (const int64_t steps = a.ep_decode_steps - b.ep_decode_steps; steps > 0) {
      g.experts_run_per_step = static_cast<double>(a.decode_experts_run - b.decode_experts_run) / static_cast<double>(steps);
      g.expert_pairs_per_step = static_cast<double>(a.decode_expert_pairs - b.decode_expert_pairs) / static_cast<double>(steps);
    }
    out.push_back(g);
  }
  return out;
}

void add_expert_counters(reports::ExpertCounters& e, const profiler::ExpertCounters& p) {
  const profiler::ExpertStats& t = p.total();
  e.hits += t.hits;
  e.misses += t.misses;
  e.loads += t.loads;
  e.bytes_moved += t.bytes_moved;
  const auto& steps = p.per_token();  // step 0 is the prefill
  for (size_t i = 1; i < steps.size(); ++i) {
    e.decode_bytes_moved += steps[i].bytes_moved;
    e.decode_host_bytes += steps[i].host_bytes;
    e.decode_host_busy_ns += steps[i].host_ns;
    e.decode_load_time_ns += steps[i].load_ns;
    e.decode_host_layers += steps[i].host_layers;
    e.decode_host_overhead_ns += steps[i].host_overhead_ns;
    e.decode_joint_copy_bytes += steps[i].joint_copy_bytes;
    e.decode_joint_copy_ns += steps[i].joint_copy_ns;
    e.decode_joint_host_bytes += steps[i].joint_host_bytes;
    e.decode_joint_host_ns += steps[i].joint_host_ns;
  }
  e.host_experts += t.host_experts;
  e.host_bytes += t.host_bytes;
  e.host_busy_ns += t.host_ns;
  if (const profiler::HostKernelRate& k = p.host_kernel(); k.best_gbps > e.host_kernel_gbps) {
    e.host_kernel_gbps = k.best_gbps;
    e.host_kernel_median_gbps = k.median_gbps;
    e.host_kernel_worst_gbps = k.worst_gbps;
    e.host_kernel_samples = k.samples;
    e.host_kernel_cold = k.cold;
  }
  if (const profiler::HostKernelRate& k = p.host_kernel();
      k.joint_copy_gbps + k.joint_host_gbps > e.joint_copy_gbps + e.joint_host_gbps) {
    e.joint_copy_gbps = k.joint_copy_gbps;
    e.joint_host_gbps = k.joint_host_gbps;
    e.solo_copy_gbps = k.solo_copy_gbps;
  }
  e.slots = std::max<int64_t>(e.slots, p.slots());
  e.load_time_ns += t.load_ns;
  e.stall_ns += t.stall_ns;
  const int L = p.n_layers(), E = p.n_experts();
  bool any_usage = false;
  for (int64_t u : p.usage_matrix()) any_usage |= u != 0;
  if (t.hits + t.misses + t.loads + t.host_experts == 0 && !any_usage) return;  // nothing counted: leave per-layer arrays empty
  auto grow = [L](std::vector<int64_t>& v) {
    if (v.empty()) v.assign(static_cast<size_t>(L), 0);
  };
  for (auto* v : {&e.hits_per_layer, &e.misses_per_layer, &e.loads_per_layer, &e.bytes_moved_per_layer,
                  &e.load_time_ns_per_layer, &e.stall_ns_per_layer})
    grow(*v);
  if (e.usage.empty()) e.usage.assign(static_cast<size_t>(L), std::vector<int64_t>(static_cast<size_t>(E), 0));
  for (int l = 0; l < L; ++l) {
    const profiler::ExpertStats& s = p.layer(l);
    e.hits_per_layer[l] += s.hits;
    e.misses_per_layer[l] += s.misses;
    e.loads_per_layer[l] += s.loads;
    e.bytes_moved_per_layer[l] += s.bytes_moved;
    e.load_time_ns_per_layer[l] += s.load_ns;
    e.stall_ns_per_layer[l] += s.stall_ns;
    for (int x = 0; x < E; ++x) e.usage[l][x] += p.usage(l, x);
  }
}

namespace {

Repetition repetition_of(const profiler::Profiler& prof) {
  Repetition r;
  for (const profiler::TokenSample& s : prof.tokens.samples) {
    r.latency_ns.push_back(s.latency_ns);
    r.phase.push_back(s.phase == profiler::Phase::prefill ? reports::Phase::prefill : reports::Phase::decode);
  }
  if (!r.latency_ns.empty()) r.ttft_warm_ns = r.latency_ns[0];
  return r;
}

// The hit rate of each layer's expert cache per step, from the profiler's counters
// (each step's hits and misses since the previous one); nothing when `out` is null.
class LayerHitRates {
 public:
  LayerHitRates(const profiler::ExpertCounters& c, std::vector<std::vector<double>>* out) : c_(c), out_(out) {
    if (!out_) return;
    const size_t L = static_cast<size_t>(std::max(0, c.n_layers()));
    out_->assign(L, {});
    seen_.assign(L, {0, 0});
    for (size_t l = 0; l < L; ++l) seen_[l] = {c.layer(static_cast<int>(l)).hits, c.layer(static_cast<int>(l)).misses};
  }
  void step() {
    if (!out_) return;
    for (size_t l = 0; l < seen_.size(); ++l) {
      const profiler::ExpertStats& s = c_.layer(static_cast<int>(l));
      const int64_t h = s.hits - seen_[l].first, m = s.misses - seen_[l].second;
      seen_[l] = {s.hits, s.misses};
      (*out_)[l].push_back(h + m > 0 ? static_cast<double>(h) / static_cast<double>(h + m) : 1.0);
    }
  }

 private:
  const profiler::ExpertCounters& c_;
  std::vector<std::vector<double>>* out_;
  std::vector<std::pair<int64_t, int64_t>> seen_;  // (layer) hits, misses so far
};

// Appends a part to a trace: its CPU ranges' thread indexes mapped onto the trace's names.
void append_trace(profiler::TraceInput& t, profiler::TraceInput part) {
  for (profiler::CpuRange r : part.cpu_ranges) {
    const size_t i = static_cast<size_t>(r.thread);
    const std::string name = i < part.cpu_thread_names.size() ? part.cpu_thread_names[i] : "engine";
    auto it = std::find(t.cpu_thread_names.begin(), t.cpu_thread_names.end(), name);
    if (it == t.cpu_thread_names.end()) it = t.cpu_thread_names.insert(t.cpu_thread_names.end(), name);
    r.thread = static_cast<int32_t>(it - t.cpu_thread_names.begin());
    t.cpu_ranges.push_back(r);
  }
  t.steps.insert(t.steps.end(), part.steps.begin(), part.steps.end());
  t.gpu_events.insert(t.gpu_events.end(), part.gpu_events.begin(), part.gpu_events.end());
  t.counters.insert(t.counters.end(), part.counters.begin(), part.counters.end());
}

// The loaded model and what it was loaded for.
struct Loaded {
  std::string key;
  std::unique_ptr<WeightSource> weights;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // opened on first need
  int64_t load_ns = 0;
  bool cold_pending = false;   // the next generation is the first after the load
  std::string error;           // the load failed: every instance of this key fails with it
};

// One instance while it is measured (over one round or several).
struct Pending {
  Case c;
  bool done = false;                  // failed, or every repetition measured
  int reps_done = 0;
  std::vector<int32_t> prompt;        // (prompt_tokens)
  std::vector<int32_t> first_output;  // (new_tokens) of the first measured repetition
  std::optional<int64_t> cold_ns;     // TTFT cold, when this instance followed a load
  int64_t t0_ns = 0;                  // start of the measured repetitions
  // Multi-GPU models: the per-GPU counters summed over this instance's measure() calls.
  std::vector<Model::GpuRankStats> gpu_before, gpu_after;
};

class Runner {
 public:
  Runner(const RunOptions& opt, const RunEvents& ev) : opt_(opt), ev_(ev) {}

  RunOutcome run(const std::vector<Instance>& instances) {
    RunOutcome out;
    reports::Results& res = out.results;
    const std::string backend = instances.empty() ? "cpu" : instances.front().backend;
    res = run_header(opt_.command_line, backend, opt_.measure_bandwidth);
    device_ = res.device;
    prof_.options.sample_device_memory = backend == "cuda";
    prof_.trace.name_this_thread("engine");
    // CUPTI collects only while a traced generation (or, with trace_every_instance, a traced
    // load) runs, and is attached to the process at the first of them (start_cupti): once
    // attached it slows every later launch even while it collects nothing, so without
    // trace_every_instance that is the run's last generation, after every measured one.
    cuda_run_ = backend == "cuda";
    if (ev_.on_plan) ev_.on_plan(static_cast<int>(instances.size()));
    const int rounds = instances.empty() ? 1 : std::max(1, instances.front().rounds);
    std::vector<Pending> pending(instances.size());
    try {
      for (int round = 0; round < rounds; ++round) {
        const bool last_round = round + 1 == rounds;
        for (size_t i = 0; i < instances.size(); ++i) {
          check_stop();
          const Instance& in = instances[i];
          const int index = static_cast<int>(i);
          Pending& p = pending[i];
          if (ev_.on_instance_start) ev_.on_instance_start(index, in);
          if (round == 0) start(index, in, p, res);
          // Repetitions of this round: an even share, the remainder in the first rounds.
          int n = in.repetitions / rounds + (round < in.repetitions % rounds ? 1 : 0);
          measure(index, in, p, n, res, last_round && i + 1 == instances.size());
          if (!last_round) continue;
          finish(in, p);
          for (Case& c : after_instance(in, p)) {
            if (c.status == CaseStatus::failed) ++out.failed;
            res.cases.push_back(std::move(c));
            if (ev_.on_instance_end) ev_.on_instance_end(index, res.cases.back());
          }
          if (!opt_.progress_path.empty()) reports::save_results(opt_.progress_path, res);
        }
      }
    } catch (const Interrupted&) {
      out.interrupted = true;  // the running instance (and, with rounds, every unfinished one) is dropped
    }
    if (cupti_) cupti_->disable();
    if (!out.interrupted) save(out);
    return out;
  }

 private:
  bool stopped() const { return opt_.stop && opt_.stop->load(std::memory_order_relaxed); }
  void check_stop() const {
    if (stopped()) throw Interrupted{};
  }

  Case base_case(const Instance& in) {
    Case c;
    c.suite = in.suite;
    c.name = in.case_name;
    c.settings = settings_of(in, opt_.inject_slowdown);
    c.routing_source = in.settings.routing;
    c.new_tokens = in.new_tokens;
    c.repetitions = in.repetitions;
    c.warmup = in.warmup_runs;
    c.prompt_tokens = in.spec->prompt.empty() ? in.spec->prompt_tokens : 0;
    return c;
  }

  // The finished instance's case, and what the command's own pass made of it.
  std::vector<Case> after_instance(const Instance& in, Pending& p) {
    std::vector<Case> cases;
    cases.push_back(std::move(p.c));
    if (!opt_.after_instance || cases[0].status != CaseStatus::ok || !loaded_.model) return cases;
    Case measured = cases[0];  // what stays, failed, when the pass throws
    try {
      opt_.after_instance({in, *loaded_.model, *loaded_.weights, prof_, device_}, cases);
    } catch (const Error& e) {
      measured.status = CaseStatus::failed;
      measured.error = e.what();
      measured.bound.reset();
      cases = {std::move(measured)};
    }
    return cases;
  }

  static void fail_case(Pending& p, const std::string& error) {
    p.c.status = CaseStatus::failed;
    p.c.error = error;
    p.done = true;
  }

  // Set-up of an instance: checks, model load, prompt, warm-ups (and so TTFT cold).
  void start(int index, const Instance& in, Pending& p, reports::Results& res) {
    if (in.spec->workload == Workload::calibration) return start_calibration(index, in, p);
    p.c = base_case(in);
    if (in.batch_size != 1)
      return fail_case(p, fmt::format("batch_size {} is not supported: the generation loop runs one sequence at a time",
                                      in.batch_size));
    try {
      if (in.cpu_threads > 0) omp_set_num_threads(in.cpu_threads);
      // Quantised experts or attention projections carry their quality against bf16 (suites/quality.h). Before a
      // fresh load of such a case the previous model is freed and the quality pass runs
      // first: its two models (the quantised one, the bf16 original resident) need the
      // device memory the case's own model would hold. On a GPU that holds even when the
      // case could reuse the loaded model (a second case on the same model): the model is
      // freed, the quality pass runs, and the model is loaded again. bf16 cases skip all of it.
      const bool quantised =
          parse_quant_format(in.settings.expert_dtype, "setting expert_dtype") != QuantFormat::bf16 ||
          parse_quant_format(in.settings.weight_dtype, "setting weight_dtype") != QuantFormat::bf16;
      const bool quality_first =
          quantised && opt_.measure_quality && (in.reload_key() != loaded_.key || in.backend == "cuda");
      std::optional<reports::Quality> quality;
      std::optional<std::vector<int32_t>> early_prompt;  // the case's prompt, tokenized for the quality pass
      if (quality_first) {
        loaded_ = Loaded{};
        WeightSource w = with_files_for_tier(WeightSource::open(in.model, in.seed), in.settings.expert_tier);
        std::unique_ptr<Tokenizer> tok;
        early_prompt = prompt_for(w, tok, in);
        quality = measure_quality(w, in.settings, in.backend, *early_prompt);
      }
      load(index, in, res);
      if (!loaded_.error.empty()) return fail_case(p, loaded_.error);
      // What the settings gave the experts (tier, policy, the device slots the budget left).
      p.c.settings.knobs["experts"] = loaded_.model->experts_describe();
      p.prompt = early_prompt ? std::move(*early_prompt) : prompt_of(in);
      p.c.prompt_tokens = static_cast<int>(p.prompt.size());
      if (quality_first) p.c.quality = quality;
      else if (opt_.measure_quality) p.c.quality = measure_quality(*loaded_.weights, in.settings, in.backend, p.prompt);
      GenerateOptions g = generate_options(in);
      warm_up(index, in, p, g);
      if (cupti_) cupti_->take_events();  // drop warm-up activity
      p.t0_ns = clock_of(in)();
    } catch (const Error& e) {
      fail_case(p, e.what());
    }
  }

  // The untimed warm-up generations. They must not show the cache policy the answer
  // it is then measured on: they run a synthetic prompt of the same length drawn with
  // another seed, on routing stream 1 (a synthetic routing source draws other choices
  // from the same per-layer popularity); the measured repetitions run stream 0.
  void warm_up(int index, const Instance& in, Pending& p, const GenerateOptions& g) {
    if (in.warmup_runs <= 0) return;
    const ModelConfig& cfg = loaded_.weights->config();
    const std::vector<int32_t> prompt =
        synthetic_prompt(static_cast<int>(p.prompt.size()), cfg.vocab_size, cfg.bos_token_id, kWarmupPromptSeed);
    loaded_.model->set_routing_stream(1);
    try {
      for (int w = 0; w < in.warmup_runs; ++w) {
        if (ev_.on_step) ev_.on_step(index, "warm-up", w, in.warmup_runs);
        prof_.reset_repetition();
        note_cold(p, generate(*loaded_.model, prompt, g, token_hook(index, -1, nullptr)));
      }
    } catch (...) {
      loaded_.model->set_routing_stream(0);
      throw;
    }
    loaded_.model->set_routing_stream(0);
  }

  // `n` more measured repetitions of an instance; `last`: the run's last instance, in its last
  // round (the one --trace traces).
  void measure(int index, const Instance& in, Pending& p, int n, reports::Results& res, bool last) {
    if (p.done) return;
    if (in.spec->workload == Workload::calibration) return measure_calibration(index, in, p, n);
    try {
      if (in.cpu_threads > 0) omp_set_num_threads(in.cpu_threads);
      load(index, in, res);  // a no-op unless another instance of this round needed another model
      if (!loaded_.error.empty()) return fail_case(p, loaded_.error);
      GenerateOptions g = generate_options(in);
      const bool tracing = !opt_.trace_path.empty();
      int traced_rep = -1;  // the measured repetition the trace stands for, if this call ran it
      note_gpus(p, true);
      for (int k = 0; k < n; ++k) {
        const int rep = p.reps_done;
        if (ev_.on_step) ev_.on_step(index, "repetition", rep, in.repetitions);
        prof_.reset_repetition();
        LayerHitRates per_layer(prof_.experts, rep == 0 ? &p.c.hit_rate.per_layer : nullptr);
        GenerateResult r = generate(*loaded_.model, p.prompt, g, token_hook(index, rep, &per_layer));
        note_cold(p, r);
        Repetition sample = repetition_of(prof_);
        if (rep == 0 && p.cold_ns) sample.ttft_cold_ns = *p.cold_ns;
        p.c.samples.push_back(std::move(sample));
        add_expert_counters(p.c.experts, prof_.experts);
        note_memory(p.c, rep == 0, p.t0_ns);
        if (rep == 0) {
          p.first_output = r.output;
          p.c.output_token_hash = token_hash(r.output);
          if (p.c.experts.hits + p.c.experts.misses > 0) p.c.hit_rate.overall = prof_.experts.hit_rate_series(false);
          else p.c.hit_rate.per_layer.clear();  // nothing counted
        } else {
          check_repetition_tokens(p.c, rep, p.first_output, r.output);
        }
        // The repetition the trace stands for: the run's last one, or the first of every instance.
        if (tracing && (opt_.trace_every_instance ? rep == 0 : last && rep + 1 == in.repetitions)) traced_rep = rep;
        ++p.reps_done;
      }
      note_gpus(p, false);
      if (traced_rep >= 0) traced_generation(index, p, g, traced_rep);
    } catch (const Error& e) {
      fail_case(p, e.what());
    }
  }

  // CUPTI collecting for a traced generation or load: attached on first use (CUDA runs only);
  // false when it cannot collect, warned once, and then never tried again.
  bool start_cupti() {
    if (!cupti_tried_) {
      cupti_tried_ = true;
      if (cuda_run_) cupti_ = std::make_unique<profiler::CuptiCollector>();
    }
    if (!cupti_) return false;
    if (cupti_->enable()) return true;
    log::warn("--trace: no GPU activity in the trace: {}", cupti_->unavailable_reason());
    cupti_.reset();
    return false;
  }

  // What CUPTI collected since it was enabled; collection stops.
  std::vector<profiler::GpuEvent> stop_cupti() {
    cupti_->flush();
    std::vector<profiler::GpuEvent> events = cupti_->take_events();
    cupti_->disable();
    return events;
  }

  // The trace: one more generation of the case's prompt after its measured repetitions, with
  // the CPU ranges and (CUDA) CUPTI on, counted in no figure but the GPU time by category.
  // Recording slows a step (no CUDA graph while ranges are recorded; CUPTI's kernel records
  // delay launches), so tracing a measured repetition would change what it measures.
  void traced_generation(int index, Pending& p, const GenerateOptions& g, int rep) {
    const bool gpu = start_cupti();
    prof_.reset_repetition();
    prof_.trace.set_enabled(true);
    try {
      generate(*loaded_.model, p.prompt, g, token_hook(index, -1, nullptr));
    } catch (...) {
      prof_.trace.set_enabled(false);
      if (gpu) cupti_->disable();
      throw;
    }
    prof_.trace.set_enabled(false);
    std::vector<profiler::GpuEvent> events;
    if (gpu) {
      events = stop_cupti();
      const auto gt = profiler::aggregate_gpu_time(events);
      for (int c = 0; c < profiler::kGpuCategoryCount; ++c)
        if (gt.ns[c] > 0) p.c.gpu_time_ns[profiler::gpu_category_name(static_cast<profiler::GpuCategory>(c))] += gt.ns[c];
    }
    keep_trace(p.c, rep, std::move(events));
  }

  // The disk tier's bound needs what the checkpoint's disk can give: measured once per
  // run, after the model load (outside every TTFT), with parallel O_DIRECT reads.
  void measure_disk(reports::Results& res) {
    try {
      auto store = ExpertHostStore::disk(*loaded_.weights);
      const double gbps = store->measure_read_gbps();
      log::info("disk read bandwidth of {}: {:.2f} GB/s ({}, 4 readers)", loaded_.weights->describe(), gbps,
                disk_read_mode_name(store->read_mode()));
      device_.disk_read_gbps = res.device.disk_read_gbps = gbps;
    } catch (const Error& e) {
      log::warn("disk read bandwidth not measured ({}): disk-tier cases get no bound", e.what());
    }
  }

  // Multi-GPU models: per-GPU counters around a measure() call; deltas add up across calls.
  void note_gpus(Pending& p, bool start) {
    const auto now = loaded_.model ? loaded_.model->gpu_ranks() : std::vector<Model::GpuRankStats>{};
    if (now.empty()) return;
    std::vector<Model::GpuRankStats>& acc = start ? p.gpu_before : p.gpu_after;
    if (acc.empty()) acc.assign(now.size(), {});
    for (size_t r = 0; r < now.size() && r < acc.size(); ++r) {
      acc[r].device = now[r].device;
      acc[r].arena_used_bytes = now[r].arena_used_bytes;
      acc[r].arena_peak_bytes = now[r].arena_peak_bytes;
      acc[r].decode_forwards += now[r].decode_forwards;
      acc[r].decode_collective_ns += now[r].decode_collective_ns;
      acc[r].decode_collective_calls += now[r].decode_collective_calls;
      acc[r].experts_held = now[r].experts_held;
      acc[r].ep_decode_steps += now[r].ep_decode_steps;
      acc[r].decode_experts_run += now[r].decode_experts_run;
      acc[r].decode_expert_pairs += now[r].decode_expert_pairs;
    }
  }

  void finish(const Instance& in, Pending& p) {
    if (!p.gpu_after.empty()) p.c.gpus = gpu_ranks_between(p.gpu_before, p.gpu_after);
    p.c.aggregates = reports::compute_aggregates(p.c);
    // The bound is a wall-time limit: not for thread-CPU-timed suites.
    if (p.c.status == CaseStatus::ok && in.spec->workload == Workload::model && loaded_.weights)
      p.c.bound = bound_of(in, p.c, p.c.no_bound_reason);
    if (trace_pending_) {
      trace_ready_ = true;
      trace_pending_ = false;
    }
  }

  // The case's bound (suites/bound.h), or nullopt and the reason. A bound limits
  // wall time: none for thread-CPU-timed cases. On the CPU it needs a read stream
  // over the fp32 bytes a decode token reads with the case's threads, measured here
  // once per (size, threads) in this run — only when bandwidths are measured at all.
  std::optional<reports::Bound> bound_of(const Instance& in, const Case& c, std::string& why) {
    if (in.clock != "wall") {
      why = fmt::format("timed by the {} clock, and a bound limits wall time", in.clock);
      return std::nullopt;
    }
    const ModelConfig& cfg = loaded_.weights->config();
    CpuRead cpu;
    if (in.backend == "cpu" && opt_.measure_bandwidth) {
      cpu = decode_cpu_read(cfg, in.cpu_threads);
      auto key = std::make_pair(cpu.bytes, cpu.threads);
      auto it = cpu_read_gbps_.find(key);
      if (it == cpu_read_gbps_.end()) it = cpu_read_gbps_.emplace(key, measure_read_gbps(static_cast<size_t>(cpu.bytes), cpu.threads)).first;
      cpu.gbps = it->second;
    }
    return physical_bound(c, cfg, in.backend, device_, cpu, &why);
  }

  GenerateOptions generate_options(const Instance& in) {
    GenerateOptions g;
    g.max_new_tokens = in.new_tokens;
    g.sampling = SamplingParams{};  // greedy
    g.stop_at_eos = false;          // a fixed token count keeps timings comparable
    g.prof = &prof_;
    g.inject_slowdown = opt_.inject_slowdown;
    g.clock_ns = clock_of(in);
    return g;
  }

  static int64_t (*clock_of(const Instance& in))() {
    return in.clock == "thread_cpu" ? &profiler::thread_cpu_now_ns : &profiler::now_ns;
  }

  // Per token: the per-layer hit rates (when kept), the on_token event, then the stop check.
  std::function<void(int32_t, int)> token_hook(int index, int rep, LayerHitRates* per_layer) const {
    return [this, index, rep, per_layer](int32_t, int i) {
      if (per_layer) per_layer->step();
      if (ev_.on_token && !prof_.tokens.samples.empty())
        ev_.on_token(index, rep, prof_.tokens.samples.back().latency_ns,
                     i == 0 ? reports::Phase::prefill : reports::Phase::decode);
      check_stop();
    };
  }

  // The traced generation: the trace of the run (the last one), or one more part of it.
  void keep_trace(const Case& c, int rep, std::vector<profiler::GpuEvent> events) {
    profiler::TraceInput t = profiler::make_trace_input(prof_, std::move(events));
    if (!opt_.trace_every_instance) {
      trace_ = std::move(t);
      trace_.metadata = {{"suite", c.suite},
                         {"case", c.name},
                         {"stage", c.settings.stage},
                         {"traced", "one more generation after measured repetition " + std::to_string(rep) +
                                        ", not measured"}};
    } else {
      append_trace(trace_, std::move(t));
      trace_.metadata = {
          {"suite", c.suite},
          {"cases", "every case's model load and one more generation after its first measured repetition"}};
    }
    trace_pending_ = true;
  }

  // The first generation after a model load gives the cold TTFT (load included).
  void note_cold(Pending& p, const GenerateResult& r) {
    if (loaded_.cold_pending && !r.token_latency_ns.empty() && p.reps_done == 0 && !p.cold_ns)
      p.cold_ns = loaded_.load_ns + r.token_latency_ns[0];
    loaded_.cold_pending = false;
  }

  void load(int index, const Instance& in, reports::Results& res) {
    std::string key = in.reload_key();
    if (key == loaded_.key) return;
    loaded_ = Loaded{};  // frees the previous model first
    loaded_.key = key;
    if (ev_.on_step) ev_.on_step(index, "load", 0, 1);
    try {
      // A synthetic model on the disk tier is written to the checkpoint cache first
      // (once per machine): not part of the load time.
      WeightSource w = with_files_for_tier(WeightSource::open(in.model, in.seed), in.settings.expert_tier);
      const bool traced = !opt_.trace_path.empty() && opt_.trace_every_instance;
      prof_.trace.set_enabled(traced);
      // trace_every_instance asks for the load's GPU work in the trace: CUPTI is on during
      // the load then (its time, and so the cold TTFT, includes the collection).
      const bool load_gpu = traced && start_cupti();
      std::optional<profiler::ScopedRange> range;
      range.emplace(prof_.trace, profiler::RangeKind::other, -1, -1, "model load");
      int64_t (*clock)() = clock_of(in);
      int64_t t0 = clock();
      loaded_.weights = std::make_unique<WeightSource>(std::move(w));
      const ModelConfig& cfg = loaded_.weights->config();
      prof_.reset_repetition();
      prof_.experts.configure(cfg.num_hidden_layers, cfg.num_local_experts);
      EngineContext ctx;
      ctx.weights = loaded_.weights.get();
      ctx.settings = in.settings;
      ctx.backend = in.backend;
      ctx.prof = &prof_;
      loaded_.model = create_model(ctx);
      // The shared host store is filled once per run: its time is the results' own
      // field, not this model's load (or every stage after the first would look faster).
      const int64_t shared = loaded_.model->shared_setup_ns();
      loaded_.load_ns = clock() - t0 - shared;
      range.reset();
      prof_.trace.set_enabled(false);
      if (traced) {
        std::vector<profiler::GpuEvent> load_events;
        if (load_gpu) load_events = stop_cupti();
        append_trace(trace_, profiler::make_trace_input(prof_, std::move(load_events)));
      }
      res.model.shared_setup_ns = std::max(res.model.shared_setup_ns, shared);
      prof_.model_load_ns = loaded_.load_ns;
      log::info("experts: {}", loaded_.model->experts_describe());
      if (in.backend == "cuda" && in.settings.expert_tier == "disk" && device_.disk_read_gbps <= 0)
        measure_disk(res);
      loaded_.cold_pending = true;
      if (res.model.name.empty()) {
        res.model.name = cfg.name;
        res.model.config = config_to_json(cfg);
        auto specs = model_tensor_specs(cfg);
        res.model.dtype = dtype_name(loaded_.weights->dtype_of(specs.front()));
        res.model.weight_source = loaded_.weights->describe();
      }
    } catch (const Error& e) {
      prof_.trace.set_enabled(false);
      if (cupti_) cupti_->disable();
      loaded_.model.reset();
      loaded_.error = fmt::format("loading {} on {}: {}", in.model, in.backend, e.what());
    }
    if (ev_.on_step) ev_.on_step(index, "load", 1, 1);
  }

  std::vector<int32_t> prompt_of(const Instance& in) { return prompt_for(*loaded_.weights, loaded_.tokenizer, in); }
  // The instance's prompt tokens on weights `w` (the tokenizer is opened into `tok` once).
  std::vector<int32_t> prompt_for(const WeightSource& w, std::unique_ptr<Tokenizer>& tok, const Instance& in) {
    const ModelConfig& cfg = w.config();
    if (in.spec->prompt.empty()) return synthetic_prompt(in.spec->prompt_tokens, cfg.vocab_size, cfg.bos_token_id);
    if (!tok) tok = std::make_unique<Tokenizer>(tokenizer_for_model(w, opt_.tokenizer_path));
    return tok->encode(in.spec->prompt, true);
  }

  void note_memory(Case& c, bool first, int64_t t0_ns) {
    const profiler::MemoryCounters& m = prof_.memory;
    c.memory.arena_peak_bytes = std::max(c.memory.arena_peak_bytes, m.arena_peak_bytes);
    c.memory.device_used_peak_bytes = std::max<int64_t>(c.memory.device_used_peak_bytes, m.device_used_peak_bytes);
    c.memory.host_pinned_bytes = std::max(c.memory.host_pinned_bytes, m.host_pinned_peak_bytes);
    c.memory.host_peak_rss_bytes = std::max(c.memory.host_peak_rss_bytes, process_peak_rss_bytes());
    if (loaded_.model) c.memory.engine_host_bytes = std::max(c.memory.engine_host_bytes, loaded_.model->engine_host_bytes());
    if (first && (m.arena_peak_bytes > 0 || m.device_used_peak_bytes > 0))
      for (const profiler::MemorySample& s : m.timeline)
        c.memory.timeline.push_back({s.t_ns - t0_ns, s.arena_used_bytes, std::max<int64_t>(0, s.device_used_bytes)});
  }

  // ---- the calibration workload (calibration.h): no model, no engine code.

  void start_calibration(int index, const Instance& in, Pending& p) {
    Case& c = p.c;
    c.suite = in.suite;
    c.name = in.case_name;
    c.settings.stage = "none";
    c.settings.knobs = {{"workload", "calibration"}, {"rows", Calibration::kRows}, {"cols", Calibration::kCols}};
    if (in.clock != "wall") c.settings.knobs["clock"] = in.clock;
    c.routing_source = "none";
    c.prompt_tokens = in.spec->prompt_tokens > 0 ? in.spec->prompt_tokens : 1;
    c.new_tokens = in.new_tokens;
    c.repetitions = in.repetitions;
    c.warmup = 1;
    if (!calib_) calib_ = std::make_unique<Calibration>();
    if (ev_.on_step) ev_.on_step(index, "warm-up", 0, 1);
    calibration_pass(c, nullptr, clock_of(in));
  }

  void measure_calibration(int index, const Instance& in, Pending& p, int n) {
    for (int k = 0; k < n; ++k) {
      if (ev_.on_step) ev_.on_step(index, "repetition", p.reps_done, in.repetitions);
      Repetition r;
      calibration_pass(p.c, &r, clock_of(in));
      p.c.samples.push_back(std::move(r));
      ++p.reps_done;
    }
    log::debug("calibration checksum {}", calib_->checksum());
  }

  // One "generation": a prefill step of prompt_tokens products, then new_tokens - 1 decode steps.
  void calibration_pass(const Case& c, Repetition* out, int64_t (*clock)()) {
    int64_t t0 = clock();
    calib_->prefill(c.prompt_tokens);
    int64_t t1 = clock();
    if (out) {
      out->latency_ns.push_back(t1 - t0);
      out->phase.push_back(reports::Phase::prefill);
      out->ttft_warm_ns = t1 - t0;
    }
    for (int t = 1; t < c.new_tokens; ++t) {
      check_stop();
      int64_t s = clock();
      calib_->decode();
      int64_t e = clock();
      if (out) {
        out->latency_ns.push_back(e - s);
        out->phase.push_back(reports::Phase::decode);
      }
    }
  }

  // The complete run's files: the trace, then the results (naming the trace when it
  // was written); none of them when every instance failed. A trace that cannot be
  // written costs the trace only.
  void save(RunOutcome& out) {
    reports::Results& res = out.results;
    if (!res.cases.empty() && out.failed == static_cast<int>(res.cases.size())) return;
    if (trace_ready_ && !opt_.trace_path.empty()) {
      try {
        profiler::write_chrome_trace(opt_.trace_path, trace_);
        res.run.trace_file = opt_.trace_path;
      } catch (const Error& e) {
        out.trace_error = e.what();
      }
    }
    if (opt_.out_path.empty()) return;
    reports::save_results(opt_.out_path, res);
    out.saved = true;
    std::error_code ec;  // a progress file that cannot be removed is only left behind
    if (!opt_.progress_path.empty()) std::filesystem::remove(opt_.progress_path, ec);
  }

  const RunOptions& opt_;
  const RunEvents& ev_;
  profiler::Profiler prof_;
  Loaded loaded_;
  reports::DeviceInfo device_;
  std::unique_ptr<profiler::CuptiCollector> cupti_;
  bool cupti_tried_ = false;  // start_cupti ran
  bool cuda_run_ = false;     // the run's instances are on the CUDA backend
  std::unique_ptr<Calibration> calib_;
  std::map<std::pair<int64_t, int>, double> cpu_read_gbps_;  // (bytes, threads) -> measured read stream
  profiler::TraceInput trace_;
  bool trace_pending_ = false;  // trace_ holds the traced generation of an unfinished instance
  bool trace_ready_ = false;    // ... of the last finished instance: written at the end
};

}  // namespace

std::string token_hash(const std::vector<int32_t>& ids) {
  XXH64_hash_t h = XXH64(ids.data(), ids.size() * sizeof(int32_t), 0);
  return fmt::format("{:016x}", static_cast<unsigned long long>(h));
}

void check_repetition_tokens(reports::Case& c, int rep, const std::vector<int32_t>& first,
                             const std::vector<int32_t>& tokens) {
  if (tokens == first) return;
  c.other_tokens_repetitions.push_back(rep);
  log::warn("{}/{}: repetition {} generated other tokens than repetition 0 (the hash is of repetition 0)", c.suite,
            c.name, rep);
}

std::vector<int32_t> synthetic_prompt(int prompt_tokens, int vocab_size, int32_t bos_id, uint64_t seed) {
  if (prompt_tokens <= 0) fail("prompt_tokens {} must be positive", prompt_tokens);
  if (vocab_size <= 3) fail("vocab_size {} is too small for a synthetic prompt", vocab_size);
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(prompt_tokens));
  ids.push_back(bos_id);
  uint64_t s = seed;
  while (static_cast<int>(ids.size()) < prompt_tokens) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    ids.push_back(static_cast<int32_t>(3 + s % static_cast<uint64_t>(vocab_size - 3)));
  }
  return ids;
}

std::string progress_path_for(const std::string& out_path) {
  const std::string ext = ".json";
  if (out_path.size() > ext.size() && out_path.compare(out_path.size() - ext.size(), ext.size(), ext) == 0)
    return out_path.substr(0, out_path.size() - ext.size()) + ".partial.json";
  return out_path + ".partial.json";
}

RunOutcome run_suite(const std::vector<Instance>& instances, const RunOptions& opt, const RunEvents& ev) {
  Runner r(opt, ev);
  return r.run(instances);
}

}  // namespace moebench::suites
