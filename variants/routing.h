// routing.h: routing sources — where the expert choices of a run come from — and
// their registry (name, one-line description, kind, factory).
//
//   model             the real gate (softmax over experts, top-k); implemented by the
//                     engine, which recognises RoutingKind::model and has no factory here
//   uniform           iid uniform top-k per token (seeded)
//   mixtral-locality  synthetic, seeded, calibrated to published Mixtral routing statistics
//   fine-grained-locality  synthetic, seeded, for many small experts with top-8 (Qwen3-MoE,
//                     OLMoE): the popularity skew of published Qwen3-30B-A3B routing counts
//   trace:FILE        replays a recorded RoutingTrace
//
// mixtral-locality reproduces, per layer of depth d = layer / (layers - 1), by
// piecewise-linear interpolation between three anchors (d = 0, 15/31, 1):
//   first-choice repeat rate of consecutive tokens   14.25 % -> 26.0 % -> 23.0 %
//     (Mixtral paper Table 5 ranges 13.6-14.9 / 23.6-28.4 / 19.7-26.3 %; by construction)
//   top-2 overlap of consecutive tokens              ~47.5 % -> ~64 % -> ~49 %
//     (ranges 44.9-49.9 / 61.6-67.0 / 44.5-53.6 %; via the stickiness parameter,
//      calibrated offline for 8 experts, top-2)
//   popularity skew: experts ranked by a per-layer seeded permutation with
//     p(rank r) ~ exp(-gamma * (r / (E-1))^2); top expert ~17-20 % of routings,
//     least ~3-6 % (published: 13.5-23.7 %, least "near 1 %"; not reproduced that low).
// tests/routing_test.cpp checks 32 layers x 20000 tokens land in the published
// ranges at layers 0, 15 and 31. For other expert counts / top-k the same
// parameters apply but the top-2 overlap is not calibrated.
//
// Generation, per layer, token after token (the previous token of the same layer
// may belong to the previous step):
//   choice 1: with probability a repeat the previous token's first choice, else draw
//             from the popularity p excluding it (so the repeat rate is exactly a);
//   choice j>1: with probability b>0 reuse an expert of the previous token's set;
//             with probability -b (b<0) draw excluding the previous set; else draw
//             from p excluding the experts already chosen.
// Gate weights are synthetic: descending, summing to 1.
//
// fine-grained-locality uses the same generator with an exponential popularity profile
// p(rank r) ~ exp(-gamma * r / (E-1)), gamma 4.5 at every depth, and no first-choice or
// stickiness rule (every choice drawn from p excluding the token's earlier ones). At 128
// experts, top-8, its selection counts reproduce a published measurement of Qwen3-30B-A3B
// (llama.cpp imatrix counts, diverse prose/code/math workload): 65 of 128 experts carry
// 90 % of a layer's selections (published 65), concentration 1 - H/log E = 0.111
// (published 0.111); its hottest expert takes about 3.3 % of the selections (published
// 4.3 %). Consecutive tokens share experts only through that skew (about 14 % of a
// token's experts were the previous token's; uniform top-8 of 128: 6.25 %): no published
// per-token reuse statistic for 128-expert top-8 routing was found to calibrate more.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "variants/routing_trace.h"

namespace moebench {

enum class RoutingKind { model, uniform, mixtral_locality, fine_grained_locality, trace };

class RoutingSource {
 public:
  virtual ~RoutingSource() = default;
  // Top-k expert ids (n_tokens, top_k) for the tokens of `step` at `layer`, and
  // their weights (n_tokens, top_k) when `weights` is not empty. Synthetic sources
  // are stateful per layer: for each layer, steps must be asked in order 0, 1, 2...
  virtual void route(int step, int layer, int n_tokens, std::span<int32_t> ids, std::span<float> weights) = 0;
  // What produced the choices, e.g. "mixtral-locality seed=1"; stored in traces and results.
  virtual std::string describe() const = 0;
};

struct RoutingParams {
  int n_layers = 0;
  int n_experts = 0;
  int top_k = 0;
  uint64_t seed = 1;
  std::string trace_path;  // for kind trace
  // Which generation this is: 0 for the measured ones, another value for a warm-up.
  // Synthetic sources draw each token's choices from (seed, stream); what describes
  // the model itself (a layer's expert popularity) follows the seed alone, so a
  // warm-up on another stream sees the same model but not the measured tokens'
  // choices. A trace replays what it recorded whatever the stream.
  uint64_t stream = 0;
};

// The seed of one generation's draws: the seed itself for stream 0 (the measured
// generations), a mix of seed and stream otherwise.
uint64_t draw_seed(const RoutingParams& p);

struct RoutingSourceInfo {
  std::string name;  // registry name; "trace" is spelled "trace:FILE" on the command line
  std::string description;
  RoutingKind kind;
  // Null for `model` (the engine's gate).
  std::function<std::unique_ptr<RoutingSource>(const RoutingParams&)> make;
};

const std::vector<RoutingSourceInfo>& routing_sources();

// A parsed routing spec: "uniform", "mixtral-locality", "model" or "trace:FILE".
struct RoutingSpec {
  RoutingKind kind = RoutingKind::model;
  std::string name;        // registry name
  std::string trace_path;  // for trace
};
RoutingSpec parse_routing_spec(const std::string& spec);  // throws Error listing the names
const RoutingSourceInfo& routing_source_info(RoutingKind kind);

// Builds a source; throws Error for `model` (the engine builds that one) and for a
// trace whose shape differs from params (naming the file and the field).
std::unique_ptr<RoutingSource> make_routing_source(const RoutingSpec& spec, const RoutingParams& params);

// A trace:FILE source over a trace already in memory (shared, not copied; `path` names it
// in errors and describe()). Replaying is stateless: restarting it reads nothing again.
std::unique_ptr<RoutingSource> make_trace_source(std::shared_ptr<const RoutingTrace> trace, const RoutingParams& params,
                                                 const std::string& path);

// Runs a source for `n_steps` steps of `tokens_per_step` tokens, all layers, into a trace.
RoutingTrace generate_trace(RoutingSource& src, const RoutingParams& params, int n_steps, int tokens_per_step = 1,
                            bool with_weights = false);

// Locality parameters of mixtral-locality at depth d in [0, 1] (exposed for tests).
struct LocalityParams {
  double first_repeat;  // a; < 0: no first-choice rule (choice 1 drawn like the others)
  double stickiness;    // b in [-1, 1]
  double gamma;         // popularity skew
  bool exponential = false;  // profile exp(-gamma x) instead of exp(-gamma x^2), x = r / (E-1)
};
LocalityParams mixtral_locality_params(double depth);
LocalityParams fine_grained_locality_params(double depth);

}  // namespace moebench
