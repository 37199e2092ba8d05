// cmd_bench.cpp: `moebench bench` — resident decode / prefill throughput against the
// physical limit measured in the same process. Per case (batch x prompt length): a
// warm-up generation, then R measured repetitions of prefill + greedy decode; tokens/s,
// TTFT, the bytes of weights one decode token must read (attention + router + top-k
// experts + norms per layer, final norm, lm_head), the measured HBM bandwidth (the
// best of a read-only stream and a copy kernel), and the % of the bound
// (suites/bound.h, the same computation `run` uses). Results go to --out in the
// reports/results.h schema (rewritten atomically after every case); a Markdown table to
// stdout.
// Batch sizes (--batch 1,2,4,8,16,32): on a backend with a batched forward (CUDA), case
// batch{B}_p{P}_n{N} runs B requests (distinct P-token prompts, N new tokens each) through
// the scheduler (engine/scheduler.h) and the paged-KV forward; its samples are the steps
// (prefill steps, then decode steps of B tokens), decode_tok_s is steps/s per sequence
// and the total (B x steps/s) is in the bound's description. Batch 1 also runs the
// single-sequence path (Model::forward_argmax) as case b1_p{P}_n{N}.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "app/model_options.h"
#include "engine/batch_generate.h"
#include "engine/build_info.h"
#include "engine/engine.h"
#include "common/error.h"
#include "common/log.h"
#include "common/units.h"
#include "common/clock.h"
#include "profiler/cupti.h"
#include "common/atomic_file.h"
#include "reports/markdown.h"
#include "reports/results.h"
#include "suites/machine.h"
#include "suites/runner.h"

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
  std::string kernel_profile;  // per-kernel GPU time of one extra repetition per case (CUPTI)
};

// GPU time per decode step by kernel name (demangled, arguments cut) of the events after t0.
nlohmann::json kernel_table(const std::vector<profiler::GpuEvent>& ev, int64_t t0, int steps) {
  std::map<std::string, std::pair<int64_t, int64_t>> by;  // name -> (ns, count)
  int64_t total = 0;
  for (auto& e : ev) {
    if (e.start_ns < t0 || e.kind == profiler::GpuEventKind::runtime_api || e.kind == profiler::GpuEventKind::driver_api)
      continue;
    std::string n = e.name;
    for (const std::string cut : {"(anonymous namespace)::", "void ", "moebench::cuda::"})
      for (size_t at; (at = n.find(cut)) != std::string::npos;) n.erase(at, cut.size());
    n = n.substr(0, std::min(n.find('('), n.find('<')));
    auto& x = by[n];
    x.first += e.end_ns - e.start_ns;
    x.second += 1;
    total += e.end_ns - e.start_ns;
  }
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> v(by.begin(), by.end());
  std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.second.first > b.second.first; });
  nlohmann::json rows = nlohmann::json::array();
  for (auto& [n, x] : v)
    rows.push_back({{"kernel", n}, {"ns_per_step", static_cast<double>(x.first) / steps},
                    {"launches_per_step", static_cast<double>(x.second) / steps},
                    {"share", total > 0 ? static_cast<double>(x.first) / total : 0.0}});
  return {{"decode_steps", steps}, {"gpu_ns_per_step", static_cast<double>(total) / steps}, {"kernels", rows}};
}

std::string iso_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// A deterministic prompt of n ids (no special tokens 0..2).
std::vector<int32_t> make_prompt(int n, int vocab) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = 3 + static_cast<int32_t>((static_cast<int64_t>(i) * 7919 + 13) % (vocab - 3));
  return p;
}

int run(Args a) {
  check_paths({{"--tokenizer", a.model.tokenizer}}, {{"--out", a.out}, {"--kernel-profile", a.kernel_profile}});
  if (a.layers > 0) {
    if (!a.model.preset.empty()) a.model.preset += fmt::format(":layers={}", a.layers);
    else if (a.model.model.rfind("synthetic:", 0) == 0 || a.model.model.find(':') == std::string::npos)
      a.model.model += fmt::format(":layers={}", a.layers);
    else fail("--layers {} applies to synthetic models only (got --model {})", a.layers, a.model.model);
  }
  for (int b : a.batch)
    if (b < 1) fail("--batch {}: expected batch sizes of at least 1", b);
  WeightSource w = app::open_weights(a.model);
  const ModelConfig& c = w.config();
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = app::resolve_backend(a.model);
  // --stage, --routing, --max-model-len, --gpu-mem-budget and --set, as every command takes them.
  ctx.settings = app::settings_from(a.model);
  app::apply_threads(a.model);
  const int longest = *std::max_element(a.prompt_tokens.begin(), a.prompt_tokens.end()) + a.new_tokens;
  if (longest > ctx.settings.max_model_len) ctx.settings.max_model_len = longest;
  const int max_batch = *std::max_element(a.batch.begin(), a.batch.end());
  const int longest_prompt = *std::max_element(a.prompt_tokens.begin(), a.prompt_tokens.end());
  // One prefill step holds the largest batch's prompts (the scheduler chunks beyond it).
  if (max_batch > 1 && ctx.settings.max_num_batched_tokens < max_batch * longest_prompt)
    ctx.settings.max_num_batched_tokens = max_batch * longest_prompt;

  reports::Results res;
  res.run.tool_version = kVersion;
  res.run.commit = moebench::build_commit();
  res.run.build_type = MOEBENCH_BUILD_TYPE;
  res.run.start_time = iso_now();
  res.run.command_line = {"moebench", "bench"};
  res.host = suites::host_info();
  res.model.name = c.name;
  res.model.config = config_to_json(c);
  res.model.dtype = "bf16";
  res.model.weight_source = w.describe();
  // Measured before the arena takes the memory; on the CPU backend bench gives no bound.
  res.device = suites::device_info(ctx.backend, ctx.backend == "cuda");
  if (ctx.backend == "cuda")
    fmt::print(stderr, "device {}: HBM read stream {:.0f} GB/s, copy kernel {:.0f} GB/s (read + write), pinned H2D {:.1f} GB/s\n",
               res.device.name, res.device.hbm_read_gbps, res.device.hbm_copy_gbps, res.device.h2d_gbps);
  const int64_t t_load0 = profiler::now_ns();
  auto model = create_model(ctx);
  const int64_t load_ns = profiler::now_ns() - t_load0;
  fmt::print(stderr, "model {} loaded in {:.2f} s ({})\n", c.name, load_ns / 1e9, w.describe());

  const int64_t tok_bytes = suites::bytes_per_decode_token(c, 2);
  const double bw = res.device.hbm_gbps;
  std::vector<std::vector<std::string>> rows;
  bool first_case = true;
  auto* bm = dynamic_cast<BatchModel*>(model.get());
  nlohmann::json kprof = nlohmann::json::object();
  struct Plan {
    int B, P;
    bool batched;
  };
  std::vector<Plan> plans;
  for (int B : a.batch)
    for (int P : a.prompt_tokens) {
      if (B == 1) plans.push_back({1, P, false});
      if (bm) plans.push_back({B, P, true});
      else if (B != 1) fail("--batch {}: backend {} has no batched forward (only cuda has)", B, ctx.backend);
    }
  for (const Plan& plan : plans) {
      const int B = plan.B, P = plan.P;
      reports::Case k;
      k.suite = "bench";
      k.name = plan.batched ? fmt::format("batch{}_p{}_n{}", B, P, a.new_tokens) : fmt::format("b{}_p{}_n{}", B, P, a.new_tokens);
      k.settings.stage = ctx.settings.stage;
      for (auto& [key, v] : ctx.settings.to_list()) k.settings.knobs[key] = v;
      k.settings.knobs["batch"] = B;
      k.settings.knobs["backend"] = ctx.backend;
      k.routing_source = ctx.settings.routing;
      k.settings.knobs["forward"] = plan.batched ? "batched (scheduler, paged KV)" : "single sequence";
      k.prompt_tokens = P * B;
      k.new_tokens = a.new_tokens;
      k.repetitions = a.repetitions;
      k.warmup = 1;
      const auto prompt = make_prompt(P, c.vocab_size);
      std::vector<int32_t> out;
      int64_t cold_ns = -1;  // load + the first prefill of the process (the warm-up of the first case)
      // B distinct prompts (shifted windows of one sequence) and the scheduler that runs them.
      auto batch_requests = [&] {
        std::vector<BatchRequest> reqs;
        for (int i = 0; i < B; ++i) {
          auto p = make_prompt(P + 1, c.vocab_size);
          std::rotate(p.begin(), p.begin() + (i % (P + 1)), p.end());
          p.resize(static_cast<size_t>(P));
          reqs.push_back({p, a.new_tokens});
        }
        return reqs;
      };
      auto scheduler_config = [&] {
        SchedulerConfig sc;
        sc.max_num_batched_tokens = std::min(ctx.settings.max_num_batched_tokens, bm->max_batch_tokens());
        sc.max_model_len = ctx.settings.max_model_len;
        sc.max_num_seqs = B;
        sc.block_size = 16;
        sc.num_blocks = B * kv_blocks_for(P + a.new_tokens, sc.block_size);
        return sc;
      };
      try {
        if (plan.batched) {
          const auto reqs = batch_requests();
          const SchedulerConfig sc = scheduler_config();
          for (int rep = -1; rep < a.repetitions; ++rep) {
            const auto g = generate_batch(*bm, sc, reqs);
            reports::Repetition r;
            for (auto& st : g.steps) {
              r.latency_ns.push_back(st.ns);
              r.phase.push_back(st.prefill ? reports::Phase::prefill : reports::Phase::decode);
            }
            r.ttft_warm_ns = g.prefill_ns();
            if (first_case && rep == -1) cold_ns = load_ns + g.prefill_ns();
            out.clear();
            for (auto& o : g.outputs) out.insert(out.end(), o.begin(), o.end());
            if (rep >= 0) k.samples.push_back(std::move(r));
          }
        } else
        for (int rep = -1; rep < a.repetitions; ++rep) {
          model->reset();
          reports::Repetition r;
          out.clear();
          int64_t t0 = profiler::now_ns();
          int32_t tok = model->forward_argmax(prompt.data(), P, 0);
          int64_t t1 = profiler::now_ns();
          r.latency_ns.push_back(t1 - t0);
          r.phase.push_back(reports::Phase::prefill);
          r.ttft_warm_ns = t1 - t0;
          if (first_case && rep == -1) cold_ns = load_ns + (t1 - t0);
          out.push_back(tok);
          for (int i = 1; i < a.new_tokens; ++i) {
            const int64_t s = profiler::now_ns();
            tok = model->forward_argmax(&tok, 1, P + i - 1);
            r.latency_ns.push_back(profiler::now_ns() - s);
            r.phase.push_back(reports::Phase::decode);
            out.push_back(tok);
          }
          if (rep >= 0) k.samples.push_back(std::move(r));
        }
        if (!a.kernel_profile.empty() && a.new_tokens > 1) {  // one more repetition under CUPTI
          profiler::CuptiCollector col;
          if (!col.enable()) {
            kprof[k.name] = {{"error", col.unavailable_reason()}};
          } else {
            int64_t t_dec = 0;
            int steps = 0;
            if (plan.batched) {
              const auto reqs = batch_requests();
              const SchedulerConfig sc = scheduler_config();
              generate_batch(*bm, sc, reqs, 0, false, [&](const Step& st, const std::vector<int32_t>&, const std::vector<float>&) {
                if (st.prefill) t_dec = profiler::now_ns();
                else ++steps;
              });
            } else {
              int32_t tok = model->forward_argmax(prompt.data(), P, 0);
              t_dec = profiler::now_ns();
              for (int i = 1; i < a.new_tokens; ++i, ++steps) tok = model->forward_argmax(&tok, 1, P + i - 1);
            }
            col.flush();
            kprof[k.name] = kernel_table(col.take_events(), t_dec, std::max(steps, 1));
            col.disable();
          }
        }
        if (cold_ns >= 0 && !k.samples.empty()) k.samples[0].ttft_cold_ns = cold_ns;
        k.output_token_hash = suites::token_hash(out);
      } catch (const Error& e) {
        k.status = reports::CaseStatus::failed;
        k.error = e.what();
      }
      first_case = false;
      k.aggregates = reports::compute_aggregates(k);
      const auto& g = k.aggregates;
      const bool decode_case = a.new_tokens > 1;
      if (k.status == reports::CaseStatus::ok)
        k.bound = decode_case ? suites::bench_decode_bound(c, res.device, B, g.decode_tok_s)
                              : suites::bench_prefill_bound(c, res.device, g.ttft_warm_ns);
      rows.push_back({k.name, std::to_string(B), std::to_string(P), std::to_string(a.new_tokens), fmt::format("{:.1f}", g.prefill_tok_s),
                      fmt::format("{:.2f}", g.ttft_warm_ns / 1e6),
                      decode_case ? fmt::format("{:.1f}", g.decode_tok_s) : "-",
                      decode_case ? fmt::format("{:.1f}", B * g.decode_tok_s) : "-",
                      decode_case ? fmt::format("{:.3f}", g.tpot_ns / 1e6) : "-", fmt::format("{:.3f}", tok_bytes / 1e9),
                      fmt::format("{:.0f}", bw),
                      k.bound ? fmt::format("{:.1f} {}", k.bound->value, k.bound->unit) : "-",
                      k.bound ? fmt::format("{:.1f}%", k.bound->percent) : "-",
                      k.status == reports::CaseStatus::ok ? "ok" : "failed: " + k.error});
      res.cases.push_back(std::move(k));
    }
  fmt::print("# moebench bench: {} on {} ({}), dispatch={} combine={} buffers={}\n\n", c.name, res.device.name,
             ctx.backend, ctx.settings.dispatch, ctx.settings.combine, ctx.settings.buffers);
  fmt::print("{}", reports::markdown_table({"case", "batch", "prompt", "new", "prefill tok/s", "TTFT ms",
                                            "decode tok/s per seq", "total tok/s", "TPOT ms", "GB/token", "HBM GB/s",
                                            "bound", "% of bound", "status"},
                                           {false, true, true, true, true, true, true, true, true, true, true, true, true,
                                            false},
                                           rows));
  fmt::print("\nbound: decode cases: weights one token reads / HBM (the best of a read stream and a copy kernel); "
             "batch B: B tokens per step over the least a step reads (every non-expert weight, top_k experts per layer); "
             "prefill cases (new tokens = 1): the time to read that least; % = bound time / TTFT.\n");
  const auto failed = std::count_if(res.cases.begin(), res.cases.end(),
                                    [](const reports::Case& k) { return k.status != reports::CaseStatus::ok; });
  if (!a.kernel_profile.empty() && failed < static_cast<long>(res.cases.size())) {
    kprof["device"] = res.device.name;
    kprof["model"] = c.name;
    kprof["commit"] = res.run.commit;
    write_file_atomic(a.kernel_profile, kprof.dump(1) + "\n");
    for (auto& [name, t] : kprof.items()) {
      if (!t.is_object() || !t.contains("kernels")) continue;
      fmt::print("\n## GPU time per decode step, {} ({:.1f} us of kernels per step)\n\n", name,
                 t["gpu_ns_per_step"].get<double>() / 1e3);
      int shown = 0;
      for (auto& r : t["kernels"]) {
        if (shown++ == 12) break;
        fmt::print("  {:>9.1f} us  {:>5.1f}x  {:>5.1f}%  {}\n", r["ns_per_step"].get<double>() / 1e3,
                   r["launches_per_step"].get<double>(), r["share"].get<double>() * 100, r["kernel"].get<std::string>());
      }
    }
  }
  if (failed == static_cast<long>(res.cases.size())) {
    fmt::print(stderr, "all {} case(s) failed{}\n", failed, a.out.empty() ? "" : ": " + a.out + " not written");
    return 3;
  }
  if (!a.out.empty()) {
    reports::save_results(a.out, res);
    fmt::print(stderr, "wrote {}\n", a.out);
  }
  if (failed > 0) {
    fmt::print(stderr, "{} of {} case(s) failed\n", failed, res.cases.size());
    return 3;
  }
  return 0;
}
}  // namespace

MOEBENCH_COMMAND(bench, "Resident decode/prefill throughput against the measured HBM bound", [](CLI::App& sub) {
  auto a = std::make_shared<Args>();
  moebench::app::add_model_options(sub, a->model);
  sub.add_option("--layers", a->layers, "Override the layer count of a synthetic model")->check(CLI::PositiveNumber);
  sub.add_option("--batch", a->batch, "Batch sizes, comma-separated (e.g. 1,2,4,8,16,32): B requests decoded together")->delimiter(',');
  sub.add_option("--prompt-tokens", a->prompt_tokens, "Prompt lengths, comma-separated (one case each)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  sub.add_option("--new-tokens", a->new_tokens, "Tokens to generate per case (1 = a prefill / TTFT case)")
      ->check(CLI::PositiveNumber);
  sub.add_option("--repetitions", a->repetitions, "Measured repetitions per case (after one warm-up)")
      ->check(CLI::PositiveNumber);
  sub.add_option("--kernel-profile", a->kernel_profile,
                 "JSON of GPU time per decode step by kernel (one extra CUPTI-traced repetition per case)");
  sub.footer("Output paths are checked before the model loads. The results are written once every case ran, and not\n"
             "when every case failed. Exit status: 0 ok, 3 when some or all cases failed, 1 on an error, 2 on a usage error.");
  sub.add_option("--out", a->out, "Results JSON (reports/results.h schema), written when the cases have run");
  return [a] { return run(*a); };
});
