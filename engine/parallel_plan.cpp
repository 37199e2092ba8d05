// parallel_plan.cpp: see parallel_plan.h.
#include "engine/parallel_plan.h"

#include <algorithm>

#include "common/error.h"

namespace moebench {

IndexRange split_range(int total, int parts, int part) {
  if (parts <= 0 || part < 0 || part >= parts || total < 0)
    fail("split_range: part {} of {} over {} elements, expected 0 <= part < parts", part, parts, total);
  const int base = total / parts, extra = total % parts;
  const int begin = part * base + std::min(part, extra);
  return {begin, begin + base + (part < extra ? 1 : 0)};
}

namespace {

// Once per model: embedding, final norm and lm_head (none when tied).
int64_t global_params(const ModelConfig& c) {
  const int64_t emb = static_cast<int64_t>(c.vocab_size) * c.hidden_size;
  return emb * (c.tie_word_embeddings ? 1 : 2) + c.hidden_size;
}
int64_t layer_replicated_params(const ModelConfig& c) {
  return 2LL * c.hidden_size + static_cast<int64_t>(c.num_local_experts) * c.hidden_size;
}

}  // namespace

TpPlan plan_tensor_parallel(const ModelConfig& c, int n_ranks, int batch_tokens, const ParallelDtypes& d) {
  const std::string where = fmt::format("tensor parallel over {} ranks of {}", n_ranks, c.name);
  if (n_ranks <= 0) fail("{}: ranks must be a positive integer", where);
  if (batch_tokens <= 0) fail("{}: batch is {} tokens, expected a positive integer", where, batch_tokens);
  if (c.num_attention_heads % n_ranks != 0)
    fail("{}: num_attention_heads {} is not divisible by {}", where, c.num_attention_heads, n_ranks);
  if (c.num_key_value_heads % n_ranks != 0)
    fail("{}: num_key_value_heads {} is not divisible by {} (each rank needs whole kv heads)", where,
         c.num_key_value_heads, n_ranks);
  if (c.intermediate_size < n_ranks)
    fail("{}: intermediate_size {} is smaller than the rank count", where, c.intermediate_size);
  TpPlan plan{c, n_ranks, batch_tokens, {}, {}, c.total_params()};
  const int64_t H = c.hidden_size;
  for (int r = 0; r < n_ranks; ++r) {
    TpShard s;
    s.rank = r;
    s.q_heads = split_range(c.num_attention_heads, n_ranks, r);
    s.kv_heads = split_range(c.num_key_value_heads, n_ranks, r);
    s.q_rows = {s.q_heads.begin * c.head_dim, s.q_heads.end * c.head_dim};
    s.kv_rows = {s.kv_heads.begin * c.head_dim, s.kv_heads.end * c.head_dim};
    s.inter = split_range(c.intermediate_size, n_ranks, r);
    s.attention_params = H * (2LL * s.q_rows.size() + 2LL * s.kv_rows.size());
    s.expert_params = static_cast<int64_t>(c.num_local_experts) * 3 * H * s.inter.size();
    s.replicated_layer_params = layer_replicated_params(c);
    s.replicated_params = global_params(c);
    s.params = c.num_hidden_layers * (s.attention_params + s.expert_params + s.replicated_layer_params) +
               s.replicated_params;
    s.weight_bytes = s.params * d.weight_bytes;
    s.kv_bytes_per_token = static_cast<int64_t>(c.num_hidden_layers) * 2 * s.kv_rows.size() * d.kv_bytes;
    plan.shards.push_back(s);
  }
  if (n_ranks > 1) {
    const int64_t elements = static_cast<int64_t>(batch_tokens) * H;
    const int64_t bytes = elements * d.activation_bytes;
    const int64_t ring = 2 * (n_ranks - 1) * bytes / n_ranks;
    plan.per_layer.push_back({"attention o_proj", elements, bytes, ring});
    plan.per_layer.push_back({"moe w2 (gate-weighted)", elements, bytes, ring});
  }
  return plan;
}

ParallelBoundParams tp_bound_params(const TpPlan& plan, const ParallelDtypes& d, double hbm_gbps,
                                    int64_t collective_ns_per_layer) {
  const ModelConfig& c = plan.config;
  ParallelBoundParams b;
  b.hbm_gbps = hbm_gbps;
  b.collective_ns_per_layer = collective_ns_per_layer;
  for (const TpShard& s : plan.shards) {  // the largest shard (shards differ only by one intermediate row)
    b.expert_bytes = std::max<int64_t>(b.expert_bytes, int64_t{3} * c.hidden_size * s.inter.size() * d.weight_bytes);
    b.dense_layer_bytes = std::max<int64_t>(b.dense_layer_bytes, (s.attention_params + s.replicated_layer_params) * d.weight_bytes);
  }
  // A step reads lm_head (the embedding when tied) and the final norm; the embedding
  // rows of the step's tokens are left out (a bound may leave bytes out).
  b.step_bytes = (static_cast<int64_t>(c.vocab_size) * c.hidden_size + c.hidden_size) * d.weight_bytes;
  return b;
}

ParallelBoundParams ep_bound_params(const ModelConfig& c, const ParallelDtypes& d, double hbm_gbps,
                                    int64_t collective_ns_per_layer) {
  ParallelBoundParams b;
  b.hbm_gbps = hbm_gbps;
  b.collective_ns_per_layer = collective_ns_per_layer;
  b.expert_bytes = c.expert_params() * d.weight_bytes;
  b.dense_layer_bytes = (c.attention_params() + layer_replicated_params(c)) * d.weight_bytes;
  b.step_bytes = (static_cast<int64_t>(c.vocab_size) * c.hidden_size + c.hidden_size) * d.weight_bytes;
  return b;
}

std::vector<int64_t> ep_rank_weight_bytes(const ModelConfig& c, const ExpertPlacement& p, const ParallelDtypes& d) {
  validate_placement(p, "placement " + p.policy);
  if (p.n_layers != c.num_hidden_layers || p.n_experts != c.num_local_experts)
    fail("placement {} has {} layers x {} experts, model {} has {} x {}", p.policy, p.n_layers, p.n_experts, c.name,
         c.num_hidden_layers, c.num_local_experts);
  const int64_t replicated =
      c.num_hidden_layers * (c.attention_params() + layer_replicated_params(c)) + global_params(c);
  std::vector<int64_t> out(p.n_ranks, replicated * d.weight_bytes);
  for (int r : p.rank_of) out[r] += c.expert_params() * d.weight_bytes;
  return out;
}

int64_t AllToAllPlan::send_bytes(int rank) const {
  int64_t n = 0;
  for (int dst = 0; dst < n_ranks; ++dst)
    if (dst != rank) n += rows(rank, dst);
  return n * row_bytes;
}

int64_t AllToAllPlan::recv_bytes(int rank) const {
  int64_t n = 0;
  for (int src = 0; src < n_ranks; ++src)
    if (src != rank) n += rows(src, rank);
  return n * row_bytes;
}

AllToAllPlan plan_all_to_all(const ExpertPlacement& p, int layer, std::span<const int32_t> ids,
                             std::span<const int> home, int top_k, int hidden, const ParallelDtypes& d) {
  const int N = p.n_ranks;
  if (layer < 0 || layer >= p.n_layers) fail("all-to-all plan: layer {} out of range 0..{}", layer, p.n_layers - 1);
  if (top_k <= 0 || ids.size() != home.size() * static_cast<size_t>(top_k))
    fail("all-to-all plan: {} expert ids for {} tokens, expected tokens x top_k ({})", ids.size(), home.size(), top_k);
  AllToAllPlan a;
  a.n_ranks = N;
  a.row_bytes = static_cast<int64_t>(hidden) * d.activation_bytes;
  a.send_rows.assign(static_cast<size_t>(N) * N, 0);
  a.expert_rows.assign(N, 0);
  a.experts_run.assign(N, 0);
  std::vector<char> used(p.n_experts, 0), to(N);
  for (size_t t = 0; t < home.size(); ++t) {
    if (home[t] < 0 || home[t] >= N) fail("all-to-all plan: token {} lives on rank {}, expected 0..{}", t, home[t], N - 1);
    std::fill(to.begin(), to.end(), 0);
    for (int k = 0; k < top_k; ++k) {
      const int32_t e = ids[t * top_k + k];
      if (e < 0 || e >= p.n_experts) fail("all-to-all plan: token {} expert {} out of range 0..{}", t, e, p.n_experts - 1);
      const int r = p.rank(layer, e);
      ++a.expert_rows[r];
      to[r] = 1;
      used[e] = 1;
    }
    for (int r = 0; r < N; ++r)
      if (to[r]) ++a.send_rows[static_cast<size_t>(home[t]) * N + r];
  }
  for (int e = 0; e < p.n_experts; ++e)
    if (used[e]) ++a.experts_run[p.rank(layer, e)];
  return a;
}

std::vector<int> block_homes(int n_tokens, int n_ranks) {
  std::vector<int> home;
  for (int r = 0; r < n_ranks; ++r) home.insert(home.end(), split_range(n_tokens, n_ranks, r).size(), r);
  return home;
}

}  // namespace moebench
