// routing_driver.cpp: see routing_driver.h.
#include "variants/routing_driver.h"

#include "common/error.h"

namespace moebench {

std::unique_ptr<RoutingDriver> RoutingDriver::make(const std::string& spec, const RoutingParams& params,
                                                   double prefetch_accuracy) {
  RoutingSpec rs = parse_routing_spec(spec);
  if (rs.kind == RoutingKind::model) return nullptr;
  return std::make_unique<RoutingDriver>(rs, params, prefetch_accuracy);
}

std::unique_ptr<RoutingDriver> RoutingDriver::for_model(const EngineSettings& s, const ModelConfig& c) {
  RoutingParams rp;
  rp.n_layers = c.num_hidden_layers;
  rp.n_experts = c.num_local_experts;
  rp.top_k = c.num_experts_per_tok;
  rp.seed = s.routing_seed;
  return make(s.routing, rp, s.prefetch_accuracy);
}

RoutingDriver::RoutingDriver(const RoutingSpec& spec, const RoutingParams& params, double prefetch_accuracy)
    : spec_(spec), params_(params), accuracy_(prefetch_accuracy), rng_(prediction_rng(draw_seed(params))) {
  if (prefetch_accuracy < 0 || prefetch_accuracy > 1)
    fail("prefetch_accuracy {}: expected a share in [0, 1]", prefetch_accuracy);
  if (spec.kind == RoutingKind::trace) trace_ = std::make_shared<const RoutingTrace>(load_trace(spec.trace_path));
  reset();
}

void RoutingDriver::reset() {
  source_ = trace_ ? make_trace_source(trace_, params_, spec_.trace_path) : make_routing_source(spec_, params_);
  rng_ = prediction_rng(draw_seed(params_));
  ahead_.assign(static_cast<size_t>(params_.n_layers), Ahead{});
}

void RoutingDriver::route(int step, int layer, int n_tokens, std::span<int32_t> ids) {
  Ahead& a = ahead_.at(layer);
  if (a.step == step) {
    if (a.ids.size() != ids.size())
      fail("routing: layer {} step {} was predicted for {} ids, routed with {}", layer, step, a.ids.size(), ids.size());
    std::copy(a.ids.begin(), a.ids.end(), ids.begin());
    a.step = -1;
    return;
  }
  source_->route(step, layer, n_tokens, ids, {});
}

void RoutingDriver::predict(int step, int layer, int n_tokens, std::vector<int32_t>& out) {
  Ahead& a = ahead_.at(layer);
  if (a.step != step) {
    a.ids.assign(static_cast<size_t>(n_tokens) * params_.top_k, 0);
    source_->route(step, layer, n_tokens, a.ids, {});
    a.step = step;
  }
  degrade_prediction(a.ids, params_.top_k, params_.n_experts, accuracy_, rng_, out);
}

}  // namespace moebench
