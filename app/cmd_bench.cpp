// cmd_bench.cpp: `moebench bench` — resident decode / prefill throughput against the
// physical limit measured in the same process. Its flags become a suite (one case per
// prompt length, suites/suite.h) that the suite runner runs (suites/runner.h), so a
// bench case is measured, recorded and bounded like a `run` case: a warm-up
// generation (recorded as the warmup knob; --set warmup=false drops it), then R
// measured repetitions of prefill + greedy decode with the synthetic prompt; tokens/s,
// TTFT, and the bound of suites/bound.h (on CUDA: the weight bytes one decode token
// reads / the measured HBM bandwidth; on the CPU: a read stream over the fp32 bytes a
// token reads). Results go to --out in the reports/results.h schema, written when
// every case ran; the summary to stdout (-o md: bench's table; csv|json|jsonl|html:
// reports/formats.h).
// Batch sizes (--batch 1,2,4,8,16,32): on either backend (both have a batched forward), case
// batch{B}_p{P}_n{N} runs B requests (distinct P-token prompts, N new tokens each) through
// the scheduler (engine/scheduler.h) and the paged-KV forward on the model the runner
// loaded; its samples are the steps (prefill steps, then decode steps of B tokens),
// decode_tok_s is steps/s per sequence and the total (B x steps/s) is in the bound's
// description. Batch 1 runs the single-sequence path as case b1_p{P}_n{N}.

#include <algorithm>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/command.h"
#include "app/model_options.h"
#include "engine/batch_generate.h"
#include "engine/batch_model.h"
#include "common/error.h"
#include "engine/generate.h"
#include "common/clock.h"
#include "common/log.h"
#include "profiler/counters.h"
#include "profiler/cupti.h"
#include "common/atomic_file.h"
#include "reports/formats.h"
#include "reports/markdown.h"
#include "reports/results.h"
#include "suites/bound.h"
#include "suites/kernel_table.h"
#include "suites/machine.h"
#include "suites/run_header.h"
#include "suites/runner.h"
#include "suites/suite.h"

namespace cmd_bench {

namespace {
using namespace moebench;

struct Args {
  app::ModelOptions model;
  int layers = 0;
  std::vector<int> batch{1};
  std::vector<int> prompt_tokens{50};
  int new_tokens = 128;
  int repetitions = 3;
  std::string out;
  std::string format = "md";
  std::string kernel_profile;  // per-kernel GPU time of one extra repetition per case (CUPTI)
  bool no_quality = false;     // quantised cases skip the quality pass
};

constexpr int kExitCasesFailed = 3;

// The model --model / --preset / --layers name.
std::string model_spec(const Args& a) {
  std::string m = a.model.preset.empty() ? a.model.model : "synthetic:" + a.model.preset;
  if (m.empty()) fail("no model given: pass --model DIR|synthetic:PRESET or --preset PRESET");
  if (a.layers <= 0) return m;
  if (!a.model.preset.empty() || m.rfind("synthetic:", 0) == 0 || m.find(':') == std::string::npos)
    return m + fmt::format(":layers={}", a.layers);
  fail("--layers {} applies to synthetic models only (got --model {})", a.layers, a.model.model);
}

// The settings of every case: the model options' (stage, --routing, --max-model-len,
// --gpu-mem-budget, --set) with a warm-up unless --set says otherwise, room for the
// longest sequence, and a prefill step that holds the largest batch's prompts.
EngineSettings bench_settings(const Args& a) {
  app::ModelOptions o = a.model;
  o.sets.insert(o.sets.begin(), "warmup=true");
  EngineSettings s = app::settings_from(o);
  const int longest_prompt = *std::max_element(a.prompt_tokens.begin(), a.prompt_tokens.end());
  const int max_batch = *std::max_element(a.batch.begin(), a.batch.end());
  s.max_model_len = std::max(s.max_model_len, longest_prompt + a.new_tokens);
  if (max_batch > 1) s.max_num_batched_tokens = std::max(s.max_num_batched_tokens, max_batch * longest_prompt);
  return s;
}

// The suite the flags describe: one single-sequence case per prompt length.
suites::Suite bench_suite(const Args& a, const EngineSettings& s) {
  suites::Suite suite;
  suite.name = "bench";
  suite.source = "bench";
  suite.defaults.model["*"] = model_spec(a);
  suite.defaults.backend = a.model.backend;
  suite.defaults.seed = a.model.seed;
  suite.defaults.warmup_runs = 1;
  suite.defaults.repetitions = a.repetitions;
  suite.defaults.new_tokens = a.new_tokens;
  suite.defaults.cpu_threads = a.model.threads;
  suite.defaults.stage = a.model.stage;
  for (const auto& [k, v] : s.to_list())
    if (k != "stage") suite.defaults.settings.emplace_back(k, v);
  for (int p : a.prompt_tokens) {
    suites::CaseSpec c;
    c.name = fmt::format("b1_p{}_n{}", p, a.new_tokens);
    c.prompt_tokens = p;
    suite.cases.push_back(c);
  }
  return suite;
}

// What bench adds to each single-sequence case the runner measured: the prefill
// bound (new tokens 1), the batched cases and the kernel profile.
class BenchPass {
 public:
  explicit BenchPass(const Args& a) : a_(a) {}
  nlohmann::json kernel_profile = nlohmann::json::object();

  void operator()(const suites::InstanceContext& x, std::vector<reports::Case>& cases) {
    reports::Case& single = cases.at(0);
    const int P = x.instance.spec->prompt_tokens;
    single.settings.knobs["backend"] = x.instance.backend;
    single.settings.knobs["forward"] = "single sequence";
    if (a_.new_tokens == 1 && !single.bound) {
      single.bound = suites::bench_prefill_bound(x.weights.config(), x.device, single.settings, single.aggregates.ttft_warm_ns);
      if (single.bound) single.no_bound_reason.clear();
    }
    const bool keep_single = std::find(a_.batch.begin(), a_.batch.end(), 1) != a_.batch.end();
    auto* bm = dynamic_cast<BatchModel*>(&x.model);  // every backend's model is one
    if (!bm) fail("bench: the {} model has no batched forward", x.instance.backend);
    std::vector<reports::Case> batched;
    for (int B : a_.batch) batched.push_back(batched_case(x, *bm, B, P, single));
    // The kernel profiles after every case of the instance is measured: CUPTI, once attached,
    // slows every later launch of the process, collecting or not.
    if (want_profile()) {
      if (keep_single) kernel_profile[single.name] = profile_single(x, P);
      for (size_t i = 0; i < batched.size(); ++i) {
        reports::Case& k = batched[i];
        if (k.status != reports::CaseStatus::ok) continue;
        try {
          kernel_profile[k.name] = profile_batched(x, *bm, a_.batch[i], P);
        } catch (const Error& e) {
          kernel_profile[k.name] = {{"error", e.what()}};
        }
      }
    }
    if (!keep_single) cases.clear();
    for (auto& c : batched) cases.push_back(std::move(c));
  }

 private:
  bool want_profile() const { return !a_.kernel_profile.empty() && a_.new_tokens > 1; }

  std::vector<BatchRequest> requests(const ModelConfig& cfg, int B, int P) const {
    std::vector<BatchRequest> reqs;  // B distinct prompts of P ids
    for (int i = 0; i < B; ++i)
      reqs.push_back({suites::synthetic_prompt(P, cfg.vocab_size, cfg.bos_token_id, suites::kDefaultPromptSeed + i),
                      a_.new_tokens});
    return reqs;
  }

  SchedulerConfig scheduler(const suites::InstanceContext& x, const BatchModel& bm, int B, int P) const {
    SchedulerConfig sc;
    sc.max_num_batched_tokens = std::min(x.instance.settings.max_num_batched_tokens, bm.max_batch_tokens());
    sc.max_model_len = x.instance.settings.max_model_len;
    sc.max_num_seqs = B;
    sc.block_size = 16;
    sc.num_blocks = B * kv_blocks_for(P + a_.new_tokens, sc.block_size);
    return sc;
  }

  static reports::Repetition repetition_of(const BatchGenerateResult& g) {
    reports::Repetition r;
    for (const auto& st : g.steps) {
      r.latency_ns.push_back(st.ns);
      r.phase.push_back(st.prefill ? reports::Phase::prefill : reports::Phase::decode);
    }
    r.ttft_warm_ns = g.prefill_ns();
    return r;
  }

  reports::Case batched_case(const suites::InstanceContext& x, BatchModel& bm, int B, int P,
                             const reports::Case& single) {
    reports::Case k;
    k.suite = single.suite;
    k.name = fmt::format("batch{}_p{}_n{}", B, P, a_.new_tokens);
    k.settings = single.settings;
    k.settings.knobs["batch_size"] = B;
    k.settings.knobs["forward"] = "batched (scheduler, paged KV)";
    k.routing_source = single.routing_source;
    k.prompt_tokens = P * B;
    k.new_tokens = a_.new_tokens;
    k.repetitions = a_.repetitions;
    k.warmup = 1;
    const ModelConfig& cfg = x.weights.config();
    try {
      const auto reqs = requests(cfg, B, P);
      const SchedulerConfig sc = scheduler(x, bm, B, P);
      std::vector<int32_t> out;
      std::vector<Model::GpuRankStats> gpus_before;
      for (int rep = -1; rep < a_.repetitions; ++rep) {  // -1: the warm-up
        const auto g = generate_batch(bm, sc, reqs);
        note_memory(x, k);
        if (rep < 0) {
          gpus_before = x.model.gpu_ranks();
          continue;
        }
        k.samples.push_back(repetition_of(g));
        std::vector<int32_t> rep_out;
        for (const auto& o : g.outputs) rep_out.insert(rep_out.end(), o.begin(), o.end());
        if (rep == 0) out = std::move(rep_out);
        else suites::check_repetition_tokens(k, rep, out, rep_out);
      }
      k.output_token_hash = suites::token_hash(out);
      k.gpus = suites::gpu_ranks_between(gpus_before, x.model.gpu_ranks());
      if (B > 1 && k.gpus.empty() && a_.new_tokens > 1) count_step_experts(x.model, bm, sc, reqs, out, k);
    } catch (const Error& e) {
      k.status = reports::CaseStatus::failed;
      k.error = e.what();
    }
    k.aggregates = reports::compute_aggregates(k);
    if (k.status == reports::CaseStatus::ok) k.bound = batched_bound(x, single, k, B);
    return k;
  }

  // The bound of a batched case (suites/bound.h): over HBM on a GPU; on the CPU over the
  // read stream the runner measured for the single-sequence case of the same instance.
  std::optional<reports::Bound> batched_bound(const suites::InstanceContext& x, const reports::Case& single,
                                              reports::Case& k, int B) const {
    const ModelConfig& cfg = x.weights.config();
    const bool on_cpu = x.instance.backend == "cpu";
    suites::CpuRead cpu;
    if (on_cpu && single.bound && single.bound->bandwidth_gbps.count("cpu_read"))
      cpu = suites::decode_cpu_read(cfg, x.instance.cpu_threads, single.bound->bandwidth_gbps.at("cpu_read"));
    return suites::bench_case_bound(cfg, x.device, on_cpu, k, B, cpu, &k.no_bound_reason);
  }

  // The device memory after a generation of the batch: the arena's high-water mark (the
  // model notes it after every batched forward) and the device's used bytes then.
  static void note_memory(const suites::InstanceContext& x, reports::Case& k) {
    k.memory.arena_peak_bytes = std::max(k.memory.arena_peak_bytes, x.prof.memory.arena_peak_bytes);
    if (x.instance.backend != "cuda") return;
    if (const std::optional<int64_t> used = profiler::query_device_used_bytes())
      k.memory.device_used_peak_bytes = std::max(k.memory.device_used_peak_bytes, *used);
  }

  // One more generation of the same batch, not timed, with the model counting the distinct
  // experts each decode step ran (Model::set_step_expert_count): the experts the bound of a
  // batched step reads (suites/bound.h). Kept only when that generation gave the measured
  // tokens, i.e. took the same routing; otherwise the bound keeps top_k experts a layer.
  static void count_step_experts(Model& model, BatchModel& bm, const SchedulerConfig& sc,
                                 const std::vector<BatchRequest>& reqs, const std::vector<int32_t>& measured,
                                 reports::Case& k) {
    if (!model.set_step_expert_count(true)) return;
    struct CountOff {  // counting ends with this function, however it leaves
      Model& m;
      ~CountOff() { m.set_step_expert_count(false); }
    } off{model};
    std::vector<int32_t> got;
    Model::StepExperts n;
    try {
      const auto g = generate_batch(bm, sc, reqs);
      n = model.step_expert_count();
      for (const auto& o : g.outputs) got.insert(got.end(), o.begin(), o.end());
    } catch (const Error& e) {  // the measured repetitions stand; only the count is missing
      log::warn("{}: counting the experts of each step failed ({}); the bound keeps top_k experts a layer", k.name,
                e.what());
      return;
    }
    if (got != measured) {
      log::warn("{}: the generation that counted the experts of each step gave other tokens than the measured "
                "ones; the bound keeps top_k experts a layer",
                k.name);
      return;
    }
    if (n.steps > 0) k.experts.decode_experts_per_step = static_cast<double>(n.experts) / static_cast<double>(n.steps);
  }

  // One more generation under CUPTI: GPU time per decode step by kernel.
  template <typename Generate>
  static nlohmann::json profile(Generate&& generate) {
    profiler::CuptiCollector col;
    if (!col.enable()) return {{"error", col.unavailable_reason()}};
    int64_t t_decode = 0;
    const int steps = generate(t_decode);
    col.flush();
    nlohmann::json t = suites::kernel_table(col.take_events(), t_decode, std::numeric_limits<int64_t>::max(),
                                            std::max(steps, 1));
    col.disable();
    return t;
  }

  nlohmann::json profile_single(const suites::InstanceContext& x, int P) const {
    const ModelConfig& cfg = x.weights.config();
    const auto prompt = suites::synthetic_prompt(P, cfg.vocab_size, cfg.bos_token_id);
    return profile([&](int64_t& t_decode) {
      x.model.reset();
      int32_t tok = x.model.forward_argmax(prompt.data(), P, 0);
      t_decode = profiler::now_ns();
      for (int i = 1; i < a_.new_tokens; ++i) tok = x.model.forward_argmax(&tok, 1, P + i - 1);
      return a_.new_tokens - 1;
    });
  }

  nlohmann::json profile_batched(const suites::InstanceContext& x, BatchModel& bm, int B, int P) const {
    const auto reqs = requests(x.weights.config(), B, P);
    const SchedulerConfig sc = scheduler(x, bm, B, P);
    return profile([&](int64_t& t_decode) {
      int steps = 0;
      generate_batch(bm, sc, reqs, 0, false, [&](const Step& st, const std::vector<int32_t>&, const std::vector<float>&) {
        if (st.prefill) t_decode = profiler::now_ns();
        else ++steps;
      });
      return steps;
    });
  }

  const Args& a_;
};

std::string knob_text(const reports::Case& k, const std::string& key) {
  auto it = k.settings.knobs.find(key);
  if (it == k.settings.knobs.end()) return "-";
  return it->second.is_string() ? it->second.get<std::string>() : it->second.dump();
}

// The experts a decode step of the case ran, summed over layers: the count bench took on
// the device for a batched case, else one token's top_k a layer ("-": not a decode case).
std::string step_experts_text(const reports::Case& k, int batch, const ModelConfig* cfg) {
  if (k.new_tokens <= 1) return "-";
  if (k.experts.decode_experts_per_step > 0) return fmt::format("{:.1f} counted", k.experts.decode_experts_per_step);
  if (!cfg) return "-";
  return fmt::format("{}{}", cfg->num_hidden_layers * cfg->num_experts_per_tok, batch > 1 ? " (top_k)" : "");
}

// The rate a case's bound divides by: the CPU read stream on the CPU backend, else HBM.
double read_gbps(const reports::Case& k, const reports::Results& res) {
  if (k.bound)
    if (auto it = k.bound->bandwidth_gbps.find("cpu_read"); it != k.bound->bandwidth_gbps.end()) return it->second;
  return res.device.hbm_gbps;
}

std::vector<std::string> table_row(const reports::Case& k, const reports::Results& res, const ModelConfig* cfg) {
  const auto& g = k.aggregates;
  const int64_t tok_bytes = cfg ? suites::bench_token_bytes(*cfg, k.settings, knob_text(k, "backend") == "cpu") : 0;
  auto it = k.settings.knobs.find("batch_size");
  const int B = it != k.settings.knobs.end() && it->second.is_number_integer() ? it->second.get<int>() : 1;
  const bool decode = k.new_tokens > 1;
  return {k.name, std::to_string(B), std::to_string(k.prompt_tokens / std::max(B, 1)), std::to_string(k.new_tokens),
          fmt::format("{:.1f}", g.prefill_tok_s), fmt::format("{:.2f}", g.ttft_warm_ns / 1e6),
          decode ? fmt::format("{:.1f}", g.decode_tok_s) : "-", decode ? fmt::format("{:.1f}", B * g.decode_tok_s) : "-",
          decode ? fmt::format("{:.3f}", g.tpot_ns / 1e6) : "-", step_experts_text(k, B, cfg),
          cfg ? fmt::format("{:.4g}", static_cast<double>(tok_bytes) / 1e9) : "-",
          fmt::format("{:.0f}", read_gbps(k, res)), k.bound ? fmt::format("{:.1f} {}", k.bound->value, k.bound->unit) : "-",
          k.bound ? fmt::format("{:.1f}%", k.bound->percent) : "-",
          k.status == reports::CaseStatus::ok ? "ok" : "failed: " + k.error};
}

// bench's own Markdown table (-o md).
void print_table(const reports::Results& res, const EngineSettings& s) {
  std::optional<ModelConfig> cfg;
  if (!res.model.config.empty()) cfg = config_from_json(res.model.config, "bench");
  std::vector<std::vector<std::string>> rows;
  for (const reports::Case& k : res.cases) rows.push_back(table_row(k, res, cfg ? &*cfg : nullptr));
  fmt::print("# moebench bench: {} on {} ({}), stage {}, routing {}, dispatch={} combine={} buffers={}\n\n",
             res.model.name, res.device.name, res.cases.empty() ? "-" : knob_text(res.cases[0], "backend"), s.stage,
             s.routing, s.dispatch, s.combine, s.buffers);
  fmt::print("{}", reports::markdown_table({"case", "batch", "prompt", "new", "prefill tok/s", "TTFT ms",
                                            "decode tok/s per seq", "total tok/s", "TPOT ms", "experts/step",
                                            "GB/token", "read GB/s", "bound", "% of bound", "status"},
                                           {false, true, true, true, true, true, true, true, true, true, true, true,
                                            true, true, false},
                                           rows));
  fmt::print("\nbound: single-sequence cases: suites/bound.h (CUDA: weights one token reads / HBM; CPU: a read "
             "stream over the fp32 weights a token reads); batch B: B tokens per step over the least a step reads "
             "(every non-expert weight and the distinct experts each step ran, counted by the model in one more "
             "generation of the batch, else top_k experts per layer; over two or more GPUs: the busiest GPU's share, "
             "with the experts each step ran, plus the measured all-reduce time); prefill cases (new tokens = 1): the time to read "
             "that least; % = bound time / achieved time. experts/step: the (layer, expert)s a decode step ran, summed "
             "over layers: counted, or one token's top_k a layer. GB/token: the weights one decode token reads as the "
             "bound counts them (CUDA: bf16, quantised weights in their own bytes; CPU: fp32); read GB/s: the rate "
             "the bound divides by (HBM, or the CPU read stream).\n");
}

void print_kernel_profile(const nlohmann::json& kprof) {
  for (auto& [name, t] : kprof.items()) {
    if (!t.is_object() || !t.contains("kernels")) continue;
    fmt::print("\n## GPU time per decode step, {} ({:.1f} us of kernels per step; {:.1f} us from first start to last "
               "end, {:.1f} us of it idle)\n\n",
               name, t["gpu_ns_per_step"].get<double>() / 1e3, t.value("span_ns_per_step", 0.0) / 1e3,
               t.value("idle_ns_per_step", 0.0) / 1e3);
    fmt::print("  {:>12}  {:>12}  {:>6}  {:>6}  kernel\n", "duration", "exposed", "count", "share");
    int shown = 0;
    for (auto& r : t["kernels"]) {
      if (shown++ == 12) break;
      fmt::print("  {:>9.1f} us  {:>9.1f} us  {:>5.1f}x  {:>5.1f}%  {}\n", r["ns_per_step"].get<double>() / 1e3,
                 r.value("exposed_ns_per_step", 0.0) / 1e3, r["launches_per_step"].get<double>(),
                 r["share"].get<double>() * 100, r["kernel"].get<std::string>());
    }
    fmt::print("\n  (exposed: the part of a kernel's time past the end of every kernel started before it: what it adds "
               "to the step)\n");
  }
}

int run(const Args& a) {
  reports::check_format(a.format);  // before any work
  check_paths({{"--tokenizer", a.model.tokenizer}}, {{"--out", a.out}, {"--kernel-profile", a.kernel_profile}});
  for (int b : a.batch)
    if (b < 1) fail("--batch {}: expected batch sizes of at least 1", b);
  const EngineSettings settings = bench_settings(a);
  const suites::Suite suite = bench_suite(a, settings);
  const auto instances = suites::expand(suite, app::suite_overrides(a.model, model_spec(a)), suites::resolve_backend);
  if (!a.kernel_profile.empty() && instances.size() > 1)
    log::warn("--kernel-profile with {} configurations: CUPTI stays attached after the first one's profile, so the "
              "figures of the others are measured slower; profile one configuration per run to compare figures",
              instances.size());
  BenchPass pass(a);
  suites::RunOptions opt;
  opt.out_path = a.out;
  opt.tokenizer_path = a.model.tokenizer;
  opt.measure_quality = !a.no_quality;
  opt.command_line = suites::own_command_line({"moebench", "bench"});
  opt.after_instance = [&pass](const suites::InstanceContext& x, std::vector<reports::Case>& cases) { pass(x, cases); };
  suites::RunOutcome out = suites::run_suite(instances, opt);
  const reports::Results& res = out.results;

  if (a.format == "md") print_table(res, settings);
  else std::fputs(reports::render_as(res, a.format).c_str(), stdout);
  const int n = static_cast<int>(res.cases.size());
  if (!a.kernel_profile.empty() && out.failed < n) {
    pass.kernel_profile["device"] = res.device.name;
    pass.kernel_profile["model"] = res.model.name;
    pass.kernel_profile["commit"] = res.run.commit;
    write_file_atomic(a.kernel_profile, pass.kernel_profile.dump(1) + "\n");
    if (a.format == "md") print_kernel_profile(pass.kernel_profile);
  }
  if (out.failed == n) {
    fmt::print(stderr, "all {} case(s) failed{}\n", n, a.out.empty() ? "" : ": " + a.out + " not written");
    return kExitCasesFailed;
  }
  if (out.saved) fmt::print(stderr, "wrote {}\n", a.out);
  if (out.failed > 0) {
    fmt::print(stderr, "{} of {} case(s) failed\n", out.failed, n);
    return kExitCasesFailed;
  }
  return 0;
}
}  // namespace

MOEBENCH_COMMAND(bench, "Resident decode/prefill throughput against the measured HBM bound", [](CLI::App& sub) {
  auto a = std::make_shared<Args>();
  moebench::app::add_model_options(sub, a->model);
  sub.add_option("--layers", a->layers, "Override the layer count of a synthetic model")->check(moebench::app::kPositiveNumber);
  sub.add_option("--batch", a->batch, "Batch sizes, comma-separated (e.g. 1,2,4,8,16,32): B requests decoded together")->delimiter(',');
  sub.add_option("--prompt-tokens", a->prompt_tokens, "Prompt lengths, comma-separated (one case each)")
      ->delimiter(',')
      ->check(moebench::app::kPositiveNumber);
  sub.add_option("--new-tokens", a->new_tokens, "Tokens to generate per case (1 = a prefill / TTFT case)")
      ->check(moebench::app::kPositiveNumber);
  sub.add_option("--repetitions", a->repetitions, "Measured repetitions per case (after one warm-up)")
      ->check(moebench::app::kPositiveNumber);
  sub.add_option("--kernel-profile", a->kernel_profile,
                 "JSON of GPU time per decode step by kernel (one extra CUPTI-traced repetition per case, after "
                 "the configuration's measured ones)");
  sub.add_option("-o,--format", a->format, "what is printed on stdout: md|csv|json|jsonl|html (default md)");
  sub.footer("Output paths are checked before the model loads. The results are written once every case ran, and not\n"
             "when every case failed. Exit status: 0 ok, 3 when some or all cases failed, 1 on an error, 2 on a usage error.");
  sub.add_option("--out", a->out, "Results JSON (reports/results.h schema), written when the cases have run");
  sub.add_flag("--no-quality", a->no_quality,
               "Skip the quality pass of quantised cases (no top-1 / KL against bf16; each such case loads one model, not three)");
  return [a] { return run(*a); };
});

}  // namespace cmd_bench
