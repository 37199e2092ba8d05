// routing_recorder.h: turns a model's per-layer routing decisions (RoutingObserver)
// into a RoutingTrace, one step per forward call, for --record-routing and replay.
#pragma once
#include <cstring>
#include <string>

#include "variants/routing_trace.h"

namespace moebench {

class RoutingRecorder {
 public:
  RoutingRecorder(int n_layers, int n_experts, int top_k, std::string source) {
    trace_.n_layers = n_layers;
    trace_.n_experts = n_experts;
    trace_.top_k = top_k;
    trace_.source = std::move(source);
  }
  // Matches RoutingObserver; layer 0 opens a new step.
  void operator()(int layer, int /*pos0*/, int n, const int32_t* ids, const float* weights) {
    if (layer == 0) trace_.add_step(n, true);
    RoutingStep& s = trace_.steps.back();
    const size_t off = static_cast<size_t>(layer) * n * trace_.top_k, cnt = static_cast<size_t>(n) * trace_.top_k;
    std::memcpy(&s.ids[off], ids, cnt * sizeof(int32_t));
    std::memcpy(&s.weights[off], weights, cnt * sizeof(float));
  }
  const RoutingTrace& trace() const { return trace_; }
  void clear() { trace_.steps.clear(); }

 private:
  RoutingTrace trace_;
};

}  // namespace moebench
