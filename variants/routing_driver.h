// routing_driver.h: how an engine (CPU or CUDA) uses a non-model routing source, with
// one code path for both backends:
//   route(step, layer, ...)    the source's choice for this (step, layer), replacing the
//                              gate's; the gate's softmax then weighs the chosen experts
//                              (cpu::router_reweight);
//   predict(step, layer, ...)  for the `prefetch` policy at layer-1: the source's true
//                              choice of `layer`, taken now and kept for route(), each id
//                              kept with probability `accuracy` (degrade_prediction, the
//                              simulator's predictor: same seed, same call order, same
//                              predictions, so engine hits equal simulate()'s).
// Synthetic sources are stateful per layer and must be asked steps in order: taking a
// layer's choice ahead (predict) and handing it out later (route) keeps that order.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/settings.h"
#include "variants/prediction.h"
#include "variants/routing.h"
#include "variants/routing_trace.h"

namespace moebench {

class RoutingDriver {
 public:
  // Null for spec "model" (the engine's gate routes). For trace:FILE the trace is read
  // once, replayed by the source and kept (trace(): the future, for belady and static). Throws Error for a bad
  // spec or a trace whose shape differs from params.
  static std::unique_ptr<RoutingDriver> make(const std::string& spec, const RoutingParams& params,
                                             double prefetch_accuracy);
  // The same for a model: its layers, experts and top-k; routing, routing_seed and
  // prefetch_accuracy from the settings.
  static std::unique_ptr<RoutingDriver> for_model(const EngineSettings& s, const ModelConfig& c);
  RoutingDriver(const RoutingSpec& spec, const RoutingParams& params, double prefetch_accuracy);

  std::string describe() const { return source_->describe(); }
  const RoutingTrace* trace() const { return trace_.get(); }
  // ids (n_tokens, top_k) of (step, layer).
  void route(int step, int layer, int n_tokens, std::span<int32_t> ids);
  // Predicted ids (n_tokens, top_k) of (step, layer) — the next layer's.
  void predict(int step, int layer, int n_tokens, std::vector<int32_t>& out);
  // Back to step 0 (a new generation): the source and the predictor restart from their
  // seeds, so every generation of a run routes the same way.
  void reset();
  // The generation stream that the next reset() starts (RoutingParams::stream): 0
  // for measured generations, another value for warm-ups.
  void set_stream(uint64_t stream) { params_.stream = stream; }

 private:
  struct Ahead {
    int step = -1;
    std::vector<int32_t> ids;
  };
  RoutingSpec spec_;
  RoutingParams params_;
  double accuracy_;
  std::shared_ptr<const RoutingTrace> trace_;  // trace:FILE, read once; the source replays it
  std::unique_ptr<RoutingSource> source_;
  std::vector<Ahead> ahead_;  // (layers) a choice taken early by predict()
  Rng rng_;
};

}  // namespace moebench
