// shard.cpp: see shard.h.
#include "engine/shard.h"

#include <algorithm>

#include "common/error.h"
#include "engine/weight_source.h"
#include "variants/routing.h"

namespace moebench {

namespace {
bool ends_with(const std::string& s, const char* tail) {
  const std::string t(tail);
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}
}  // namespace

TensorSlice tp_slice(const ModelConfig& full, const std::string& name, int rank, int world) {
  if (world == 1) return {};
  const TpPlan plan = plan_tensor_parallel(full, world, 1);
  if (rank < 0 || rank >= world) fail("tensor parallel: rank {} out of range 0..{}", rank, world - 1);
  const TpShard& s = plan.shards[rank];
  using K = TensorSlice::Kind;
  if (ends_with(name, "self_attn.q_proj.weight")) return {K::rows, s.q_rows};
  if (ends_with(name, "self_attn.k_proj.weight") || ends_with(name, "self_attn.v_proj.weight")) return {K::rows, s.kv_rows};
  if (ends_with(name, "self_attn.o_proj.weight")) return {K::cols, s.q_rows};
  if (is_expert_tensor(name)) {
    if (ends_with(name, ".w2.weight")) return {K::cols, s.inter};
    return {K::rows, s.inter};  // w1, w3
  }
  return {};
}

ModelConfig tp_rank_config(const ModelConfig& full, int rank, int world) {
  if (world == 1) return full;
  const TpPlan plan = plan_tensor_parallel(full, world, 1);
  if (rank < 0 || rank >= world) fail("tensor parallel: rank {} out of range 0..{}", rank, world - 1);
  const TpShard& s = plan.shards[rank];
  ModelConfig c = full;
  c.name = fmt::format("{}/tp{}of{}", full.name, rank, world);
  c.num_attention_heads = s.q_heads.size();
  c.num_key_value_heads = s.kv_heads.size();
  c.intermediate_size = s.inter.size();
  c.head_dim = full.head_dim;
  return c;
}

TensorSpec slice_spec(const TensorSpec& full, const TensorSlice& s) {
  TensorSpec r = full;
  if (s.kind == TensorSlice::Kind::full) return r;
  if (full.shape.size() != 2) fail("tensor '{}' (shape {}) is not a matrix and cannot be sliced", full.name, shape_str(full.shape));
  const int64_t extent = s.kind == TensorSlice::Kind::rows ? full.shape[0] : full.shape[1];
  if (s.range.begin < 0 || s.range.end > extent || s.range.size() <= 0)
    fail("tensor '{}' (shape {}): slice [{}, {}) out of range", full.name, shape_str(full.shape), s.range.begin, s.range.end);
  r.shape[s.kind == TensorSlice::Kind::rows ? 0 : 1] = s.range.size();
  return r;
}

ExpertPlacement ep_placement_for(const EngineSettings& s, const ModelConfig& c, int n) {
  const int L = c.num_hidden_layers, E = c.num_local_experts;
  if (s.ep_placement != "balanced") return make_placement(s.ep_placement, {}, L, E, n);
  const RoutingSpec spec = parse_routing_spec(s.routing);
  if (spec.kind == RoutingKind::model)
    fail("setting ep_placement=balanced: needs routing counts before the run, so a routing source other than the "
         "model's gate (routing=uniform|mixtral-locality|...|trace:FILE); got routing=model");
  RoutingParams p{L, E, c.num_experts_per_tok, s.routing_seed + 1, spec.trace_path};
  auto src = make_routing_source(spec, p);
  const RoutingTrace t = generate_trace(*src, p, kEpCalibrationTokens, 1);
  return make_placement("balanced", t.usage_counts(), L, E, n);
}

void check_parallel_knobs(const ModelConfig& c, int tensor_parallel, int expert_parallel) {
  if (tensor_parallel < 1) fail("setting tensor_parallel={}: expected an integer >= 1", tensor_parallel);
  if (expert_parallel < 1) fail("setting expert_parallel={}: expected an integer >= 1", expert_parallel);
  if (tensor_parallel > 1 && expert_parallel > 1)
    fail("settings tensor_parallel={} and expert_parallel={}: choose one (a mixed TP x EP layout is not supported)",
         tensor_parallel, expert_parallel);
  if (tensor_parallel > 1) {
    if (c.model_type != "mixtral")
      fail("setting tensor_parallel={}: {} is a {} model; tensor parallelism shards the mixtral family only (q/k norms, "
           "biases and shared experts are not sharded)", tensor_parallel, c.name, c.model_type);
    if (c.num_attention_heads % tensor_parallel)
      fail("setting tensor_parallel={}: num_attention_heads {} of {} is not divisible by {}", tensor_parallel,
           c.num_attention_heads, c.name, tensor_parallel);
    if (c.num_key_value_heads % tensor_parallel)
      fail("setting tensor_parallel={}: num_key_value_heads {} of {} is not divisible by {} (each rank needs whole kv heads)",
           tensor_parallel, c.num_key_value_heads, c.name, tensor_parallel);
    if (c.intermediate_size < tensor_parallel)
      fail("setting tensor_parallel={}: intermediate_size {} of {} is smaller than the rank count", tensor_parallel,
           c.intermediate_size, c.name);
  }
  if (expert_parallel > c.num_local_experts)
    fail("setting expert_parallel={}: {} has only {} experts per layer", expert_parallel, c.name, c.num_local_experts);
}

}  // namespace moebench
