// hybrid_split.cpp: see hybrid_split.h.
#include "variants/hybrid_split.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "common/error.h"

namespace moebench {

ExpertExec parse_expert_exec(const std::string& s, const std::string& what) {
  if (s == "gpu") return ExpertExec::gpu;
  if (s == "cpu") return ExpertExec::cpu;
  if (s == "hybrid") return ExpertExec::hybrid;
  fail("{}={}: expected one of gpu|cpu|hybrid", what, s);
}

const char* expert_exec_name(ExpertExec e) {
  switch (e) {
    case ExpertExec::gpu: return "gpu";
    case ExpertExec::cpu: return "cpu";
    case ExpertExec::hybrid: return "hybrid";
  }
  return "?";
}

void check_hybrid_rates(const HybridRates& r, const std::string& what) {
  if (!(r.copy_gbps > 0)) fail("{}: copy_gbps is {}, expected a positive bandwidth in GB/s", what, r.copy_gbps);
  if (!(r.host_gbps > 0)) fail("{}: host_gbps is {}, expected a positive bandwidth in GB/s", what, r.host_gbps);
  if (r.expert_bytes <= 0) fail("{}: expert_bytes is {}, expected a positive size", what, r.expert_bytes);
  if (r.host_overhead_ns < 0) fail("{}: host_overhead_ns is {}, expected >= 0", what, r.host_overhead_ns);
  const double slowest = static_cast<double>(r.expert_bytes) / std::min(r.copy_gbps, r.host_gbps);
  if (!(slowest < 0x1p52))
    fail("{}: one expert takes {:.3g} ns on the slower link, over the 2^52 ns the model holds", what, slowest);
}

int64_t copy_ns_per_expert(const HybridRates& r) {
  return std::llround(static_cast<double>(r.expert_bytes) / r.copy_gbps);
}
int64_t host_ns_per_expert(const HybridRates& r) {
  return std::llround(static_cast<double>(r.expert_bytes) / r.host_gbps);
}

namespace {

// The best split of n misses: (host count, the end of the slower link).
std::pair<int, int64_t> best_split(int n_miss, int64_t backlog_ns, const HybridRates& r) {
  const int64_t c = copy_ns_per_expert(r), h = host_ns_per_expert(r);
  const int64_t backlog = std::max<int64_t>(0, backlog_ns);
  int best = 0;
  int64_t best_end = backlog + std::max(0, n_miss) * c;
  for (int n_host = 1; n_host <= n_miss; ++n_host) {
    const int64_t end = std::max(backlog + (n_miss - n_host) * c, r.host_overhead_ns + n_host * h);
    if (end < best_end) best = n_host, best_end = end;
  }
  return {best, n_miss > 0 ? best_end : 0};
}

}  // namespace

int hybrid_host_count(int n_miss, int64_t backlog_ns, const HybridRates& r) {
  return n_miss <= 0 ? 0 : best_split(n_miss, backlog_ns, r).first;
}

int64_t hybrid_split_end_ns(int n_miss, int64_t backlog_ns, const HybridRates& r) {
  return best_split(n_miss, backlog_ns, r).second;
}

int host_count_for(ExpertExec exec, int cpu_moe_layers, int layer, int n_miss, int64_t backlog_ns,
                   const HybridRates& r) {
  if (layer < cpu_moe_layers) return n_miss;
  switch (exec) {
    case ExpertExec::gpu: return 0;
    case ExpertExec::cpu: return n_miss;
    case ExpertExec::hybrid: return hybrid_host_count(n_miss, backlog_ns, r);
  }
  return 0;
}

int hybrid_prefetch_count(int n_pred, int64_t backlog_ns, int64_t layer_left_ns, const HybridRates& r) {
  const int64_t c = copy_ns_per_expert(r);
  const int64_t backlog = std::max<int64_t>(0, backlog_ns), left = std::max<int64_t>(0, layer_left_ns);
  int best = 0;
  int64_t best_end = INT64_MAX;
  for (int k = 0; k <= n_pred; ++k) {
    // The link's queue when the next layer starts, its k copies ahead included.
    const int64_t queued = std::max<int64_t>(0, backlog + k * c - left);
    const int64_t end = std::max(queued, hybrid_split_end_ns(n_pred - k, queued, r));
    if (end < best_end) best = k, best_end = end;  // ties: leave it (no link time spent on a guess)
  }
  return best;
}

int64_t hybrid_layer_left_ns(int64_t backlog_ns, int n_host, const HybridRates& r) {
  const int64_t host = n_host > 0 ? r.host_overhead_ns + n_host * host_ns_per_expert(r) : 0;
  return std::max(std::max<int64_t>(0, backlog_ns), host);
}

void keep_prefetches(const ExpertCache& cache, int layer, std::span<const int32_t> ids, int k,
                     std::vector<int32_t>& out) {
  out.clear();
  std::vector<int32_t> kept;
  for (int32_t e : ids) {
    if (cache.slot_of(ExpertKey{layer, e}) >= 0 || std::find(kept.begin(), kept.end(), e) != kept.end()) {
      out.push_back(e);
      continue;
    }
    if (static_cast<int>(kept.size()) < k) {
      kept.push_back(e);
      out.push_back(e);
    }
  }
}

bool prefetch_allowed(ExpertExec exec, int cpu_moe_layers, int layer) {
  return exec != ExpertExec::cpu && layer >= cpu_moe_layers;
}

void distinct_misses(const ExpertCache& cache, int layer, std::span<const int32_t> ids, std::vector<int32_t>& out) {
  out.clear();
  const int E = cache.shape().n_experts;
  for (int32_t e : ids) {
    if (e < 0 || e >= E) fail("hybrid split: expert id {} at layer {} out of range [0, {})", e, layer, E);
    if (cache.slot_of(ExpertKey{layer, e}) >= 0) continue;
    if (std::find(out.begin(), out.end(), e) == out.end()) out.push_back(e);
  }
}

void mark_host_experts(std::span<const int32_t> misses, int n_host, int n_experts, std::vector<char>& host) {
  host.assign(static_cast<size_t>(n_experts), 0);
  const int n = static_cast<int>(misses.size());
  if (n_host < 0 || n_host > n) fail("hybrid split: {} host experts of {} misses", n_host, n);
  for (int i = n - n_host; i < n; ++i) host[misses[i]] = 1;
}

double hybrid_link_seconds(double bytes, double copy_gbps, double host_gbps) {
  const double gbps = std::max(0.0, copy_gbps) + std::max(0.0, host_gbps);
  if (!(gbps > 0)) fail("hybrid bound: no link has a positive bandwidth");
  return bytes / (gbps * 1e9);
}

}  // namespace moebench
