// hybrid_split.cpp: see hybrid_split.h.
#include "variants/hybrid_split.h"

#include <algorithm>
#include <cmath>
#include <tuple>
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
  if (r.split_units < 1 || r.split_units > 4096)
    fail("{}: split_units is {}, expected 1 (whole experts) .. 4096", what, r.split_units);
  if (r.joint_copy_gbps < 0 || r.joint_host_gbps < 0)
    fail("{}: joint rates {} / {} GB/s, expected >= 0 (0: not measured)", what, r.joint_copy_gbps, r.joint_host_gbps);
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

int split_units_for(int64_t inter) {
  for (int64_t rows : {256, 32})
    if (inter >= 2 * rows && inter % rows == 0) return static_cast<int>(std::min<int64_t>(inter / rows, 4096));
  return 1;
}

namespace {

// Each link's speed while both run, as a share of its solo speed (1 without joint rates).
std::pair<double, double> joint_shares(const HybridRates& r) {
  if (!r.joint()) return {1.0, 1.0};
  return {std::clamp(r.joint_copy_gbps / r.copy_gbps, 1e-6, 1.0), std::clamp(r.joint_host_gbps / r.host_gbps, 1e-6, 1.0)};
}

// The two-phase schedule of two_link_times: (the time both run, the copy's solo ns done
// by then) after the host's fixed cost `o`.
struct Phases {
  double o = 0, both = 0, copy_left = 0, host = 0, fc = 1, fh = 1;
};
Phases phases(int64_t copy_ns, int64_t host_ns, const HybridRates& r) {
  Phases p;
  std::tie(p.fc, p.fh) = joint_shares(r);
  p.o = static_cast<double>(r.host_overhead_ns);
  p.copy_left = std::max(0.0, static_cast<double>(std::max<int64_t>(0, copy_ns)) - p.o);  // after the fixed cost
  p.host = static_cast<double>(std::max<int64_t>(0, host_ns));
  p.both = std::min(p.copy_left / p.fc, p.host / p.fh);
  return p;
}

}  // namespace

TwoLinkTimes two_link_times(int64_t copy_ns, int64_t host_ns, const HybridRates& r) {
  TwoLinkTimes t;
  copy_ns = std::max<int64_t>(0, copy_ns);
  if (host_ns <= 0) {
    t.copy_end_ns = copy_ns;
    return t;
  }
  if (!r.joint()) {
    t.copy_end_ns = copy_ns;
    t.host_end_ns = r.host_overhead_ns + host_ns;
    return t;
  }
  const Phases p = phases(copy_ns, host_ns, r);
  // both run for p.both, then the one left runs alone
  const double copy_end = p.copy_left > 0 ? p.o + p.both + (p.copy_left - p.both * p.fc) : static_cast<double>(copy_ns);
  const double host_end = p.o + p.both + (p.host - p.both * p.fh);
  t.copy_end_ns = std::llround(copy_end);
  t.host_end_ns = std::llround(host_end);
  return t;
}

int64_t two_link_copy_left_ns(int64_t copy_ns, int64_t host_ns, const HybridRates& r, int64_t at_ns) {
  copy_ns = std::max<int64_t>(0, copy_ns);
  const double at = static_cast<double>(std::max<int64_t>(0, at_ns));
  if (host_ns <= 0 || !r.joint()) return std::max<int64_t>(0, copy_ns - std::max<int64_t>(0, at_ns));
  const Phases p = phases(copy_ns, host_ns, r);
  double done = std::min(at, p.o);                          // alone during the fixed cost
  done += std::min(std::max(0.0, at - p.o), p.both) * p.fc;  // beside the host
  done += std::max(0.0, at - p.o - p.both);                  // alone again
  return std::max<int64_t>(0, std::llround(static_cast<double>(copy_ns) - done));
}

namespace {

// The end of a layer whose link has copy_ns queued and whose host has host_ns of work.
int64_t layer_end(int64_t copy_ns, int64_t host_ns, const HybridRates& r) {
  return two_link_times(copy_ns, host_ns, r).end_ns();
}

// The best split of n misses: (host parts, the end of the slower link). First whole
// experts (the h in 0..n); then, with parts (U > 1) and h > 0, the first of the h host
// experts may give parts back to the link: its u in ((h - 1) U, h U) host parts, where
// that ends the layer strictly earlier. The copied whole experts stay as whole experts
// decided: a copy lands in the cache and may hit later; a split part does not. With
// split_copies, any u in [0, n U] (copies may give way to parts too), where it ends
// strictly earlier than the whole-expert split.
std::pair<int64_t, int64_t> best_split(int n_miss, int64_t backlog_ns, const HybridRates& r) {
  const int64_t c = copy_ns_per_expert(r), h = host_ns_per_expert(r), U = std::max(1, r.split_units);
  const int64_t backlog = std::max<int64_t>(0, backlog_ns);
  const int n = std::max(0, n_miss);
  int best = 0;
  int64_t best_end = backlog + n * c;
  for (int n_host = 1; n_host <= n; ++n_host) {
    const int64_t end = layer_end(backlog + (n - n_host) * c, n_host * h, r);
    if (end < best_end) best = n_host, best_end = end;
  }
  int64_t best_u = best * U;
  if (U > 1 && r.split_copies) {  // any parts: copies may give way to parts too
    const int64_t parts = static_cast<int64_t>(n) * U;
    for (int64_t u = 0; u <= parts; ++u) {
      const int64_t end = layer_end(backlog + (parts - u) * c / U, u * h / U, r);
      if (end < best_end) best_u = u, best_end = end;
    }
  } else if (U > 1 && best > 0) {
    const int64_t copied_end = backlog + (n - best) * c;
    for (int64_t u = best * U - 1; u > (best - 1) * U; --u) {
      const int64_t end = layer_end(copied_end + (best * U - u) * c / U, u * h / U, r);
      if (end < best_end) best_u = u, best_end = end;
    }
  }
  return {best_u, n > 0 ? best_end : 0};
}

}  // namespace

int hybrid_host_count(int n_miss, int64_t backlog_ns, const HybridRates& r) {
  HybridRates whole = r;
  whole.split_units = 1;
  return n_miss <= 0 ? 0 : static_cast<int>(best_split(n_miss, backlog_ns, whole).first);
}

HybridPlan hybrid_plan_for(ExpertExec exec, int cpu_moe_layers, int layer, int n_miss, int64_t backlog_ns,
                           const HybridRates& r) {
  HybridPlan p;
  p.split_units = std::max(1, r.split_units);
  if (n_miss <= 0) return p;
  if (layer < cpu_moe_layers || exec == ExpertExec::cpu) {
    p.n_host = n_miss;
  } else if (exec == ExpertExec::hybrid) {
    const int64_t u = best_split(n_miss, backlog_ns, r).first;
    p.n_host = static_cast<int>(u / p.split_units);
    p.split_parts = static_cast<int>(u % p.split_units);
  }
  return p;
}

int64_t plan_host_ns(const HybridPlan& p, const HybridRates& r) {
  const int64_t parts = p.host_parts();
  return parts > 0 ? r.host_overhead_ns + parts * host_ns_per_expert(r) / p.split_units : 0;
}

int64_t plan_host_work_ns(const HybridPlan& p, const HybridRates& r) {
  return p.host_parts() * host_ns_per_expert(r) / p.split_units;
}

int64_t plan_split_copy_ns(const HybridPlan& p, const HybridRates& r) {
  return p.split_parts > 0 ? (p.split_units - p.split_parts) * copy_ns_per_expert(r) / p.split_units : 0;
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

int hybrid_prefetch_count(int n_pred, int64_t backlog_ns, const HybridPlan& p, const HybridRates& r) {
  if (!r.joint()) return hybrid_prefetch_count(n_pred, backlog_ns, hybrid_layer_left_ns(backlog_ns, p, r), r);
  const int64_t c = copy_ns_per_expert(r), backlog = std::max<int64_t>(0, backlog_ns);
  const int64_t host = plan_host_work_ns(p, r);
  const int64_t backlog_end = two_link_times(backlog, host, r).copy_end_ns;  // copies ahead queue after it
  int best = 0;
  int64_t best_end = INT64_MAX;
  for (int k = 0; k <= n_pred; ++k) {
    const int64_t queue = backlog + k * c;
    const int64_t this_end = std::max(backlog_end, host > 0 ? two_link_times(queue, host, r).host_end_ns : 0);
    const int64_t queued = two_link_copy_left_ns(queue, host, r, this_end);
    const int64_t end = this_end + std::max(queued, hybrid_split_end_ns(n_pred - k, queued, r));
    if (end < best_end) best = k, best_end = end;  // ties: leave it
  }
  return best;
}

int64_t hybrid_layer_left_ns(int64_t backlog_ns, int n_host, const HybridRates& r) {
  return layer_end(backlog_ns, n_host > 0 ? n_host * host_ns_per_expert(r) : 0, r);
}

int64_t hybrid_layer_left_ns(int64_t backlog_ns, const HybridPlan& p, const HybridRates& r) {
  return layer_end(backlog_ns, plan_host_work_ns(p, r), r);
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

double hybrid_link_seconds(double bytes, double copy_gbps, double host_gbps, double host_idle_s, double joint_gbps) {
  const double c = std::max(0.0, copy_gbps) * 1e9, h = std::max(0.0, host_gbps) * 1e9;
  if (!(c + h > 0)) fail("hybrid bound: no link has a positive bandwidth");
  const double idle = std::max(0.0, host_idle_s);
  if (c > 0 && bytes < c * idle) return bytes / c;  // the link alone is done before the host could start
  // both links at once: their solo rates added, or less where their joint read is measured
  const double both = joint_gbps > 0 ? std::min(c + h, std::max({joint_gbps * 1e9, c, h})) : c + h;
  return idle + (bytes - c * idle) / both;
}

DecayingRate::DecayingRate(double keep, int min_samples, double initial_gbps)
    : keep_(keep), initial_(initial_gbps), min_samples_(min_samples) {
  if (!(keep > 0 && keep <= 1)) fail("decaying rate: keep {} expected in (0, 1]", keep);
  if (min_samples < 1) fail("decaying rate: min_samples {} expected >= 1", min_samples);
}

void DecayingRate::add(int64_t bytes, int64_t ns) {
  if (bytes <= 0 || ns <= 0) return;  // nothing measured
  bytes_ = bytes_ * keep_ + static_cast<double>(bytes);
  ns_ = ns_ * keep_ + static_cast<double>(ns);
  ++samples_;
}

double DecayingRate::gbps() const { return learned() && ns_ > 0 ? bytes_ / ns_ : initial_; }

DecodeLinkRates::DecodeLinkRates(double keep, int min_samples)
    : joint_copy_(keep, min_samples), joint_host_(keep, min_samples), solo_host_(keep, min_samples) {}

void DecodeLinkRates::copies(int64_t bytes, int64_t ns, bool host_busy) {
  if (host_busy) joint_copy_.add(bytes, ns);
}

void DecodeLinkRates::host(int64_t bytes, int64_t ns, bool copies_at_start, bool copies_at_end) {
  if (copies_at_start && copies_at_end)
    joint_host_.add(bytes, ns);
  else if (!copies_at_start)
    solo_host_.add(bytes, ns);
}

HybridRates DecodeLinkRates::apply(const HybridRates& load) const {
  HybridRates r = load;
  if (!load.joint()) return r;
  if (joint_copy_.learned()) r.joint_copy_gbps = joint_copy_.gbps();
  if (joint_host_.learned()) r.joint_host_gbps = joint_host_.gbps();
  if (solo_host_.learned()) r.host_gbps = solo_host_.gbps();
  return r;
}

BalanceShare::BalanceShare(int split_units, double initial_share) : units_(split_units), initial_(initial_share) {
  if (split_units < 2 || split_units > 4096)
    fail("hybrid_split=balance: split_units is {}, expected 2 .. 4096 (an expert's rows in parts)", split_units);
  if (!(initial_share >= 0 && initial_share <= 1))
    fail("hybrid_split=balance: initial share {}, expected a share in [0, 1]", initial_share);
}

int BalanceShare::link_units(int n_miss) const {
  if (n_miss <= 0) return 0;
  const int b = std::min(n_miss, kMaxMisses);
  const int total = n_miss * units_;
  const int units = seen_[b] ? link_[b] : static_cast<int>(std::lround(initial_ * total));
  return std::clamp(units, 0, total - 1);
}

HybridPlan BalanceShare::plan(int n_miss) const {
  HybridPlan p;
  p.split_units = units_;
  if (n_miss <= 0) return p;
  const int l = link_units(n_miss), copied = l / units_, rest = l % units_;
  p.split_parts = rest > 0 ? units_ - rest : 0;           // the split expert's parts on the host
  p.n_host = n_miss - copied - (rest > 0 ? 1 : 0);        // whole on the host
  return p;
}

void BalanceShare::observe(int n_miss, bool link_late) {
  if (n_miss <= 0) return;
  const int b = std::min(n_miss, kMaxMisses);
  const int units = link_units(n_miss) + (link_late ? -1 : 1);
  link_[b] = std::clamp(units, 0, n_miss * units_ - 1);
  seen_[b] = true;
}

double balance_initial_share(const HybridRates& r) {
  const double c = r.joint() ? r.joint_copy_gbps : r.copy_gbps, h = r.joint() ? r.joint_host_gbps : r.host_gbps;
  return c > 0 && h > 0 ? c / (c + h) : 0;
}

double solo_rate_for_joint(double solo_gbps, double joint_gbps) { return std::max(solo_gbps, joint_gbps); }

}  // namespace moebench
