// placement.cpp: see placement.h.
#include "variants/placement.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "common/error.h"

namespace moebench {

namespace {

int cap_per_rank(int n_experts, int n_ranks) { return (n_experts + n_ranks - 1) / n_ranks; }

void check_shape(int n_layers, int n_experts, int n_ranks, const std::string& where) {
  if (n_layers <= 0) fail("{}: layers is {}, expected a positive integer", where, n_layers);
  if (n_experts <= 0) fail("{}: experts is {}, expected a positive integer", where, n_experts);
  if (n_ranks <= 0 || n_ranks > n_experts)
    fail("{}: ranks is {}, expected an integer in [1, experts={}]", where, n_ranks, n_experts);
}

void check_usage(std::span<const int64_t> usage, int n_layers, int n_experts, const std::string& where) {
  if (usage.size() != static_cast<size_t>(n_layers) * n_experts)
    fail("{}: routing counts hold {} entries, expected layers x experts = {}", where, usage.size(),
         static_cast<int64_t>(n_layers) * n_experts);
  for (size_t i = 0; i < usage.size(); ++i)
    if (usage[i] < 0) fail("{}: routing count {} is {}, expected >= 0", where, i, usage[i]);
}

// Rank loads of one layer's assignment.
std::vector<int64_t> layer_loads(const int* rank_of, const int64_t* counts, int n_experts, int n_ranks) {
  std::vector<int64_t> load(n_ranks, 0);
  for (int e = 0; e < n_experts; ++e) load[rank_of[e]] += counts[e];
  return load;
}

int64_t max_of(const std::vector<int64_t>& v) { return *std::max_element(v.begin(), v.end()); }

// LPT with a per-rank cap, then improving swaps with the most-loaded rank.
void balance_layer(const int64_t* counts, int n_experts, int n_ranks, int* rank_of) {
  const int cap = cap_per_rank(n_experts, n_ranks);
  std::vector<int> order(n_experts);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return counts[a] > counts[b]; });
  std::vector<int64_t> load(n_ranks, 0);
  std::vector<int> held(n_ranks, 0);
  for (int e : order) {
    int best = -1;
    for (int r = 0; r < n_ranks; ++r)
      if (held[r] < cap && (best < 0 || load[r] < load[best])) best = r;
    rank_of[e] = best;
    load[best] += counts[e];
    ++held[best];
  }
  // Swaps: a swap moving d > 0 from a to b with load[b] + d < load[a] lowers the pair's
  // larger load and strictly lowers the sum of squared loads (an integer), so the loop ends.
  for (bool improved = true; improved;) {
    improved = false;
    const int a = static_cast<int>(std::max_element(load.begin(), load.end()) - load.begin());
    for (int ea = 0; ea < n_experts && !improved; ++ea) {
      if (rank_of[ea] != a) continue;
      for (int eb = 0; eb < n_experts && !improved; ++eb) {
        const int b = rank_of[eb];
        if (b == a || counts[eb] >= counts[ea]) continue;
        const int64_t d = counts[ea] - counts[eb];  // moves from a to b
        if (load[b] + d < load[a]) {
          rank_of[ea] = b;
          rank_of[eb] = a;
          load[a] -= d;
          load[b] += d;
          improved = true;
        }
      }
    }
  }
}

double ratio_max_mean(int64_t mx, double mean) { return mean > 0 ? static_cast<double>(mx) / mean : 1.0; }

}  // namespace

std::vector<int> ExpertPlacement::experts_on(int layer, int r) const {
  std::vector<int> out;
  for (int e = 0; e < n_experts; ++e)
    if (rank(layer, e) == r) out.push_back(e);
  return out;
}

const std::vector<PlacementPolicyInfo>& placement_policies() {
  static const std::vector<PlacementPolicyInfo> v = {
      {"round-robin", "expert e of every layer on GPU e mod N"},
      {"balanced", "per layer, experts by routing count greedily onto the least-loaded GPU, then improving swaps"},
  };
  return v;
}

void validate_placement(const ExpertPlacement& p, const std::string& where) {
  check_shape(p.n_layers, p.n_experts, p.n_ranks, where);
  if (p.rank_of.size() != static_cast<size_t>(p.n_layers) * p.n_experts)
    fail("{}: rank_of holds {} entries, expected layers x experts = {}", where, p.rank_of.size(),
         static_cast<int64_t>(p.n_layers) * p.n_experts);
  const int cap = cap_per_rank(p.n_experts, p.n_ranks);
  for (int l = 0; l < p.n_layers; ++l) {
    std::vector<int> held(p.n_ranks, 0);
    for (int e = 0; e < p.n_experts; ++e) {
      const int r = p.rank(l, e);
      if (r < 0 || r >= p.n_ranks)
        fail("{}: layer {} expert {} is on rank {}, expected 0..{}", where, l, e, r, p.n_ranks - 1);
      if (++held[r] > cap)
        fail("{}: layer {} puts more than {} experts on rank {} (at most ceil(experts / ranks))", where, l, cap, r);
    }
  }
}

ExpertPlacement place_round_robin(int n_layers, int n_experts, int n_ranks) {
  check_shape(n_layers, n_experts, n_ranks, "round-robin placement");
  ExpertPlacement p{"round-robin", n_layers, n_experts, n_ranks, {}};
  p.rank_of.resize(static_cast<size_t>(n_layers) * n_experts);
  for (int l = 0; l < n_layers; ++l)
    for (int e = 0; e < n_experts; ++e) p.rank_of[static_cast<size_t>(l) * n_experts + e] = e % n_ranks;
  return p;
}

ExpertPlacement place_balanced(std::span<const int64_t> usage, int n_layers, int n_experts, int n_ranks) {
  check_shape(n_layers, n_experts, n_ranks, "balanced placement");
  check_usage(usage, n_layers, n_experts, "balanced placement");
  ExpertPlacement p = place_round_robin(n_layers, n_experts, n_ranks);
  p.policy = "balanced";
  std::vector<int> mine(n_experts);
  for (int l = 0; l < n_layers; ++l) {
    const int64_t* counts = usage.data() + static_cast<size_t>(l) * n_experts;
    int* rr = p.rank_of.data() + static_cast<size_t>(l) * n_experts;
    balance_layer(counts, n_experts, n_ranks, mine.data());
    if (max_of(layer_loads(mine.data(), counts, n_experts, n_ranks)) <= max_of(layer_loads(rr, counts, n_experts, n_ranks)))
      std::copy(mine.begin(), mine.end(), rr);
  }
  return p;
}

ExpertPlacement make_placement(const std::string& policy, std::span<const int64_t> usage, int n_layers,
                               int n_experts, int n_ranks) {
  if (policy == "round-robin") return place_round_robin(n_layers, n_experts, n_ranks);
  if (policy == "balanced") return place_balanced(usage, n_layers, n_experts, n_ranks);
  std::string names;
  for (const auto& i : placement_policies()) names += (names.empty() ? "" : ", ") + i.name;
  fail("placement policy '{}' is unknown, expected one of: {}", policy, names);
}

PlacementLoad placement_load(const ExpertPlacement& p, std::span<const int64_t> usage) {
  validate_placement(p, "placement " + p.policy);
  check_usage(usage, p.n_layers, p.n_experts, "placement load");
  PlacementLoad out{p.n_layers, p.n_ranks, {}, {}, 1, 1};
  out.load.assign(static_cast<size_t>(p.n_layers) * p.n_ranks, 0);
  std::vector<int64_t> total(p.n_ranks, 0);
  double sum_max = 0, sum_mean = 0;
  for (int l = 0; l < p.n_layers; ++l) {
    auto load = layer_loads(p.rank_of.data() + static_cast<size_t>(l) * p.n_experts,
                            usage.data() + static_cast<size_t>(l) * p.n_experts, p.n_experts, p.n_ranks);
    const double mean = static_cast<double>(std::accumulate(load.begin(), load.end(), int64_t{0})) / p.n_ranks;
    out.layer_imbalance.push_back(ratio_max_mean(max_of(load), mean));
    sum_max += static_cast<double>(max_of(load));
    sum_mean += mean;
    for (int r = 0; r < p.n_ranks; ++r) {
      out.load[static_cast<size_t>(l) * p.n_ranks + r] = load[r];
      total[r] += load[r];
    }
  }
  out.step_imbalance = sum_mean > 0 ? sum_max / sum_mean : 1.0;
  const double total_mean = static_cast<double>(std::accumulate(total.begin(), total.end(), int64_t{0})) / p.n_ranks;
  out.total_imbalance = ratio_max_mean(max_of(total), total_mean);
  return out;
}

double ParallelSimResult::mean_imbalance() const {
  if (step_imbalance.empty()) return 1.0;
  return std::accumulate(step_imbalance.begin(), step_imbalance.end(), 0.0) / static_cast<double>(step_imbalance.size());
}

namespace {

void check_bound(const ParallelBoundParams& b) {
  if (!(b.hbm_gbps > 0)) fail("parallel bound: hbm_gbps is {}, expected a positive bandwidth in GB/s", b.hbm_gbps);
  if (b.expert_bytes < 0 || b.dense_layer_bytes < 0 || b.step_bytes < 0 || b.collective_ns_per_layer < 0)
    fail("parallel bound: expert_bytes {}, dense_layer_bytes {}, step_bytes {}, collective_ns_per_layer {}: "
         "expected all >= 0",
         b.expert_bytes, b.dense_layer_bytes, b.step_bytes, b.collective_ns_per_layer);
}

int64_t bytes_ns(int64_t bytes, double gbps) { return static_cast<int64_t>(static_cast<double>(bytes) / gbps); }

// holds(layer, expert, rank): does `rank` run (a share of) this expert.
template <class Holds>
ParallelSimResult simulate_ranks(const RoutingTrace& trace, int n_ranks, const ParallelBoundParams& b, Holds holds) {
  check_bound(b);
  validate_trace(trace, "parallel simulation trace");
  const int N = n_ranks, E = trace.n_experts;
  ParallelSimResult out;
  out.n_ranks = N;
  out.n_steps = trace.n_steps();
  out.tokens = trace.n_tokens();
  std::vector<char> used(E);
  std::vector<int64_t> lbytes(N);
  for (int s = 0; s < trace.n_steps(); ++s) {
    std::vector<int64_t> rows(N, 0), experts(N, 0), bytes(N, b.step_bytes);
    int64_t ns = bytes_ns(b.step_bytes, b.hbm_gbps);
    double sum_max = 0, sum_mean = 0;
    for (int l = 0; l < trace.n_layers; ++l) {
      std::fill(used.begin(), used.end(), 0);
      for (int32_t e : trace.ids(s, l)) {
        used[e] = 1;
        for (int r = 0; r < N; ++r)
          if (holds(l, e, r)) ++rows[r];
      }
      std::fill(lbytes.begin(), lbytes.end(), b.dense_layer_bytes);
      for (int e = 0; e < E; ++e)
        for (int r = 0; r < N && used[e]; ++r)
          if (holds(l, e, r)) {
            ++experts[r];
            lbytes[r] += b.expert_bytes;
          }
      const int64_t mx = max_of(lbytes);
      sum_max += static_cast<double>(mx);
      sum_mean += static_cast<double>(std::accumulate(lbytes.begin(), lbytes.end(), int64_t{0})) / N;
      for (int r = 0; r < N; ++r) bytes[r] += lbytes[r];
      ns += bytes_ns(mx, b.hbm_gbps) + b.collective_ns_per_layer;
    }
    out.rank_rows.insert(out.rank_rows.end(), rows.begin(), rows.end());
    out.rank_experts.insert(out.rank_experts.end(), experts.begin(), experts.end());
    out.rank_bytes.insert(out.rank_bytes.end(), bytes.begin(), bytes.end());
    out.step_imbalance.push_back(sum_mean > 0 ? sum_max / sum_mean : 1.0);
    out.step_ns.push_back(ns);
    out.decode_ns += ns;
  }
  out.tokens_per_s = out.decode_ns > 0 ? static_cast<double>(out.tokens) * 1e9 / static_cast<double>(out.decode_ns)
                                       : std::numeric_limits<double>::infinity();
  return out;
}

}  // namespace

ParallelSimResult simulate_expert_parallel(const RoutingTrace& trace, const ExpertPlacement& p,
                                           const ParallelBoundParams& b) {
  validate_placement(p, "placement " + p.policy);
  if (trace.n_layers != p.n_layers || trace.n_experts != p.n_experts)
    fail("parallel simulation: trace has {} layers x {} experts, placement {} has {} x {}", trace.n_layers,
         trace.n_experts, p.policy, p.n_layers, p.n_experts);
  return simulate_ranks(trace, p.n_ranks, b, [&](int l, int e, int r) { return p.rank(l, e) == r; });
}

ParallelSimResult simulate_tensor_parallel(const RoutingTrace& trace, int n_ranks, const ParallelBoundParams& b) {
  if (n_ranks <= 0) fail("parallel simulation: ranks is {}, expected a positive integer", n_ranks);
  return simulate_ranks(trace, n_ranks, b, [](int, int, int) { return true; });
}

}  // namespace moebench
