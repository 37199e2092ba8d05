// device_plan.cpp: see device_plan.h.
#include "engine/device_plan.h"

#include <algorithm>

#include "engine/arena_book.h"
#include "common/error.h"
#include "common/units.h"

namespace moebench {

ExpertLayout expert_layout(const ModelConfig& c, QuantFormat f, bool zero_points) {
  ExpertLayout L;
  L.format = f;
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t shape[3][2] = {{I, H}, {I, H}, {H, I}};  // w1, w3 (inter, hidden); w2 (hidden, inter)
  uint64_t at = 0;
  for (int m = 0; m < 3; ++m) {
    const auto parts = quant_parts(f, shape[m][0], shape[m][1], zero_points);
    L.n_parts = static_cast<int>(parts.size());
    for (size_t p = 0; p < parts.size(); ++p) {
      at = round_up(at, kExpertPartAlign);
      L.offset[m][p] = at;
      L.bytes[m][p] = parts[p].nbytes();
      at += L.bytes[m][p];
    }
  }
  L.total_bytes = round_up(at, kExpertPartAlign);
  return L;
}

ExpertLayout gate_up_layout(const ExpertLayout& L, int inter) {
  if (L.format == QuantFormat::bf16 || L.n_parts < 1) return L;
  if (L.format == QuantFormat::fp8 && inter % kFp8Block != 0) return L;
  for (int p = 0; p < L.n_parts; ++p)
    if (L.bytes[0][p] != L.bytes[1][p] || L.bytes[0][p] % kExpertPartAlign != 0) return L;
  ExpertLayout D = L;
  uint64_t at = 0;
  for (int p = 0; p < L.n_parts; ++p) {
    at = round_up(at, kExpertPartAlign);
    D.offset[0][p] = at;
    D.offset[1][p] = at + L.bytes[0][p];
    at += L.bytes[0][p] + L.bytes[1][p];
  }
  for (int p = 0; p < L.n_parts; ++p) {
    at = round_up(at, kExpertPartAlign);
    D.offset[2][p] = at;
    at += L.bytes[2][p];
  }
  D.total_bytes = round_up(at, kExpertPartAlign);
  return D;
}

bool gate_up_adjacent(const ExpertLayout& L) {
  if (L.format == QuantFormat::bf16 || L.n_parts < 1) return false;
  for (int p = 0; p < L.n_parts; ++p)
    if (L.offset[1][p] != L.offset[0][p] + L.bytes[0][p] || L.bytes[0][p] != L.bytes[1][p]) return false;
  return true;
}

int plan_expert_slots(uint64_t stride, int top_k, int n_keys, uint64_t slot_budget, uint64_t rest, int slots) {
  const uint64_t min_slots = stride * static_cast<uint64_t>(top_k);
  if (slots < 0) fail("cache_slots is {}, expected 0 (as many as fit) or a slot count", slots);
  int n;
  if (slots > 0) {
    n = std::min(slots, n_keys);
    if (n < top_k)
      fail("cache_slots = {} is below top_k = {}: the experts of one token must all be resident; give at least {} "
           "slots ({})",
           slots, top_k, top_k, format_bytes(min_slots));
    if (stride * static_cast<uint64_t>(n) > slot_budget)
      fail("cache_slots = {} needs {} ({} slots x {}) but the GPU budget leaves {} for expert slots after the rest "
           "of the model; lower cache_slots to at most {} (or 0: as many as fit) or raise --gpu-mem-budget to at "
           "least {}",
           slots, format_bytes(stride * n), n, format_bytes(stride), format_bytes(slot_budget), slot_budget / stride,
           format_bytes(rest + stride * n));
  } else {
    n = static_cast<int>(std::min<uint64_t>(slot_budget / stride, static_cast<uint64_t>(n_keys)));
    if (n < top_k)
      fail("GPU budget too small for expert offloading: {} is left for expert slots after the rest of the model, "
           "{} slot(s) of {}; at least top_k = {} slots ({}) are needed: --gpu-mem-budget must be at least {}",
           format_bytes(slot_budget), n, format_bytes(stride), top_k, format_bytes(min_slots),
           format_bytes(rest + min_slots));
  }
  return n;
}

DevicePlan plan_device_memory(const DevicePlanInput& in) {
  const ModelConfig& c = in.config;
  DevicePlan p;
  p.arena_bytes = in.budget_bytes;
  p.fixed_bytes = in.fixed.dense_weights + in.fixed.kv_cache + in.fixed.workspace;
  p.expert_bytes = expert_layout(c, in.format).total_bytes;
  p.slot_bytes = round_up(p.expert_bytes, ArenaBook::kDefaultAlignment);
  const int n_keys = c.num_hidden_layers * c.num_local_experts;
  if (in.resident) {
    const int held = in.resident_experts >= 0 ? in.resident_experts : n_keys;
    p.resident_expert_bytes = p.slot_bytes * static_cast<uint64_t>(held);
    p.min_budget_bytes = p.fixed_bytes + p.resident_expert_bytes;
    if (p.min_budget_bytes > in.budget_bytes)
      fail("model {} needs at least {} of device memory ({} experts of {} in {}, {} dense weights, {} KV cache, {} "
           "workspace) but the budget is {}: raise --gpu-mem-budget to at least {}, quantise the experts "
           "(expert_dtype), or offload them (expert_tier=pinned)",
           c.name, format_bytes(p.min_budget_bytes), held, format_bytes(p.expert_bytes), quant_format_name(in.format),
           format_bytes(in.fixed.dense_weights), format_bytes(in.fixed.kv_cache), format_bytes(in.fixed.workspace),
           format_bytes(in.budget_bytes), format_bytes(p.min_budget_bytes));
    return p;
  }
  p.min_budget_bytes = p.fixed_bytes + p.slot_bytes * static_cast<uint64_t>(c.num_experts_per_tok);
  p.slot_budget_bytes = in.budget_bytes > p.fixed_bytes ? in.budget_bytes - p.fixed_bytes : 0;
  if (!in.own_slots) {
    p.n_slots = static_cast<int>(std::min<uint64_t>(p.slot_budget_bytes / p.slot_bytes, static_cast<uint64_t>(n_keys)));
    return p;
  }
  if (p.min_budget_bytes > in.budget_bytes)
    fail("model {} with experts offloaded needs at least {} of device memory ({} dense weights, {} KV cache, {} "
         "workspace, {} for {} expert slots of {} in {}) but the budget is {}: raise --gpu-mem-budget to at least {}",
         c.name, format_bytes(p.min_budget_bytes), format_bytes(in.fixed.dense_weights), format_bytes(in.fixed.kv_cache),
         format_bytes(in.fixed.workspace), format_bytes(p.slot_bytes * c.num_experts_per_tok), c.num_experts_per_tok,
         format_bytes(p.expert_bytes), quant_format_name(in.format), format_bytes(in.budget_bytes),
         format_bytes(p.min_budget_bytes));
  p.n_slots = plan_expert_slots(p.slot_bytes, c.num_experts_per_tok, n_keys, p.slot_budget_bytes, p.fixed_bytes,
                                in.cache_slots);
  return p;
}

}  // namespace moebench
