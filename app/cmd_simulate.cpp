// cmd_simulate.cpp: `moebench simulate` (trace-driven expert-cache simulation:
// hit rate, bytes moved, projected decode tokens/s for every policy x capacity),
// `moebench simulate-parallel` (the multi-GPU bound of a routing trace: tensor parallel
// and expert parallel per placement, per-GPU imbalance and predicted tokens/s) and
// `moebench make-trace` (write a synthetic routing trace).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/command.h"
#include "common/error.h"
#include "common/log.h"
#include "engine/parallel_plan.h"
#include "engine/quant.h"
#include "engine/device_plan.h"
#include "engine/weight_source.h"
#include "model/config.h"
#include "model/settings.h"
#include "common/atomic_file.h"
#include "variants/cache_policy.h"
#include "variants/hybrid_split.h"
#include "variants/placement.h"
#include "variants/routing.h"
#include "variants/routing_trace.h"
#include "variants/simulator.h"

namespace moebench::app {

namespace {

struct ShapeArgs {
  std::string routing;
  std::string model;  // --model: the shape's (and, in simulate, the expert bytes') model; "" = none given
  int layers = 32;
  int experts = 8;
  int top_k = 2;
  int tokens = 1000;
  int tokens_per_step = 1;
  uint64_t seed = 1;
  ModelConfig model_config;  // --model's config, read by resolve_shape
};

// The shape flags, to tell a flag given from its default.
struct ShapeOptions {
  CLI::Option *layers, *experts, *top_k;
};

std::vector<std::string> synthetic_routings() { return {"uniform", "mixtral-locality", "fine-grained-locality"}; }

ShapeOptions add_shape_options(CLI::App& sub, ShapeArgs& a, CLI::Option* exclude, const char* model_help) {
  auto* r = sub.add_option("--routing", a.routing, "synthetic routing source: uniform | mixtral-locality | fine-grained-locality")
                ->check(CLI::IsMember(synthetic_routings()));
  if (exclude) r->excludes(exclude);
  sub.add_option("--model", a.model, model_help);
  ShapeOptions o;
  o.layers = sub.add_option("--layers", a.layers, "layers (default 32, or --model's)")->check(moebench::app::kPositiveNumber);
  o.experts = sub.add_option("--experts", a.experts, "experts per layer (default 8, or --model's)")
                  ->check(moebench::app::kPositiveNumber);
  o.top_k = sub.add_option("--top-k", a.top_k, "experts per token (default 2, or --model's)")->check(moebench::app::kPositiveNumber);
  sub.add_option("--tokens", a.tokens, "decode tokens to generate (default 1000)")->check(moebench::app::kPositiveNumber);
  sub.add_option("--seed", a.seed, "seed of the synthetic routing and predictions (default 1)");
  return o;
}

// With --model, the synthetic trace takes the model's shape where no flag gives one (a
// flag that gives another is refused when the trace is checked against the model). A
// model that cannot be read is a usage error naming --model (exit 2).
void resolve_shape(ShapeArgs& a, const ShapeOptions& o) {
  if (a.model.empty()) return;
  try {
    a.model_config = read_model_config(a.model);
  } catch (const Error& e) {
    throw CLI::ValidationError("--model", e.what());
  }
  const ModelConfig& c = a.model_config;
  if (o.layers->count() == 0) a.layers = c.num_hidden_layers;
  if (o.experts->count() == 0) a.experts = c.num_local_experts;
  if (o.top_k->count() == 0) a.top_k = c.num_experts_per_tok;
}

// The model's trace shape must be the trace's: the bound reads the model's bytes per expert.
void check_trace_fits(const RoutingTrace& t, const ModelConfig& c, const std::string& what) {
  if (t.n_layers != c.num_hidden_layers || t.n_experts != c.num_local_experts || t.top_k != c.num_experts_per_tok)
    fail("{}: {} layers x {} experts, top-{}, model {} has {} x {}, top-{}", what, t.n_layers, t.n_experts, t.top_k,
         c.name, c.num_hidden_layers, c.num_local_experts, c.num_experts_per_tok);
}

// Cross-field usage checks (exit 2 like any CLI11 validation error). Layers and experts
// have the limits of a model's config; the trace's expert ids (4 bytes each) at most 1 GiB.
void check_shape_args(const ShapeArgs& a) {
  if (a.top_k > a.experts)
    throw CLI::ValidationError("--top-k", "is " + std::to_string(a.top_k) + ", expected <= --experts " +
                                              std::to_string(a.experts));
  if (a.layers > kMaxLayers)
    throw CLI::ValidationError("--layers", "is " + std::to_string(a.layers) + ", expected <= " + std::to_string(kMaxLayers));
  if (a.experts > kMaxExperts)
    throw CLI::ValidationError("--experts",
                               "is " + std::to_string(a.experts) + ", expected <= " + std::to_string(kMaxExperts));
  const int64_t ids = static_cast<int64_t>(a.tokens) * a.layers * a.top_k;
  if (ids > kMaxTraceIds)
    throw CLI::ValidationError("--tokens", "is " + std::to_string(a.tokens) + ": " + std::to_string(ids) +
                                               " expert ids (tokens x layers x top-k), expected at most " +
                                               std::to_string(kMaxTraceIds));
}

RoutingTrace synth_trace(const ShapeArgs& a, uint64_t stream = 0) {
  RoutingParams p{a.layers, a.experts, a.top_k, a.seed, "", stream};
  auto src = make_routing_source(parse_routing_spec(a.routing), p);
  return generate_trace(*src, p, (a.tokens + a.tokens_per_step - 1) / a.tokens_per_step, a.tokens_per_step);
}

// ---- units, in one place ----
std::string fmt_bytes(int64_t b) {
  double v = static_cast<double>(b);
  if (v >= 1e12) return fmt::format("{:.2f} TB", v / 1e12);
  if (v >= 1e9) return fmt::format("{:.2f} GB", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.1f} MB", v / 1e6);
  return fmt::format("{} B", b);
}
std::string fmt_ns(int64_t ns) {
  double v = static_cast<double>(ns);
  if (v >= 1e9) return fmt::format("{:.2f} s", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.1f} ms", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.1f} us", v / 1e3);
  return fmt::format("{} ns", ns);
}
std::string fmt_rate(double tps) { return std::isinf(tps) ? std::string("inf") : fmt::format("{:.2f}", tps); }

// One field table drives the text table and the JSON rows.
struct Field {
  const char* key;     // JSON key
  const char* header;  // table header
  std::function<nlohmann::ordered_json(const SimResult&)> value;
  std::function<std::string(const SimResult&)> text;
};

const std::vector<Field>& fields() {
  using R = const SimResult&;
  using J = nlohmann::ordered_json;
  static const std::vector<Field> f = {
      {"policy", "policy", [](R r) { return J(r.policy); }, [](R r) { return r.policy; }},
      {"capacity", "slots", [](R r) { return J(r.capacity); }, [](R r) { return std::to_string(r.capacity); }},
      {"hit_rate", "hit %", [](R r) { return J(r.hit_rate()); },
       [](R r) { return fmt::format("{:.2f}", 100 * r.hit_rate()); }},
      {"accesses", "accesses", [](R r) { return J(r.counters.accesses); },
       [](R r) { return std::to_string(r.counters.accesses); }},
      {"misses", "misses", [](R r) { return J(r.counters.misses); },
       [](R r) { return std::to_string(r.counters.misses); }},
      {"prefetch_loads", "prefetch", [](R r) { return J(r.counters.prefetch_loads); },
       [](R r) { return std::to_string(r.counters.prefetch_loads); }},
      {"prefetch_hits", "pf hits", [](R r) { return J(r.counters.prefetch_hits); },
       [](R r) { return std::to_string(r.counters.prefetch_hits); }},
      {"prefetch_wasted", "pf wasted", [](R r) { return J(r.counters.prefetch_wasted); },
       [](R r) { return std::to_string(r.counters.prefetch_wasted); }},
      {"warm_loads", "warm", [](R r) { return J(r.counters.warm_loads); },
       [](R r) { return std::to_string(r.counters.warm_loads); }},
      {"evictions", "evictions", [](R r) { return J(r.counters.evictions); },
       [](R r) { return std::to_string(r.counters.evictions); }},
      {"demand_bytes", "demand", [](R r) { return J(r.demand_bytes); }, [](R r) { return fmt_bytes(r.demand_bytes); }},
      {"prefetch_bytes", "prefetched", [](R r) { return J(r.prefetch_bytes); },
       [](R r) { return fmt_bytes(r.prefetch_bytes); }},
      {"warm_bytes", "warm-up", [](R r) { return J(r.warm_bytes); }, [](R r) { return fmt_bytes(r.warm_bytes); }},
      {"split_bytes", "split copied", [](R r) { return J(r.split_bytes); }, [](R r) { return fmt_bytes(r.split_bytes); }},
      {"host_bytes", "host", [](R r) { return J(r.host_bytes); }, [](R r) { return fmt_bytes(r.host_bytes); }},
      {"host_busy_ns", "host busy", [](R r) { return J(r.host_busy_ns); }, [](R r) { return fmt_ns(r.host_busy_ns); }},
      {"copy_busy_ns", "copy busy", [](R r) { return J(r.copy_busy_ns); }, [](R r) { return fmt_ns(r.copy_busy_ns); }},
      {"balance_link_units", "balance parts",
       [](R r) { return r.balance_link_units.empty() ? J(nullptr) : J(r.balance_link_units); },
       [](R r) {
         return r.balance_link_units.size() == 2
                    ? fmt::format("{}/{}", r.balance_link_units[0], r.balance_link_units[1])
                    : std::string("-");
       }},
      {"stall_ns", "stall", [](R r) { return J(r.stall_ns); }, [](R r) { return fmt_ns(r.stall_ns); }},
      {"decode_ns", "decode", [](R r) { return J(r.decode_ns); }, [](R r) { return fmt_ns(r.decode_ns); }},
      {"tokens_per_s", "tok/s",
       [](R r) { return std::isinf(r.tokens_per_s) ? J(nullptr) : J(r.tokens_per_s); },
       [](R r) { return fmt_rate(r.tokens_per_s); }},
  };
  return f;
}

void print_table(const std::vector<SimResult>& rows) {
  const auto& f = fields();
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> w(f.size());
  for (size_t c = 0; c < f.size(); ++c) w[c] = std::string(f[c].header).size();
  for (const auto& r : rows) {
    auto& line = cells.emplace_back();
    for (size_t c = 0; c < f.size(); ++c) {
      line.push_back(!r.error.empty() && c >= 2 ? std::string("-") : f[c].text(r));
      w[c] = std::max(w[c], line.back().size());
    }
  }
  auto emit = [&](auto get) {
    std::string s;
    for (size_t c = 0; c < f.size(); ++c)
      s += c == 0 ? fmt::format("{:<{}}", get(c), w[c]) : fmt::format("  {:>{}}", get(c), w[c]);
    std::printf("%s\n", s.c_str());
  };
  emit([&](size_t c) { return std::string(f[c].header); });
  for (const auto& line : cells) emit([&](size_t c) { return line[c]; });
  for (const auto& r : rows)
    if (!r.error.empty()) std::printf("%s @ %d slots: %s\n", r.policy.c_str(), r.capacity, r.error.c_str());
}

struct SimulateArgs {
  std::string trace;
  ShapeArgs shape;
  std::vector<std::string> policies;
  std::vector<int> capacities;
  double h2d_gbps = 0;
  int64_t expert_bytes = kMixtral8x7bExpertBytes;
  std::string expert_dtype;  // "" = --expert-bytes (or --model's stored format); else an expert of --model (Mixtral-8x7B) in this format
  double compute_ms_per_token = 0;
  double prefetch_accuracy = EngineSettings{}.prefetch_accuracy;  // the engine's default
  std::string expert_exec = "gpu";
  double host_gbps = 0;
  double host_overhead_us = 0;
  int split_units = 1;
  bool split_copies = false;
  bool split_balance = false;
  double joint_copy_gbps = 0, joint_host_gbps = 0;
  double model_copy_gbps = 0;
  int cpu_moe_layers = 0;
  int prefill_tokens = 0;
  int runs = 1, warmup_runs = 0;
  bool json = false;
};

// One expert of `model` as a load moves it (its slot layout: weights, scales, zero points):
// in format `dtype`, or as the model stores its experts when dtype is empty.
int64_t model_expert_bytes(const std::string& model, const std::string& dtype) {
  const WeightSource w = WeightSource::open(model, 0);
  const QuantFormat f = dtype.empty() ? w.expert_format() : resolve_expert_format(dtype, w);
  return static_cast<int64_t>(expert_layout(w.config(), f, f == QuantFormat::int4 && w.expert_zero_points()).total_bytes);
}

int run_simulate(const SimulateArgs& a) {
  RoutingTrace trace = a.trace.empty() ? synth_trace(a.shape) : load_trace(a.trace);
  if (!a.shape.model.empty())
    check_trace_fits(trace, a.shape.model_config, a.trace.empty() ? "--routing trace" : a.trace);
  SimOptions opt;
  opt.link.h2d_gbps = a.h2d_gbps;
  opt.link.expert_bytes = a.expert_bytes;
  if (!a.shape.model.empty())
    opt.link.expert_bytes = model_expert_bytes(a.shape.model, a.expert_dtype);
  else if (!a.expert_dtype.empty())
    opt.link.expert_bytes = static_cast<int64_t>(
        expert_bytes(preset_config("mixtral-8x7b"), parse_quant_format(a.expert_dtype, "--expert-dtype")));
  const double compute_ns_per_layer = a.compute_ms_per_token * 1e6 / trace.n_layers;
  if (!(compute_ns_per_layer < 0x1p62))
    fail("--compute-ms-per-token {}: over the 2^62 ns the simulated clock holds", a.compute_ms_per_token);
  opt.link.compute_ns_per_layer = std::llround(compute_ns_per_layer);
  opt.prediction.accuracy = a.prefetch_accuracy;
  opt.prediction.seed = a.shape.seed;
  opt.exec = parse_expert_exec(a.expert_exec, "--expert-exec");
  opt.cpu_moe_layers = a.cpu_moe_layers;
  opt.link.host_gbps = a.host_gbps;
  opt.link.host_overhead_ns = std::llround(a.host_overhead_us * 1e3);
  opt.link.split_units = a.split_units;
  opt.link.split_copies = a.split_copies;
  opt.link.split_balance = a.split_balance;
  opt.link.joint_copy_gbps = a.joint_copy_gbps;
  opt.link.joint_host_gbps = a.joint_host_gbps;
  opt.link.model_copy_gbps = a.model_copy_gbps;
  opt.prefill_tokens = a.prefill_tokens;
  opt.runs = a.runs;
  opt.warmup_runs = a.warmup_runs;
  // The engine's warm-ups draw a synthetic source's choices from routing stream 1, the
  // measured generations from stream 0 (a recorded trace replays itself either way).
  RoutingTrace warmup_trace;
  if (a.trace.empty() && a.warmup_runs > 0) {
    warmup_trace = synth_trace(a.shape, 1);
    opt.warmup_trace = &warmup_trace;
  }
  if ((a.joint_copy_gbps > 0) != (a.joint_host_gbps > 0))
    fail("--joint-copy-gbps {} / --joint-host-gbps {}: give both (the two links' rates measured at once) or neither",
         a.joint_copy_gbps, a.joint_host_gbps);
  if ((opt.exec != ExpertExec::gpu || opt.cpu_moe_layers > 0) && !(a.host_gbps > 0))
    fail("--expert-exec {} / --cpu-moe-layers {}: the host link needs --host-gbps (the host kernel's rate, GB/s)",
         a.expert_exec, a.cpu_moe_layers);
  auto t0 = std::chrono::steady_clock::now();
  std::vector<SimResult> rows = simulate_sweep(trace, a.policies, a.capacities, opt);
  int64_t sim_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
  const bool all_failed = std::all_of(rows.begin(), rows.end(), [](const SimResult& r) { return !r.error.empty(); });
  if (all_failed) fail("{}", rows.front().error);  // nothing ran: one-line error, exit 1

  if (a.json) {
    nlohmann::ordered_json j;
    if (!a.shape.model.empty()) j["model"] = a.shape.model;
    j["trace"] = {{"file", a.trace},          {"source", trace.source}, {"layers", trace.n_layers},
                  {"experts", trace.n_experts}, {"top_k", trace.top_k},   {"steps", trace.n_steps()},
                  {"tokens", trace.n_tokens()}};
    j["link"] = {{"h2d_gbps", opt.link.h2d_gbps},
                 {"expert_bytes", opt.link.expert_bytes},
                 {"compute_ns_per_layer", opt.link.compute_ns_per_layer},
                 {"expert_exec", a.expert_exec},
                 {"cpu_moe_layers", a.cpu_moe_layers},
                 {"host_gbps", opt.link.host_gbps},
                 {"host_overhead_ns", opt.link.host_overhead_ns},
                 {"split_units", opt.link.split_units},
                 {"split_copies", opt.link.split_copies},
                 {"split_balance", opt.link.split_balance},
                 {"joint_copy_gbps", opt.link.joint_copy_gbps},
                 {"joint_host_gbps", opt.link.joint_host_gbps},
                 {"model_copy_gbps", opt.link.model_copy_gbps},
                 {"prefill_tokens", opt.prefill_tokens},
                 {"runs", opt.runs},
                 {"warmup_runs", opt.warmup_runs}};
    j["prediction"] = {{"accuracy", opt.prediction.accuracy}, {"seed", opt.prediction.seed}};
    j["simulation_ns"] = sim_ns;
    nlohmann::ordered_json arr = nlohmann::ordered_json::array();
    for (const auto& r : rows) {
      nlohmann::ordered_json o;
      if (!r.error.empty()) {
        o = {{"policy", r.policy}, {"capacity", r.capacity}, {"error", r.error}};
        arr.push_back(std::move(o));
        continue;
      }
      for (const auto& f : fields()) o[f.key] = f.value(r);
      arr.push_back(std::move(o));
    }
    j["results"] = std::move(arr);
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  if (!a.shape.model.empty()) std::printf("model %s\n", a.shape.model.c_str());
  std::printf("trace: %s (%s), %d layers x %d experts, top-%d, %d steps, %lld tokens\n",
              a.trace.empty() ? "synthetic" : a.trace.c_str(), trace.source.c_str(), trace.n_layers, trace.n_experts,
              trace.top_k, trace.n_steps(), static_cast<long long>(trace.n_tokens()));
  std::printf("link: %.1f GB/s, expert %s (%s per load), compute %s per token; prefetch accuracy %.2f\n",
              opt.link.h2d_gbps, fmt_bytes(opt.link.expert_bytes).c_str(),
              fmt_ns(std::llround(opt.link.expert_bytes / opt.link.h2d_gbps)).c_str(),
              fmt_ns(opt.link.compute_ns_per_layer * trace.n_layers).c_str(), opt.prediction.accuracy);
  if (opt.exec != ExpertExec::gpu || opt.cpu_moe_layers > 0)
    std::printf("host link: expert_exec %s, %d cpu layer(s), %.1f GB/s host kernel, %s per layer with host work, "
                "experts split in %d part(s)\n",
                a.expert_exec.c_str(), opt.cpu_moe_layers, opt.link.host_gbps,
                fmt_ns(opt.link.host_overhead_ns).c_str(), opt.link.split_units);
  print_table(rows);
  std::printf("simulated %zu cases in %s\n", rows.size(), fmt_ns(sim_ns).c_str());
  return 0;
}

struct MakeTraceArgs {
  ShapeArgs shape;
  std::string out;
  bool weights = false;
};

int run_make_trace(const MakeTraceArgs& a) {
  check_paths({}, {{"--out", a.out}});
  RoutingParams p{a.shape.layers, a.shape.experts, a.shape.top_k, a.shape.seed, ""};
  auto src = make_routing_source(parse_routing_spec(a.shape.routing), p);
  int steps = (a.shape.tokens + a.shape.tokens_per_step - 1) / a.shape.tokens_per_step;
  RoutingTrace t = generate_trace(*src, p, steps, a.shape.tokens_per_step, a.weights);
  save_trace(t, a.out);
  std::printf("wrote %s: %s, %d layers x %d experts, top-%d, %d steps, %lld tokens\n", a.out.c_str(),
              t.source.c_str(), t.n_layers, t.n_experts, t.top_k, t.n_steps(), static_cast<long long>(t.n_tokens()));
  auto st = measure_routing(t);
  std::printf("layer  first-repeat %%  top-k overlap %%  top expert %%  least expert %%\n");
  // Layers 0, mid-depth (15 of 32) and last, as the published Mixtral routing statistics report them.
  std::vector<int> show = {0};
  for (int l : {t.n_layers * 15 / 31, t.n_layers - 1})
    if (l > show.back()) show.push_back(l);
  for (int l : show) {
    std::printf("%5d  %14.2f  %15.2f  %12.2f  %14.2f\n", l, 100 * st[l].first_repeat, 100 * st[l].topk_overlap,
                100 * st[l].top_share, 100 * st[l].least_share);
  }
  return 0;
}

struct SimulateParallelArgs {
  ShapeArgs shape;  // its model: the one whose bytes the GPUs read (none given: Mixtral-8x7B)
  std::string trace;
  std::vector<int> ranks;
  double hbm_gbps = 0;
  double collective_us = 0;
  bool json = false;
};

// One layout of simulate-parallel: tensor parallel, or expert parallel under a placement.
struct ParallelRow {
  std::string layout;     // "tp" | "ep"
  std::string placement;  // ep: the policy; tp: "-"
  int ranks = 0;
  ParallelSimResult sim;
};

int run_simulate_parallel(const SimulateParallelArgs& a) {
  const ModelConfig c = a.shape.model.empty() ? preset_config("mixtral-8x7b") : a.shape.model_config;
  if (!a.shape.model.empty())  // the parallel bounds count bf16 weights (ParallelDtypes)
    if (const QuantFormat f = WeightSource::open(a.shape.model, 0).expert_format(); f != QuantFormat::bf16)
      fail("--model {}: its experts are {}; simulate-parallel counts bf16 weights (give the model in bf16)", a.shape.model,
           quant_format_name(f));
  RoutingTrace trace = a.trace.empty() ? synth_trace(a.shape) : load_trace(a.trace);
  check_trace_fits(trace, c, a.trace.empty() ? "--routing trace" : a.trace);
  // balanced places on counts of another trace of the same source (another seed): balancing on
  // the trace it is then measured on would be an oracle. A recorded trace is its own calibration.
  std::vector<int64_t> usage = trace.usage_counts();
  if (a.trace.empty()) {
    ShapeArgs cal = a.shape;
    cal.seed = a.shape.seed + 1;
    usage = synth_trace(cal).usage_counts();
  }
  const int64_t coll_ns = std::llround(a.collective_us * 1e3);
  const int tokens_per_step = trace.n_steps() > 0 ? static_cast<int>(trace.n_tokens() / trace.n_steps()) : 1;
  std::vector<ParallelRow> rows;
  for (int n : a.ranks) {
    const TpPlan plan = plan_tensor_parallel(c, n, std::max(1, tokens_per_step));
    rows.push_back({"tp", "-", n, simulate_tensor_parallel(trace, n, tp_bound_params(plan, {}, a.hbm_gbps, coll_ns))});
    const ParallelBoundParams ep = ep_bound_params(c, {}, a.hbm_gbps, coll_ns);
    for (const auto& info : placement_policies()) {
      const ExpertPlacement p = make_placement(info.name, usage, c.num_hidden_layers, c.num_local_experts, n);
      rows.push_back({"ep", info.name, n, simulate_expert_parallel(trace, p, ep)});
    }
  }
  auto step_ms = [](const ParallelSimResult& r) {
    return r.n_steps > 0 ? static_cast<double>(r.decode_ns) / r.n_steps / 1e6 : 0.0;
  };
  if (a.json) {
    nlohmann::ordered_json j;
    j["model"] = c.name;
    j["trace"] = {{"file", a.trace},        {"source", trace.source},   {"layers", trace.n_layers},
                  {"experts", trace.n_experts}, {"top_k", trace.top_k}, {"steps", trace.n_steps()},
                  {"tokens", trace.n_tokens()}};
    j["hbm_gbps"] = a.hbm_gbps;
    j["collective_ns_per_layer"] = coll_ns;
    nlohmann::ordered_json arr = nlohmann::ordered_json::array();
    for (const auto& r : rows)
      arr.push_back({{"layout", r.layout},
                     {"placement", r.placement},
                     {"ranks", r.ranks},
                     {"mean_step_imbalance", r.sim.mean_imbalance()},
                     {"step_ms", step_ms(r.sim)},
                     {"tokens_per_s", std::isinf(r.sim.tokens_per_s) ? nlohmann::ordered_json(nullptr)
                                                                      : nlohmann::ordered_json(r.sim.tokens_per_s)}});
    j["results"] = std::move(arr);
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model %s; trace: %s (%s), %d layers x %d experts, top-%d, %d steps of %d token(s)\n", c.name.c_str(),
              a.trace.empty() ? "synthetic" : a.trace.c_str(), trace.source.c_str(), trace.n_layers, trace.n_experts,
              trace.top_k, trace.n_steps(), tokens_per_step);
  std::printf("bound per step: the slowest GPU's bytes of each layer at %.0f GB/s + %s of collectives per layer\n\n",
              a.hbm_gbps, fmt_ns(coll_ns).c_str());
  std::printf("%-6s  %-12s  %5s  %15s  %9s  %12s\n", "layout", "placement", "GPUs", "step imbalance", "step", "tok/s");
  for (const auto& r : rows)
    std::printf("%-6s  %-12s  %5d  %15.3f  %9s  %12s\n", r.layout.c_str(), r.placement.c_str(), r.ranks,
                r.sim.mean_imbalance(), fmt_ns(std::llround(step_ms(r.sim) * 1e6)).c_str(),
                fmt_rate(r.sim.tokens_per_s).c_str());
  return 0;
}

}  // namespace

MOEBENCH_COMMAND(simulate, "trace-driven expert-cache simulation: hit rate, bytes moved, projected tokens/s",
                 [](CLI::App& sub) {
                   auto a = std::make_shared<SimulateArgs>();
                   auto* tr = sub.add_option("--trace", a->trace, "routing trace file (moebench make-trace, --record-routing)");
                   const ShapeOptions so = add_shape_options(
                       sub, a->shape, tr,
                       "the model simulated: a preset, synthetic:PRESET[:layers=N][:dtype=F] or a checkpoint "
                       "(folder, ORG/NAME): the synthetic trace's shape and the bytes of one expert as a load moves "
                       "it, in --expert-dtype or as stored (default: --layers/--experts/--top-k, --expert-bytes)");
                   sub.add_option("--policy", a->policies, "cache policies, comma-separated")
                       ->required()
                       ->delimiter(',')
                       ->check(CLI::IsMember(cache_policy_names()));
                   sub.add_option("--capacity", a->capacities, "expert slots (global across layers), comma-separated")
                       ->required()
                       ->delimiter(',')
                       ->check(moebench::app::kPositiveNumber);
                   sub.add_option("--h2d-gbps", a->h2d_gbps, "host-to-device link bandwidth in GB/s")
                       ->required()
                       ->check(moebench::app::kPositiveNumber);
                   auto* eb = sub.add_option("--expert-bytes", a->expert_bytes,
                                             "bytes of one expert (default 352321536: Mixtral-8x7B bf16)")
                                  ->check(moebench::app::kPositiveNumber)
                                  ->excludes("--model");
                   sub.add_option("--expert-dtype", a->expert_dtype,
                                  "an expert of --model (default: Mixtral-8x7B) in this format, weights + scales: "
                                  "bf16|fp8|int8|int4")
                       ->check(CLI::IsMember({"bf16", "fp8", "int8", "int4"}))
                       ->excludes(eb);
                   sub.add_option("--compute-ms-per-token", a->compute_ms_per_token,
                                  "resident compute time of one token through all layers (default 0: transfer only)")
                       ->check(moebench::app::kNonNegativeNumber);
                   sub.add_option("--prefetch-accuracy", a->prefetch_accuracy,
                                  "share of prefetch predictions that are the true next-layer expert (default 0.8, as the engine's prefetch_accuracy)")
                       ->check(CLI::Range(0.0, 1.0));
                   sub.add_option("--expert-exec", a->expert_exec,
                                  "where misses are computed: gpu (copied, default) | cpu (host) | hybrid (split by the cost model)")
                       ->check(CLI::IsMember({"gpu", "cpu", "hybrid"}));
                   sub.add_option("--host-gbps", a->host_gbps, "the host expert kernel's weight read rate in GB/s (host link)")
                       ->check(moebench::app::kPositiveNumber);
                   sub.add_option("--host-overhead-us", a->host_overhead_us,
                                  "fixed cost of a layer with host work, microseconds (default 0)")
                       ->check(moebench::app::kNonNegativeNumber);
                   sub.add_option("--split-units", a->split_units,
                                  "hybrid: parts one expert's rows may be split into between the links (default 1: "
                                  "whole experts; the engine's bf16 Mixtral: 56)")
                       ->check(CLI::Range(1, 4096));
                   sub.add_flag("--split-copies", a->split_copies,
                                "hybrid with --split-units: parts may replace whole copies too (the engine's "
                                "MOEBENCH_HYBRID_SPLIT=all), not only host experts' parts");
                   sub.add_flag("--split-balance", a->split_balance,
                                "hybrid with --split-units: the engine's hybrid_split=balance (the link's share of "
                                "each layer's parts set by feedback on which link ended later; nothing copied ahead)");
                   sub.add_option("--joint-copy-gbps", a->joint_copy_gbps,
                                  "host link: the copies' rate while the host kernel reads too, GB/s (with "
                                  "--joint-host-gbps: both links on one clock, each slower beside the other)")
                       ->check(moebench::app::kNonNegativeNumber);
                   sub.add_option("--joint-host-gbps", a->joint_host_gbps,
                                  "host link: the host kernel's rate while copies run too, GB/s")
                       ->check(moebench::app::kNonNegativeNumber);
                   sub.add_option("--model-copy-gbps", a->model_copy_gbps,
                                  "hybrid: the copy rate the split decides with, GB/s (default: --h2d-gbps, the "
                                  "rate the copies run at; an engine's own measured solo rate, to replay its choices)")
                       ->check(moebench::app::kNonNegativeNumber);
                   sub.add_option("--prefill-tokens", a->prefill_tokens,
                                  "the first N tokens of the trace are the prompt: run through the cache before "
                                  "decode (chunked, every miss loaded, not timed), as the engine's prefill")
                       ->check(moebench::app::kNonNegativeNumber);
                   sub.add_option("--runs", a->runs,
                                  "replay the trace (prompt, then decode) this many timed times on one cache, as a "
                                  "case's repetitions (default 1)")
                       ->check(moebench::app::kPositiveNumber);
                   sub.add_option("--warmup-runs", a->warmup_runs,
                                  "untimed runs before the timed ones, as a case's warm-up runs (a synthetic routing's choices drawn "
                                  "from routing stream 1, as the engine's warm-ups; default 0)")
                       ->check(moebench::app::kNonNegativeNumber);
                   sub.add_option("--cpu-moe-layers", a->cpu_moe_layers, "the first N layers' experts stay on the host")
                       ->check(moebench::app::kNonNegativeNumber);
                   sub.add_flag("--json", a->json, "print JSON instead of a table");
                   sub.callback([a, so] {
                     if (a->trace.empty() && a->shape.routing.empty())
                       throw CLI::RequiredError("--trace or --routing");
                     resolve_shape(a->shape, so);
                     check_shape_args(a->shape);
                   });
                   return [a] { return run_simulate(*a); };
                 });

// Registered by hand: the command name has a dash.
static const bool kRegisteredMakeTrace = register_command(
    {"make-trace", "write a synthetic routing trace (uniform or mixtral-locality) to a file", [](CLI::App& sub) {
                   auto a = std::make_shared<MakeTraceArgs>();
                   const ShapeOptions so = add_shape_options(
                       sub, a->shape, nullptr,
                       "the model whose shape the trace takes (layers, experts, top-k): a preset, "
                       "synthetic:PRESET[:layers=N] or a checkpoint (folder, ORG/NAME)");
                   sub.get_option("--routing")->required();
                   sub.add_option("--tokens-per-step", a->shape.tokens_per_step,
                                  "tokens per step (1: decode; more: prefill chunks)")
                       ->check(moebench::app::kPositiveNumber);
                   sub.add_flag("--weights", a->weights, "also store synthetic gate weights");
                   sub.add_option("--out", a->out, "trace file to write")->required();
                   sub.callback([a, so] {
                     resolve_shape(a->shape, so);
                     check_shape_args(a->shape);
                   });
                   return Runner([a] { return run_make_trace(*a); });
                 }});

// Registered by hand: the command name has a dash.
static const bool kRegisteredSimulateParallel = register_command(
    {"simulate-parallel",
     "multi-GPU decode bound of a routing trace: tensor and expert parallel (per placement), per-GPU imbalance, tokens/s",
     [](CLI::App& sub) {
       auto a = std::make_shared<SimulateParallelArgs>();
       auto* tr = sub.add_option("--trace", a->trace, "routing trace file (moebench make-trace, --record-routing)");
       const ShapeOptions so = add_shape_options(
           sub, a->shape, tr,
           "the model whose bytes the GPUs read, and the synthetic trace's shape: a preset, "
           "synthetic:PRESET[:layers=N] or a checkpoint (folder, ORG/NAME) (default mixtral-8x7b)");
       sub.add_option("--tokens-per-step", a->shape.tokens_per_step,
                      "tokens per step of the synthetic trace: the batch (default 1)")
           ->check(moebench::app::kPositiveNumber)
           ->excludes(tr);
       sub.add_option("--ranks", a->ranks, "GPU counts, comma-separated (e.g. 2,4,8)")
           ->required()
           ->delimiter(',')
           ->check(moebench::app::kPositiveNumber);
       sub.add_option("--hbm-gbps", a->hbm_gbps, "each GPU's memory bandwidth in GB/s (e.g. a bench run's measured)")
           ->required()
           ->check(moebench::app::kPositiveNumber);
       sub.add_option("--collective-us", a->collective_us,
                      "measured collective time per layer in microseconds (TP: its two all-reduces; default 0)")
           ->check(moebench::app::kNonNegativeNumber);
       sub.add_flag("--json", a->json, "print JSON instead of a table");
       sub.callback([a, so] {
         if (a->trace.empty() && a->shape.routing.empty()) throw CLI::RequiredError("--trace or --routing");
         resolve_shape(a->shape, so);
         check_shape_args(a->shape);
       });
       return Runner([a] { return run_simulate_parallel(*a); });
     }});

}  // namespace moebench::app
