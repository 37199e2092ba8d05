// routing.cpp: see routing.h.
#include "variants/routing.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"
#include "variants/rng.h"

namespace moebench {

namespace {

// Synthetic descending weights summing to 1: (n_tokens, k).
void fill_weights(Rng& rng, int k, std::span<float> w) {
  for (size_t t = 0; t + k <= w.size(); t += k) {
    float sum = 0;
    for (int j = 0; j < k; ++j) sum += (w[t + j] = static_cast<float>(0.05 + rng.uniform()));
    std::sort(w.begin() + t, w.begin() + t + k, std::greater<float>());
    for (int j = 0; j < k; ++j) w[t + j] /= sum;
  }
}

void check_call(const RoutingParams& p, const char* name, int layer, int n_tokens, std::span<int32_t> ids,
                std::span<float> weights) {
  if (layer < 0 || layer >= p.n_layers) fail("{}: layer {} out of range [0, {})", name, layer, p.n_layers);
  size_t want = static_cast<size_t>(n_tokens) * p.top_k;
  if (ids.size() != want) fail("{}: ids buffer holds {} values, expected {} (n_tokens x top_k)", name, ids.size(), want);
  if (!weights.empty() && weights.size() != want)
    fail("{}: weights buffer holds {} values, expected {} or none", name, weights.size(), want);
}

void check_shape(const RoutingParams& p, const char* name) {
  if (p.n_layers <= 0 || p.n_experts <= 0 || p.top_k <= 0 || p.top_k > p.n_experts)
    fail("{}: shape layers={} experts={} top_k={} is invalid, expected positive values with top_k <= experts", name,
         p.n_layers, p.n_experts, p.top_k);
}

class UniformSource final : public RoutingSource {
 public:
  explicit UniformSource(const RoutingParams& p) : p_(p) { check_shape(p, "uniform"); }
  void route(int step, int layer, int n_tokens, std::span<int32_t> ids, std::span<float> weights) override {
    check_call(p_, "uniform", layer, n_tokens, ids, weights);
    // Stateless: every (step, layer) has its own stream, so any call order gives the same trace.
    Rng rng(mix_seed(draw_seed(p_), static_cast<uint64_t>(step) + 1, static_cast<uint64_t>(layer) + 1));
    std::vector<int32_t> perm(p_.n_experts);
    for (int t = 0; t < n_tokens; ++t) {
      std::iota(perm.begin(), perm.end(), 0);
      for (int j = 0; j < p_.top_k; ++j) {  // partial Fisher-Yates
        int r = j + rng.below(p_.n_experts - j);
        std::swap(perm[j], perm[r]);
        ids[static_cast<size_t>(t) * p_.top_k + j] = perm[j];
      }
    }
    if (!weights.empty()) fill_weights(rng, p_.top_k, weights);
  }
  std::string describe() const override { return fmt::format("uniform seed={}", p_.seed); }

 private:
  RoutingParams p_;
};

// Anchors at depth 0, 15/31, 1 (layers 0, 15, 31 of Mixtral's 32).
struct Anchor {
  double depth;
  LocalityParams p;
};
// first_repeat: the midpoints of the published ranges (layer 31: a little below, so the
// top-2 overlap can stay inside its range). stickiness and gamma: calibrated offline with
// tests/routing_test.cpp's measurement (8 experts, top-2).
constexpr Anchor kAnchors[] = {
    {0.0, {0.1425, -0.19, 1.4}},
    {15.0 / 31.0, {0.26, 0.07, 2.0}},
    {1.0, {0.225, -0.42, 1.8}},
};

class LocalitySource final : public RoutingSource {
 public:
  // name: the registry name; params: the locality parameters at a depth.
  LocalitySource(const RoutingParams& p, const char* name, LocalityParams (*params)(double))
      : name_(name), p_(p) {
    check_shape(p, name_);
    layers_.resize(p.n_layers);
    for (int l = 0; l < p.n_layers; ++l) {
      Layer& L = layers_[l];
      double d = p.n_layers > 1 ? static_cast<double>(l) / (p.n_layers - 1) : 0.0;
      L.params = params(d);
      L.rng = Rng(mix_seed(p.seed, 0x10ca1u, static_cast<uint64_t>(l) + 1));
      // Popularity by rank, then a seeded permutation so each layer favours different experts.
      std::vector<int> perm(p.n_experts);
      std::iota(perm.begin(), perm.end(), 0);
      for (int i = p.n_experts - 1; i > 0; --i) std::swap(perm[i], perm[L.rng.below(i + 1)]);
      L.pop.assign(p.n_experts, 0.0);
      double sum = 0;
      for (int r = 0; r < p.n_experts; ++r) {
        double x = p.n_experts > 1 ? static_cast<double>(r) / (p.n_experts - 1) : 0.0;
        sum += L.pop[perm[r]] = std::exp(-L.params.gamma * (L.params.exponential ? x : x * x));
      }
      for (double& v : L.pop) v /= sum;
      // Another stream: the same popularity, its own draws.
      if (p.stream != 0) L.rng = Rng(mix_seed(draw_seed(p), 0x10ca1u, static_cast<uint64_t>(l) + 1));
      L.prev.assign(p.top_k, -1);
    }
  }

  void route(int step, int layer, int n_tokens, std::span<int32_t> ids, std::span<float> weights) override {
    check_call(p_, name_, layer, n_tokens, ids, weights);
    Layer& L = layers_[layer];
    if (step != L.next_step)
      fail("{}: layer {} asked for step {}, expected step {} (synthetic routing is generated in order)", name_,
           layer, step, L.next_step);
    ++L.next_step;
    const int k = p_.top_k;
    std::vector<char> excl(p_.n_experts);
    for (int t = 0; t < n_tokens; ++t) {
      int32_t* cur = ids.data() + static_cast<size_t>(t) * k;
      bool has_prev = L.prev[0] >= 0;
      std::fill(excl.begin(), excl.end(), 0);
      // Choice 1 (first_repeat < 0: no rule, drawn from the popularity alone).
      if (L.params.first_repeat < 0) {
        cur[0] = draw(L, excl);
      } else if (has_prev && L.rng.uniform() < L.params.first_repeat) {
        cur[0] = L.prev[0];
      } else {
        if (has_prev) excl[L.prev[0]] = 1;
        cur[0] = draw(L, excl);
      }
      // Choices 2..k.
      for (int j = 1; j < k; ++j) {
        std::fill(excl.begin(), excl.end(), 0);
        for (int i = 0; i < j; ++i) excl[cur[i]] = 1;
        int32_t pick = -1;
        double u = L.rng.uniform();
        double b = L.params.stickiness;
        if (has_prev && b > 0 && u < b) {
          for (int i = 1; i <= k && pick < 0; ++i) {  // prev set in order 2..k, then 1
            int32_t e = L.prev[i % k];
            if (!excl[e]) pick = e;
          }
        } else if (has_prev && b < 0 && u < -b) {
          std::vector<char> ex2 = excl;
          int left = 0;
          for (int i = 0; i < k; ++i) ex2[L.prev[i]] = 1;
          for (char c : ex2) left += !c;
          if (left > 0) pick = draw(L, ex2);
        }
        if (pick < 0) pick = draw(L, excl);
        cur[j] = pick;
      }
      std::copy(cur, cur + k, L.prev.begin());
    }
    if (!weights.empty()) fill_weights(L.rng, k, weights);
  }

  std::string describe() const override { return fmt::format("{} seed={}", name_, p_.seed); }

 private:
  struct Layer {
    LocalityParams params{};
    Rng rng{0};
    std::vector<double> pop;     // (n_experts) popularity, sums to 1
    std::vector<int32_t> prev;   // (top_k) previous token's choices, -1 before the first
    int next_step = 0;
  };

  int32_t draw(Layer& L, const std::vector<char>& excl) {
    double total = 0;
    for (int e = 0; e < p_.n_experts; ++e)
      if (!excl[e]) total += L.pop[e];
    double u = L.rng.uniform() * total;
    int32_t last = -1;
    for (int e = 0; e < p_.n_experts; ++e) {
      if (excl[e]) continue;
      last = e;
      if ((u -= L.pop[e]) < 0) return e;
    }
    return last;  // rounding
  }

  const char* name_;
  RoutingParams p_;
  std::vector<Layer> layers_;
};

class TraceSource final : public RoutingSource {
 public:
  TraceSource(std::shared_ptr<const RoutingTrace> t, const RoutingParams& p, std::string path)
      : tp_(std::move(t)), t_(*tp_), path_(std::move(path)) {
    if (t_.n_layers != p.n_layers) fail("{}: field 'layers' is {}, expected {} (the model's)", path_, t_.n_layers, p.n_layers);
    if (t_.n_experts != p.n_experts)
      fail("{}: field 'experts' is {}, expected {} (the model's)", path_, t_.n_experts, p.n_experts);
    if (t_.top_k != p.top_k) fail("{}: field 'top_k' is {}, expected {} (the model's)", path_, t_.top_k, p.top_k);
  }
  void route(int step, int layer, int n_tokens, std::span<int32_t> ids, std::span<float> weights) override {
    if (step < 0 || step >= t_.n_steps())
      fail("{}: step {} asked, the trace has {} steps", path_, step, t_.n_steps());
    if (layer < 0 || layer >= t_.n_layers) fail("{}: layer {} out of range [0, {})", path_, layer, t_.n_layers);
    if (t_.steps[step].n_tokens != n_tokens)
      fail("{}: steps[{}].n_tokens is {}, the run asked for {} tokens", path_, step, t_.steps[step].n_tokens, n_tokens);
    auto src = t_.ids(step, layer);
    if (ids.size() != src.size()) fail("{}: ids buffer holds {} values, expected {}", path_, ids.size(), src.size());
    std::copy(src.begin(), src.end(), ids.begin());
    if (!weights.empty()) {
      auto w = t_.weights(step, layer);
      if (w.empty()) {  // not recorded: equal weights
        std::fill(weights.begin(), weights.end(), 1.0f / t_.top_k);
      } else {
        std::copy(w.begin(), w.end(), weights.begin());
      }
    }
  }
  std::string describe() const override { return fmt::format("trace:{} ({})", path_, t_.source); }

 private:
  std::shared_ptr<const RoutingTrace> tp_;
  const RoutingTrace& t_;
  std::string path_;
};

}  // namespace

uint64_t draw_seed(const RoutingParams& p) { return p.stream == 0 ? p.seed : mix_seed(p.seed, 0x57ea3u, p.stream); }

LocalityParams mixtral_locality_params(double d) {
  d = std::clamp(d, 0.0, 1.0);
  const Anchor* lo = &kAnchors[0];
  const Anchor* hi = &kAnchors[1];
  if (d > kAnchors[1].depth) {
    lo = &kAnchors[1];
    hi = &kAnchors[2];
  }
  double f = (d - lo->depth) / (hi->depth - lo->depth);
  auto lerp = [f](double a, double b) { return a + f * (b - a); };
  return {lerp(lo->p.first_repeat, hi->p.first_repeat), lerp(lo->p.stickiness, hi->p.stickiness),
          lerp(lo->p.gamma, hi->p.gamma)};
}

LocalityParams fine_grained_locality_params(double) {
  // gamma: fitted to the published Qwen3-30B-A3B selection counts (routing.h), measured by
  // tests/routing_test.cpp at 128 experts, top-8.
  return {-1.0, 0.0, 4.5, true};
}

const std::vector<RoutingSourceInfo>& routing_sources() {
  static const std::vector<RoutingSourceInfo> r = {
      {"model", "the model's own gate: softmax over experts, top-k (run by the engine)", RoutingKind::model, nullptr},
      {"uniform", "iid uniform top-k experts per token (seeded)", RoutingKind::uniform,
       [](const RoutingParams& p) { return std::unique_ptr<RoutingSource>(new UniformSource(p)); }},
      {"mixtral-locality",
       "synthetic, seeded, calibrated to published Mixtral-8x7B locality and popularity skew (Mixtral paper, Table 5)",
       RoutingKind::mixtral_locality,
       [](const RoutingParams& p) {
         return std::unique_ptr<RoutingSource>(new LocalitySource(p, "mixtral-locality", mixtral_locality_params));
       }},
      {"fine-grained-locality",
       "synthetic, seeded, many small experts with top-8: the popularity skew of published Qwen3-30B-A3B routing "
       "counts (65 of 128 experts carry 90 % of the selections)",
       RoutingKind::fine_grained_locality,
       [](const RoutingParams& p) {
         return std::unique_ptr<RoutingSource>(
             new LocalitySource(p, "fine-grained-locality", fine_grained_locality_params));
       }},
      {"trace", "trace:FILE replays the expert choices recorded in a routing trace", RoutingKind::trace,
       [](const RoutingParams& p) {
         return make_trace_source(std::make_shared<const RoutingTrace>(load_trace(p.trace_path)), p, p.trace_path);
       }},
  };
  return r;
}

std::unique_ptr<RoutingSource> make_trace_source(std::shared_ptr<const RoutingTrace> trace, const RoutingParams& params,
                                                 const std::string& path) {
  return std::make_unique<TraceSource>(std::move(trace), params, path);
}

const RoutingSourceInfo& routing_source_info(RoutingKind kind) {
  for (const auto& s : routing_sources())
    if (s.kind == kind) return s;
  fail("routing source kind {} is not registered", static_cast<int>(kind));
}

RoutingSpec parse_routing_spec(const std::string& spec) {
  RoutingSpec r;
  if (spec.rfind("trace:", 0) == 0) {
    r.kind = RoutingKind::trace;
    r.name = "trace";
    r.trace_path = spec.substr(6);
    if (r.trace_path.empty()) fail("routing '{}': expected trace:FILE with a file name", spec);
    return r;
  }
  for (const auto& s : routing_sources()) {
    if (s.name == spec && s.kind != RoutingKind::trace) {
      r.kind = s.kind;
      r.name = s.name;
      return r;
    }
  }
  fail("routing '{}' is unknown, expected one of: model, uniform, mixtral-locality, fine-grained-locality, trace:FILE",
       spec);
}

std::unique_ptr<RoutingSource> make_routing_source(const RoutingSpec& spec, const RoutingParams& params) {
  const RoutingSourceInfo& info = routing_source_info(spec.kind);
  if (!info.make) fail("routing '{}' is computed by the engine's gate and has no standalone source", info.name);
  RoutingParams p = params;
  if (spec.kind == RoutingKind::trace) p.trace_path = spec.trace_path;
  return info.make(p);
}

RoutingTrace generate_trace(RoutingSource& src, const RoutingParams& params, int n_steps, int tokens_per_step,
                            bool with_weights) {
  RoutingTrace t;
  t.n_layers = params.n_layers;
  t.n_experts = params.n_experts;
  t.top_k = params.top_k;
  t.source = src.describe();
  t.steps.reserve(n_steps);
  const size_t per_layer = static_cast<size_t>(tokens_per_step) * params.top_k;
  for (int s = 0; s < n_steps; ++s) {
    RoutingStep& st = t.add_step(tokens_per_step, with_weights);
    for (int l = 0; l < params.n_layers; ++l) {
      std::span<int32_t> ids(st.ids.data() + per_layer * l, per_layer);
      std::span<float> w;
      if (with_weights) w = std::span<float>(st.weights.data() + per_layer * l, per_layer);
      src.route(s, l, tokens_per_step, ids, w);
    }
  }
  return t;
}

}  // namespace moebench
