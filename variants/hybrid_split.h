// hybrid_split.h: where a missed expert is computed (EngineSettings expert_exec,
// cpu_moe_layers), and the cost model of expert_exec=hybrid that splits one layer's
// misses between the two links: copies over host->device (then the GPU computes the
// expert from its slot) and the host's own read of the expert from its pinned copy
// (the CPU kernel computes it there; only the token's activations cross the bus).
// The engine (engine/cuda) and the simulator (variants/simulator.h) call the same
// functions in the same order, so they split the same misses the same way for the
// same rates.
//
// Model of one layer: the copies still queued on the link finish in `backlog_ns`;
// copying c more experts ends at backlog_ns + c * copy_ns; computing h on the host
// ends at overhead_ns + h * host_ns (overhead_ns: the activations down, the results up,
// the synchronisations; 0 when h == 0). The split takes the h in [0, n] with the
// smallest max of the two ends — both links finish together as nearly as whole experts
// allow — and on a tie the fewer host experts.
//
// Split experts (HybridRates::split_units U > 1): one miss may be shared by the links,
// its intermediate rows cut into U parts. The host computes parts [0, j) (rows of w1
// and w3, the matching columns of w2), the link copies the rest into a scratch slot (not
// cached) and the GPU computes them; the two partial outputs are summed. The whole-expert
// split above comes first (its copies land in the cache and may hit later; a split part
// does not); then the first of its host experts may give parts back to the link, the j
// in [1, U) of its U parts kept on the host that ends the layer strictly earlier: the
// link's share of it ends at backlog_ns + (copied + (U - j) / U) x copy_ns, the host at
// overhead_ns + (n_host - 1 + j / U) x host_ns. With split_copies the parts run over
// all n x U parts of the layer (copies may give way to parts: both links end together,
// but nothing new lands in the cache).
//
// The joint model (HybridRates joint_copy_gbps, joint_host_gbps > 0): both links read the
// same host memory, so while both run each is slower than alone (measured at load: the
// copies and the host kernel at once). The layer's times then come from
// two_link_times(): the link alone during the host's fixed cost, both at their joint
// rates until one is done, the other alone to its end. The splits and the copies ahead
// above compare those ends instead of each link's solo end; without joint rates they are
// the solo ends (each link at its own rate, max of the two).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "variants/expert_cache.h"

namespace moebench {

enum class ExpertExec { gpu, cpu, hybrid };
// Parses "gpu" | "cpu" | "hybrid"; throws Error naming `what`, the value and the choices.
ExpertExec parse_expert_exec(const std::string& s, const std::string& what);
const char* expert_exec_name(ExpertExec e);

// The two links' rates as measured (GB/s = bytes per ns).
struct HybridRates {
  double copy_gbps = 0;          // host->device copies of whole experts
  double host_gbps = 0;          // the host kernel's read of expert weights
  int64_t expert_bytes = 0;      // bytes of one expert in its format
  int64_t host_overhead_ns = 0;  // fixed cost of a layer with host work
  int split_units = 1;           // parts one expert's rows may be split into (1: whole experts)
  bool split_copies = false;     // parts may replace whole copies too (else only host experts split)
  // Each link's rate while the other runs too (both read host memory); 0: not measured,
  // each link at its solo rate whatever the other does.
  double joint_copy_gbps = 0;
  double joint_host_gbps = 0;
  bool joint() const { return joint_copy_gbps > 0 && joint_host_gbps > 0; }
};

// When a layer's two links end, from the layer's start: the link has `copy_ns` of copies
// queued (solo time), the host `host_ns` of kernel work (solo time, 0: none) that starts
// after host_overhead_ns. With joint rates, while both run the copies progress at
// joint_copy / copy of their solo speed and the host at joint_host / host; without, each
// at its own (copy_end = copy_ns, host_end = overhead + host_ns).
struct TwoLinkTimes {
  int64_t copy_end_ns = 0;
  int64_t host_end_ns = 0;  // 0 without host work
  int64_t end_ns() const { return copy_end_ns > host_end_ns ? copy_end_ns : host_end_ns; }
};
TwoLinkTimes two_link_times(int64_t copy_ns, int64_t host_ns, const HybridRates& r);
// The link's queue (solo ns) still left at `at_ns` after the layer's start, as above.
int64_t two_link_copy_left_ns(int64_t copy_ns, int64_t host_ns, const HybridRates& r, int64_t at_ns);

// The parts an expert of `inter` intermediate rows splits into: parts of 256 rows (a
// part's w2 columns are a 512-byte run of each bf16 row, two whole int4 / fp8 scale
// groups) where inter is a multiple of 256 and at least two parts, else parts of 32 rows
// likewise (small test models; bf16 and int8 only, engine/expert_part.h), else 1 (no split).
int split_units_for(int64_t inter);

// One layer's plan: the last n_host misses whole on the host and, with split_parts > 0,
// split_parts of split_units parts of the miss before them (the split expert).
struct HybridPlan {
  int n_host = 0;
  int split_parts = 0;
  int split_units = 1;
  // Misses that take no slot: the whole host ones and the split one.
  int flagged() const { return n_host + (split_parts > 0 ? 1 : 0); }
  // Host parts in units of one expert / split_units.
  int64_t host_parts() const { return static_cast<int64_t>(n_host) * split_units + split_parts; }
};
// Throws Error naming the field when a rate or the size is not positive.
void check_hybrid_rates(const HybridRates& r, const std::string& what);

// Nanoseconds one expert takes on each link.
int64_t copy_ns_per_expert(const HybridRates& r);
int64_t host_ns_per_expert(const HybridRates& r);

// How many of `n_miss` missed experts to compute on the host (hybrid), by the model above.
int hybrid_host_count(int n_miss, int64_t backlog_ns, const HybridRates& r);

// The host count for one layer: gpu 0, cpu n_miss, hybrid hybrid_host_count; every miss
// of a layer below cpu_moe_layers.
int host_count_for(ExpertExec exec, int cpu_moe_layers, int layer, int n_miss, int64_t backlog_ns,
                   const HybridRates& r);

// The plan for one layer: gpu none; cpu, or a layer below cpu_moe_layers, every miss
// whole; hybrid the best split over parts (whole experts when split_units is 1, then
// n_host = host_count_for's).
HybridPlan hybrid_plan_for(ExpertExec exec, int cpu_moe_layers, int layer, int n_miss, int64_t backlog_ns,
                           const HybridRates& r);
// The host's time for a plan (overhead + host parts x host_ns / U; 0 without host work)
// and the link's for the split expert's copied parts ((U - split_parts) x copy_ns / U).
int64_t plan_host_ns(const HybridPlan& p, const HybridRates& r);
// The host's kernel work of a plan alone (plan_host_ns without the fixed cost).
int64_t plan_host_work_ns(const HybridPlan& p, const HybridRates& r);
int64_t plan_split_copy_ns(const HybridPlan& p, const HybridRates& r);

// The end of the slower link for the best split of n misses (0 for none).
int64_t hybrid_split_end_ns(int n_miss, int64_t backlog_ns, const HybridRates& r);

// hybrid: how many of the next layer's `n_pred` predicted, not resident experts to copy
// ahead (the first k; the others are split when the layer needs them). The link may
// run ahead of the layers, the host may not (it needs the layer's activations). With
// backlog_ns the link's queue now and layer_left_ns the time until the current layer
// ends, copying k ahead leaves q(k) = max(0, backlog + k * copy_ns - layer_left) queued
// when the next layer starts, which then ends at max(q(k), hybrid_split_end_ns(n - k,
// q(k))): the k with the earliest end, ties to the smaller k (a prediction may be wrong:
// a copy ahead that gains nothing spends link time on a guess).
int hybrid_prefetch_count(int n_pred, int64_t backlog_ns, int64_t layer_left_ns, const HybridRates& r);
// The same with the current layer's plan, for the joint model: copying k ahead may slow
// this layer's host work (both read host memory), so the current layer ends at LE(k) =
// max(the host's end with backlog + k copies queued, the backlog's end) and the next
// starts with q(k) = the queue left then; the k with the smallest LE(k) + the next
// layer's end from q(k), ties to the smaller k. Without joint rates LE(k) is the same for
// every k and this is the count above with layer_left = hybrid_layer_left_ns(backlog, p).
int hybrid_prefetch_count(int n_pred, int64_t backlog_ns, const HybridPlan& p, const HybridRates& r);
// The time until a layer ends by the model: the slower of the link's queue and the
// host's work (overhead + n_host x host_ns, or 0 without host experts).
int64_t hybrid_layer_left_ns(int64_t backlog_ns, int n_host, const HybridRates& r);
// The same for a plan with a split expert (its host parts counted); with joint rates the
// end of two_link_times(backlog, the plan's host work).
int64_t hybrid_layer_left_ns(int64_t backlog_ns, const HybridPlan& p, const HybridRates& r);
// `ids` ((n_tokens, top_k) predicted for `layer`) with the not resident experts after
// the first `k` distinct ones removed: what to pass to the cache's prefetch.
void keep_prefetches(const ExpertCache& cache, int layer, std::span<const int32_t> ids, int k,
                     std::vector<int32_t>& out);

// Whether prefetches may load experts of `layer`: not in cpu mode (misses are the
// host's; nothing is copied ahead) and not into the cpu layers (no slots there).
bool prefetch_allowed(ExpertExec exec, int cpu_moe_layers, int layer);

// The distinct experts of `ids` ((n_tokens, top_k) flat) of `layer` that are not
// resident in `cache`, in first-occurrence order: what access_layer would miss.
void distinct_misses(const ExpertCache& cache, int layer, std::span<const int32_t> ids, std::vector<int32_t>& out);

// Marks the last `n_host` of `misses` in `host` ((n_experts) flags, cleared first): those
// are computed on the host, the rest copied.
void mark_host_experts(std::span<const int32_t> misses, int n_host, int n_experts, std::vector<char>& host);

// Seconds the best split of `bytes` over the two links takes: the copies may run at
// any time (ahead of their layer too), the host not while the device runs a layer's
// attention and router (its input) — `host_idle_s` of every token, a lower limit of that
// device work. With T the time, the host carries at most host x (T - idle) and the link
// copy x T, so T >= (bytes + host x idle) / (copy + host) when that leaves the host work
// (bytes >= copy x idle), else bytes / copy. idle 0: bytes / (copy + host). The hybrid
// bound's link term. joint_gbps > 0: the two links' reads of host memory together when
// both run (measured), so while the host may run both carry at most
// min(copy + host, max(joint, copy, host)): T >= idle + (bytes - copy x idle) / that.
double hybrid_link_seconds(double bytes, double copy_gbps, double host_gbps, double host_idle_s = 0,
                           double joint_gbps = 0);

// A rate measured as it goes: bytes and busy time summed; gbps() falls back to
// `initial` until something was measured.
class MeasuredRate {
 public:
  explicit MeasuredRate(double initial_gbps = 0) : initial_(initial_gbps) {}
  void add(int64_t bytes, int64_t ns) {
    bytes_ += bytes;
    ns_ += ns;
  }
  double gbps() const { return ns_ > 0 && bytes_ > 0 ? static_cast<double>(bytes_) / static_cast<double>(ns_) : initial_; }
  int64_t bytes() const { return bytes_; }
  int64_t ns() const { return ns_; }

 private:
  double initial_ = 0;
  int64_t bytes_ = 0, ns_ = 0;
};

// A rate learned as it goes, recent samples weighing more: before each sample is added
// the bytes and the busy time summed so far are multiplied by `keep` (in (0, 1]; 1: the
// plain sum of MeasuredRate), so the rate is bytes over time with older samples fading.
// gbps() falls back to `initial` until `min_samples` samples were added.
class DecayingRate {
 public:
  explicit DecayingRate(double keep = 0.8, int min_samples = 4, double initial_gbps = 0);
  void add(int64_t bytes, int64_t ns);
  double gbps() const;
  bool learned() const { return samples_ >= min_samples_; }
  int samples() const { return samples_; }

 private:
  double keep_ = 0.8, initial_ = 0, bytes_ = 0, ns_ = 0;
  int min_samples_ = 4, samples_ = 0;
};

// The joint model's rates learned from decode's own steps (setting hybrid_rates=decode):
// what the two links give beside each other in decode, where the load-time measurement
// (one window of whole-expert copies beside cold host experts, the device otherwise idle)
// may differ — the host ran at 72 GB/s beside decode's copies against 88.6 in the
// measurement of the same load. Samples:
// - copies(): the copies that finished between two decode layers, with whether the host
//   had work in that interval (the copies then ran beside it: the joint copy rate; else
//   none is learned from them — a copy alone is at the solo rate, measured at load);
// - host(): one layer's host kernel work, with whether copies were in flight when it
//   started and when it ended (both: it ran beside copies, the joint host rate; neither
//   at the start: alone, the host's solo rate; else mixed and not counted).
// apply() puts each learned rate in place of the load-time one once it has its samples.
class DecodeLinkRates {
 public:
  explicit DecodeLinkRates(double keep = 0.8, int min_samples = 4);
  void copies(int64_t bytes, int64_t ns, bool host_busy);
  void host(int64_t bytes, int64_t ns, bool copies_at_start, bool copies_at_end);
  // `load` with the learned rates (joint_copy_gbps, joint_host_gbps, host_gbps) in place
  // where learned; unchanged without joint rates (nothing to learn them into).
  HybridRates apply(const HybridRates& load) const;
  const DecayingRate& joint_copy() const { return joint_copy_; }
  const DecayingRate& joint_host() const { return joint_host_; }
  const DecayingRate& solo_host() const { return solo_host_; }

 private:
  DecayingRate joint_copy_, joint_host_, solo_host_;
};

// hybrid_split=balance: the link's share of a layer's misses set by feedback from the
// layers' own outcome instead of by rates. It starts from cpu mode's schedule (every miss
// on the host, nothing copied ahead) and gives the link `link_units(n)` of the layer's
// n x U parts (U = split_units): the first whole experts copied, then one expert split
// (its last parts copied, its first kept on the host), the rest whole on the host; the
// host always keeps at least one part (a layer must give the loop its outcome). After
// each layer observe() says whether the link's share was still in flight when the host
// finished: then the link was the later one and its share shrinks by one part, else it
// grows by one — so both links end each layer together, as nearly as one part allows,
// at whatever rates they reach beside each other (no rate model, no calibration). One
// share per miss count (1 .. kMaxMisses; more share the last), each starting at
// `initial_share` of the layer's parts.
class BalanceShare {
 public:
  static constexpr int kMaxMisses = 8;
  // Throws Error naming the value when split_units < 2 or initial_share is not in [0, 1].
  BalanceShare(int split_units, double initial_share);
  int link_units(int n_miss) const;
  HybridPlan plan(int n_miss) const;
  void observe(int n_miss, bool link_late);
  int split_units() const { return units_; }

 private:
  int units_ = 1;
  double initial_ = 0;
  int link_[kMaxMisses + 1] = {};
  bool seen_[kMaxMisses + 1] = {};
};
// The starting share for BalanceShare: the link's part of both links' joint read
// (joint_copy / (joint_copy + joint_host); each link's solo rate without joint rates).
double balance_initial_share(const HybridRates& r);

// A link's solo rate for the joint model: at least what it measured beside the other link
// (alone it cannot be slower; a solo measurement under the joint one was disturbed — on
// the 16-core H200 host the 4 solo copies after the host kernel's measurement gave 26.9
// and 27.6 GB/s in two loads where the copies beside the host gave 45.0 and 47.7).
double solo_rate_for_joint(double solo_gbps, double joint_gbps);

}  // namespace moebench
