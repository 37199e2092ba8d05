// placement.h: expert parallelism's placement — which GPU (rank) holds which
// (layer, expert) — its policies, the load balance a placement gives under routing
// statistics, and a trace-driven bound of multi-GPU decode.
//
// Policies (each rank holds at most ceil(experts / ranks) experts of a layer, so the
// expert memory per rank stays even):
//   round-robin  expert e of every layer on rank e % ranks
//   balanced     per layer, longest-processing-time greedy on routing counts: experts
//                by descending count, each to the least-loaded rank with room; then
//                pairwise swaps between the most-loaded rank and another while a swap
//                lowers the larger of the two loads; a layer keeps the round-robin
//                assignment where that one's most-loaded rank is lighter, so balanced
//                is never worse than round-robin on the counts it was given.
//
// Load of rank r in layer l = routings (token, k) to the experts of layer l it holds.
// Layers run one after another with a collective between them, so the figure that
// sets a step's time is per layer: step imbalance = sum over layers of the largest
// rank load / sum over layers of the mean rank load (1 = perfectly even).
//
// The bound (simulate_parallel): per step and layer every rank reads its dense bytes
// plus every expert (or expert slice) it runs at least once in that step; the layer
// cannot end before the slowest rank has read its bytes at hbm_gbps, and the next
// layer cannot start before the layer's collectives have taken their measured
// latency. Step time = step_bytes / hbm_gbps + sum over layers of (largest rank
// bytes / hbm_gbps + collective_ns_per_layer). Bytes it leaves out (the KV cache,
// activations) only lower it, so a measured step can never beat it.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "variants/routing_trace.h"

namespace moebench {

struct ExpertPlacement {
  std::string policy;
  int n_layers = 0;
  int n_experts = 0;
  int n_ranks = 0;
  std::vector<int> rank_of;  // (n_layers, n_experts)

  int rank(int layer, int expert) const { return rank_of[static_cast<size_t>(layer) * n_experts + expert]; }
  std::vector<int> experts_on(int layer, int rank) const;  // ascending ids
};

struct PlacementPolicyInfo {
  std::string name;
  std::string description;
};
const std::vector<PlacementPolicyInfo>& placement_policies();

// Checks the shape, every rank in range and no rank over ceil(experts / ranks) experts
// of a layer; `where` names the placement in errors.
void validate_placement(const ExpertPlacement& p, const std::string& where);

ExpertPlacement place_round_robin(int n_layers, int n_experts, int n_ranks);
// usage: (n_layers, n_experts) routing counts (RoutingTrace::usage_counts()).
ExpertPlacement place_balanced(std::span<const int64_t> usage, int n_layers, int n_experts, int n_ranks);
// By registry name; `usage` is needed by balanced only. Throws Error listing the names.
ExpertPlacement make_placement(const std::string& policy, std::span<const int64_t> usage, int n_layers,
                               int n_experts, int n_ranks);

struct PlacementLoad {
  int n_layers = 0;
  int n_ranks = 0;
  std::vector<int64_t> load;             // (n_layers, n_ranks) routings per rank
  std::vector<double> layer_imbalance;   // (n_layers) largest / mean rank load
  double step_imbalance = 1;             // sum_l largest / sum_l mean
  double total_imbalance = 1;            // largest / mean of the per-rank totals over all layers
};
// Loads of `p` under routing counts `usage` (n_layers, n_experts). A layer with no
// routings has imbalance 1.
PlacementLoad placement_load(const ExpertPlacement& p, std::span<const int64_t> usage);

// What the bound needs, per rank (from engine/parallel_plan.h's plans, or by hand).
struct ParallelBoundParams {
  double hbm_gbps = 0;                   // each GPU's memory bandwidth, GB/s (1e9 bytes/s)
  int64_t expert_bytes = 0;              // bytes a rank reads for one expert it runs
  int64_t dense_layer_bytes = 0;         // bytes a rank reads in every layer of a step
  int64_t step_bytes = 0;                // bytes a rank reads once a step (lm_head, final norm)
  int64_t collective_ns_per_layer = 0;   // measured latency of one layer's collectives
};

struct ParallelSimResult {
  int n_ranks = 0;
  int n_steps = 0;
  int64_t tokens = 0;
  std::vector<int64_t> rank_rows;        // (n_steps, n_ranks) routings each rank computes, all layers
  std::vector<int64_t> rank_experts;     // (n_steps, n_ranks) experts each rank runs, summed over layers
  std::vector<int64_t> rank_bytes;       // (n_steps, n_ranks) bytes each rank reads
  std::vector<double> step_imbalance;    // (n_steps) sum_l largest rank bytes / sum_l mean rank bytes
  std::vector<int64_t> step_ns;          // (n_steps) the bound of each step
  int64_t decode_ns = 0;                 // sum of step_ns
  double tokens_per_s = 0;               // tokens / decode_ns; +inf when decode_ns is 0
  double mean_imbalance() const;         // mean of step_imbalance (1 for no steps)
};

// Expert parallel: rank r runs the experts of `p` it holds that a token of the step chose;
// every expert whole (expert_bytes). Throws Error when trace and placement disagree in shape.
ParallelSimResult simulate_expert_parallel(const RoutingTrace& trace, const ExpertPlacement& p,
                                           const ParallelBoundParams& b);
// Tensor parallel over n_ranks: every rank runs its slice (expert_bytes = the largest
// slice) of every expert a token of the step chose.
ParallelSimResult simulate_tensor_parallel(const RoutingTrace& trace, int n_ranks, const ParallelBoundParams& b);

}  // namespace moebench
