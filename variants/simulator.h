// simulator.h: trace-driven expert-cache simulator. Replays a RoutingTrace through
// the same ExpertCache the engine uses (same calls, same order: see expert_cache.h),
// so hit rates are the engine's for the same trace, predictions and capacity; then
// projects decode speed over one host->device link.
//
// Time model (all int64 ns, one token-step after another, layers in order):
//   - one copy engine: loads are served FIFO, one at a time, each taking
//     expert_bytes / h2d_gbps ns; warm-up loads happen before step 0 and are not
//     counted in the decode time (they are reported as warm_bytes);
//   - layer l of a step starts when the previous layer's compute ended; its demand
//     misses are queued on the link then, and its compute (compute_ns_per_layer x
//     n_tokens of the step) starts only when every expert it needs has landed:
//     demand loads are NOT overlapped with compute;
//   - prefetch: at the start of layer l's compute, the loads for layer l+1's
//     predicted experts are queued on the link; they overlap layer l's compute, and
//     layer l+1 waits only for those of them it actually uses (plus its misses,
//     queued behind them). No prefetch from the last layer into the next token.
//   - decode_ns = end of the last layer of the last step; tokens_per_s =
//     tokens / decode_ns (infinite when nothing takes time: reported as such).
// The host link (SimOptions::exec other than gpu, or cpu_moe_layers): at the start of
// layer l the misses are split by the cost model of hybrid_split.h (the same calls as
// the engine: the link's backlog is link_free - now); the copied ones queue on the
// link as above, the host ones on a second clock, the host, which starts them when the
// layer starts (after the host's previous work) and takes host_overhead_ns plus
// expert_bytes / host_gbps each; the layer's compute starts when both are done. With
// split_units > 1 a split expert's host parts go on the host's clock and its copied parts
// on the link's after the layer's copies (into the scratch slot: nothing cached).
// Prefetch is not issued into layers below cpu_moe_layers (their experts have no slot),
// nor at all with exec cpu (hybrid_split.h prefetch_allowed);
// with the host link the prefetches queue from the layer's start (the engine issues
// them before the host computes), and hybrid copies ahead only the predicted experts
// hybrid_prefetch_count allows (the rest are left for the split when needed).
// The joint model (LinkParams joint_copy_gbps, joint_host_gbps > 0, with the host link):
// both links read host memory, so while the host computes and copies run each goes at its
// joint rate (the copies at joint_copy / h2d of their speed, the host at joint_host /
// host), alone at its own. The link and the host then run as two fluid queues over one
// clock: the copies FIFO, the host's work of a layer after its fixed cost; a copy lands
// when its bytes are through. Without joint rates each runs at its own rate as above.
// The prompt (SimOptions::prefill_tokens > 0): the trace's first prefill_tokens steps are
// the prefill, run through the cache before decode as the engine runs it — one forward
// for the whole prompt when the slots hold a layer's experts, else chunks of
// max(1, capacity / top_k) tokens, every miss loaded (the cpu layers' on the
// host), no prefetch, not timed — so decode starts with the cache the prefill left; the
// counters and bytes are decode's alone. With runs / warmup_runs the whole trace is
// replayed (each run: what is in flight lands, the prompt, the decode; the prediction
// draws restart), the timed runs' decode adding up.
// Predictions for `prefetch`: the true choices of layer l+1 at the same step from
// the trace, each predicted id kept with probability `accuracy`, otherwise
// replaced by a random expert outside the token's true top-k (seeded). accuracy 1
// is the oracle; the engine predicts with the next layer's gate instead.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "variants/expert_cache.h"
#include "variants/hybrid_split.h"
#include "variants/routing_trace.h"

namespace moebench {

inline constexpr int64_t kMixtral8x7bExpertBytes = 352321536;  // 3 x 4096 x 14336 x 2 (bf16)

struct LinkParams {
  double h2d_gbps = 25.0;                          // host->device, GB/s (1e9 bytes/s)
  int64_t expert_bytes = kMixtral8x7bExpertBytes;  // bytes of one expert
  int64_t compute_ns_per_layer = 0;                // resident compute of one token through one layer
  double host_gbps = 0;                            // the host kernel's weight read, GB/s (host link)
  int64_t host_overhead_ns = 0;                    // fixed cost of a layer with host work
  int split_units = 1;                             // hybrid: parts an expert may be split into (1: whole)
  bool split_copies = false;                       // hybrid: parts may replace whole copies (hybrid_split.h)
  // hybrid with split_units > 1: the engine's hybrid_split=balance — the link's share of each
  // layer's parts from BalanceShare (hybrid_split.h), fed whether the layer's copies were
  // still running when its host work ended; nothing copied ahead.
  bool split_balance = false;
  double joint_copy_gbps = 0;                      // the copies' rate while the host computes too (0: none)
  double joint_host_gbps = 0;                      // the host's rate while copies run too (0: none)
  double model_copy_gbps = 0;  // hybrid: the copy rate the split decides with (0: h2d_gbps, the rate copies run at)
};

struct PrefetchPrediction {
  double accuracy = 1.0;  // share of predicted ids that are the true next-layer choice
  uint64_t seed = 1;
};

struct SimResult {
  std::string policy;
  int capacity = 0;
  CacheCounters counters;
  int64_t tokens = 0;
  int64_t demand_bytes = 0;    // misses x expert_bytes
  int64_t prefetch_bytes = 0;  // speculative loads x expert_bytes
  int64_t warm_bytes = 0;      // warm-up loads x expert_bytes (before step 0)
  int64_t decode_ns = 0;       // projected time of all steps
  int64_t stall_ns = 0;        // compute waiting for loads
  double tokens_per_s = 0;     // tokens / decode_ns; +inf when decode_ns == 0
  int64_t host_bytes = 0;      // expert bytes computed on the host (split experts' host parts included)
  int64_t split_bytes = 0;     // split experts' parts copied to the scratch slot (not cached)
  int64_t host_busy_ns = 0;    // the host link's busy time
  int64_t copy_busy_ns = 0;    // the copy link's busy time (warm-up excluded)
  // split_balance: the link's parts at the end for a layer of 1, 2 misses (empty without)
  std::vector<int> balance_link_units;
  std::string error;           // sweep only: why this case could not run (e.g. preload-all too big)
  double hit_rate() const { return counters.hit_rate(); }
  int64_t bytes_moved() const { return demand_bytes + prefetch_bytes + warm_bytes + split_bytes; }
};

struct SimOptions {
  LinkParams link;
  PrefetchPrediction prediction;
  // (layers, experts) routing counts for `static`; empty: the simulated trace's own
  // counts, i.e. oracle popularity (pass counts from another trace for an honest one).
  std::vector<int64_t> static_usage;
  ExpertExec exec = ExpertExec::gpu;  // where misses are computed (hybrid_split.h)
  int cpu_moe_layers = 0;             // layers whose experts all stay on the host
  int prefill_tokens = 0;             // the trace's first steps that are the prompt (not timed)
  // The trace (its prompt, then its decode) replayed warmup_runs + runs times on one cache,
  // as the engine runs a case's warm-up and repetitions (the routing restarts every
  // generation; the cache keeps what it holds); only the last `runs` are timed.
  int runs = 1;
  int warmup_runs = 0;
  // The warm-up runs' routing (null: `trace` itself). The engine's warm-ups draw other
  // choices (another routing stream of the same source) so that the cache is not trained
  // on the very tokens it is then measured on; same shape and steps as the trace.
  const RoutingTrace* warmup_trace = nullptr;
};

// One policy at one capacity. Throws Error for a bad policy name, a capacity below
// top_k, preload-all without room, or bad link parameters.
SimResult simulate(const RoutingTrace& trace, const std::string& policy, int capacity, const SimOptions& opt);

// Every capacity x policy, capacity-major in the order given (one row each). A case
// the policy refuses (preload-all short of slots, capacity < top_k) becomes a row
// with `error` set instead of failing the sweep; a bad policy name still throws.
std::vector<SimResult> simulate_sweep(const RoutingTrace& trace, std::span<const std::string> policies,
                                      std::span<const int> capacities, const SimOptions& opt);

}  // namespace moebench
