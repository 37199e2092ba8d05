// parallel_test.cpp: multi-GPU decode without a GPU. The tensor-parallel plan (shard
// shapes sum to the full shapes, bytes per rank, the collectives), a CPU emulation of
// TP over 2 and 4 ranks that must equal the unsharded layer, expert placements
// (every expert placed once, balanced no worse than round-robin), the all-to-all plan
// (counts conserve tokens; run on the CPU it computes the unsharded MoE), the
// trace-driven bound on hand-computed cases and its command (simulate-parallel), and the
// per-rank host threads.
//
// Tolerance of the TP emulation, derived: every value a rank computes before the
// all-reduce (q/k/v rows, RoPE, per-head attention, w1/w3 rows, SiLU) is the same op on
// the same inputs as the unsharded model, so it must be bit-identical (checked). Only
// the two reductions that the shards split differ: o_proj, a sum of Q products per
// output, and the MoE output, a sum over top-k and the intermediate dimension of
// w_k * (g * w2) products. Both the unsharded and the sharded evaluations are
// summation trees over the same terms (the shard partials and the all-reduce are just
// more inner nodes); each term meets at most m roundings (its products and the
// additions above it), m = Q + 1 for o_proj and m = I + K + N + 2 for the MoE output.
// So each is within gamma_m * sum|terms| of the exact value, gamma_m = m u / (1 - m u),
// u = 2^-24, and they differ by at most 2 gamma_m * sum|terms| per element; the test
// computes sum|terms| in double for every element.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/expert_provider.h"
#include "engine/ops/ops.h"
#include "engine/parallel_plan.h"
#include "engine/moe_strategy.h"
#include "engine/rank_threads.h"
#include "model/config.h"
#include "tests/test_util.h"
#include "variants/placement.h"
#include "variants/routing.h"

namespace parallel_test {

using namespace moebench;

namespace {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ---------------------------------------------------------------- TP emulation

ModelConfig small_config() {
  ModelConfig c;
  c.name = "tp-emulation";
  c.vocab_size = 32;
  c.hidden_size = 64;
  c.intermediate_size = 50;  // 4 ranks: 13, 13, 12, 12
  c.num_hidden_layers = 1;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 8;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.max_position_embeddings = 64;
  c.rope_theta = 10000.0f;
  return c;
}

std::vector<float> rnd(size_t n, float scale, std::mt19937& g) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

struct Layer {
  std::vector<float> attn_norm, wq, wk, wv, wo, ffn_norm, gate;  // HF shapes
  std::vector<std::vector<float>> w1, w3, w2;                     // per expert: (I, H), (I, H), (H, I)
  int q_heads = 0, kv_heads = 0, inter = 0;
};

Layer random_layer(const ModelConfig& c, uint32_t seed) {
  std::mt19937 g(seed);
  const int H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim(), I = c.intermediate_size;
  const float sh = 1.0f / std::sqrt(static_cast<float>(H));
  Layer L;
  L.attn_norm = rnd(H, 1.0f, g);
  for (float& x : L.attn_norm) x += 1.5f;
  L.wq = rnd(static_cast<size_t>(Q) * H, sh, g);
  L.wk = rnd(static_cast<size_t>(KV) * H, sh, g);
  L.wv = rnd(static_cast<size_t>(KV) * H, sh, g);
  L.wo = rnd(static_cast<size_t>(H) * Q, 1.0f / std::sqrt(static_cast<float>(Q)), g);
  L.ffn_norm = rnd(H, 1.0f, g);
  for (float& x : L.ffn_norm) x += 1.5f;
  L.gate = rnd(static_cast<size_t>(c.num_local_experts) * H, sh, g);
  for (int e = 0; e < c.num_local_experts; ++e) {
    L.w1.push_back(rnd(static_cast<size_t>(I) * H, sh, g));
    L.w3.push_back(rnd(static_cast<size_t>(I) * H, sh, g));
    L.w2.push_back(rnd(static_cast<size_t>(H) * I, 1.0f / std::sqrt(static_cast<float>(I)), g));
  }
  L.q_heads = c.num_attention_heads;
  L.kv_heads = c.num_key_value_heads;
  L.inter = I;
  return L;
}

// The weights rank s of the plan holds.
Layer shard_layer(const ModelConfig& c, const Layer& L, const TpShard& s) {
  const int H = c.hidden_size, Q = c.q_dim(), I = c.intermediate_size;
  Layer R;
  R.attn_norm = L.attn_norm;
  R.ffn_norm = L.ffn_norm;
  R.gate = L.gate;
  R.wq = take_rows(L.wq.data(), H, s.q_rows);
  R.wk = take_rows(L.wk.data(), H, s.kv_rows);
  R.wv = take_rows(L.wv.data(), H, s.kv_rows);
  R.wo = take_cols(L.wo.data(), H, Q, s.q_rows);
  for (int e = 0; e < c.num_local_experts; ++e) {
    R.w1.push_back(take_rows(L.w1[e].data(), H, s.inter));
    R.w3.push_back(take_rows(L.w3[e].data(), H, s.inter));
    R.w2.push_back(take_cols(L.w2[e].data(), H, I, s.inter));
  }
  R.q_heads = s.q_heads.size();
  R.kv_heads = s.kv_heads.size();
  R.inter = s.inter.size();
  return R;
}

// One rank's attention block (or the whole model's): the CPU model's sequence of ops.
struct AttnState {
  std::vector<float> k_cache, v_cache;  // (max_len, kv_heads * head_dim)
  std::vector<float> att;               // (n, q_heads * head_dim) of the last call
};
std::vector<float> attention_block(const ModelConfig& c, const Layer& L, AttnState& st, const std::vector<float>& x,
                                   int n, int pos0) {
  const int H = c.hidden_size, hd = c.head_dim, Qr = L.q_heads * hd, KVr = L.kv_heads * hd;
  if (st.k_cache.empty()) {
    st.k_cache.assign(static_cast<size_t>(c.max_position_embeddings) * KVr, 0.0f);
    st.v_cache.assign(static_cast<size_t>(c.max_position_embeddings) * KVr, 0.0f);
  }
  std::vector<float> h(static_cast<size_t>(n) * H), q(static_cast<size_t>(n) * Qr), out(static_cast<size_t>(n) * H);
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), pos0);
  cpu::rmsnorm(x.data(), L.attn_norm.data(), h.data(), n, H, c.rms_norm_eps);
  float* kc = st.k_cache.data() + static_cast<size_t>(pos0) * KVr;
  float* vc = st.v_cache.data() + static_cast<size_t>(pos0) * KVr;
  cpu::linear(h.data(), L.wq.data(), q.data(), n, H, Qr);
  cpu::linear(h.data(), L.wk.data(), kc, n, H, KVr);
  cpu::linear(h.data(), L.wv.data(), vc, n, H, KVr);
  cpu::rope(q.data(), pos.data(), n, L.q_heads, hd, c.rope_theta);
  cpu::rope(kc, pos.data(), n, L.kv_heads, hd, c.rope_theta);
  st.att.assign(static_cast<size_t>(n) * Qr, 0.0f);
  cpu::attention(q.data(), st.k_cache.data(), st.v_cache.data(), st.att.data(), n, pos0, L.q_heads, L.kv_heads, hd);
  cpu::linear(st.att.data(), L.wo.data(), out.data(), n, Qr, H);
  return out;
}

// One rank's MoE block: the replicated router, then moe_cpu over its expert slices.
struct MoeOut {
  std::vector<float> out;  // (n, H)
  std::vector<int32_t> ids;
  std::vector<float> wts;
};
MoeOut moe_block(const ModelConfig& c, const Layer& L, const std::vector<float>& x, int n) {
  const int H = c.hidden_size, E = c.num_local_experts, K = c.num_experts_per_tok;
  std::vector<float> h(static_cast<size_t>(n) * H), logits(static_cast<size_t>(n) * E);
  MoeOut m{std::vector<float>(static_cast<size_t>(n) * H), std::vector<int32_t>(static_cast<size_t>(n) * K),
           std::vector<float>(static_cast<size_t>(n) * K)};
  cpu::rmsnorm(x.data(), L.ffn_norm.data(), h.data(), n, H, c.rms_norm_eps);
  cpu::linear(h.data(), L.gate.data(), logits.data(), n, H, E);
  cpu::router_topk(logits.data(), m.ids.data(), m.wts.data(), n, E, K);
  std::vector<ExpertWeights> ew(E);
  for (int e = 0; e < E; ++e) ew[e] = {L.w1[e].data(), L.w3[e].data(), L.w2[e].data()};
  MoeCpuWorkspace ws;
  moe_cpu(MoeStrategy{}, h.data(), m.ids.data(), m.wts.data(), ew.data(), m.out.data(), n, H, L.inter, E, K, ws);
  return m;
}

double gamma_m(int m) {
  const double u = std::ldexp(1.0, -24);
  return m * u / (1.0 - m * u);
}

// Sum over ranks in rank order: the all-reduce.
std::vector<float> all_reduce(const std::vector<std::vector<float>>& parts) {
  std::vector<float> s(parts[0].size(), 0.0f);
  for (const auto& p : parts)
    for (size_t i = 0; i < s.size(); ++i) s[i] += p[i];
  return s;
}

// Elements where |a - b| > tol; reports the first few.
int count_outside(const std::vector<float>& a, const std::vector<float>& b, const std::vector<double>& tol,
                  const std::string& what, bool report = true) {
  int bad = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(std::fabs(static_cast<double>(a[i]) - b[i]) <= tol[i])) {
      if (report && bad < 5) ADD_FAILURE() << what << " element " << i << ": " << a[i] << " vs " << b[i] << ", tol " << tol[i];
      ++bad;
    }
  return bad;
}

// o_proj tolerance: 2 gamma_{Q+1} sum_q |att_q wo_jq| per output element.
std::vector<double> oproj_tolerance(const ModelConfig& c, const Layer& full, const std::vector<float>& att, int n) {
  const int H = c.hidden_size, Q = c.q_dim();
  std::vector<double> tol(static_cast<size_t>(n) * H);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < H; ++j) {
      double s = 0;
      for (int q = 0; q < Q; ++q) s += std::fabs(static_cast<double>(att[i * Q + q]) * full.wo[static_cast<size_t>(j) * Q + q]);
      tol[static_cast<size_t>(i) * H + j] = 2 * gamma_m(Q + 1) * s;
    }
  return tol;
}

// MoE tolerance: 2 gamma_{I+K+N+2} sum_k |w_k| sum_m |g_km w2_jm| per output element,
// g = silu(w1 h) * (w3 h) computed with the same ops as the expert.
std::vector<double> moe_tolerance(const ModelConfig& c, const Layer& full, const std::vector<float>& x,
                                  const MoeOut& ref, int n, int n_ranks) {
  const int H = c.hidden_size, I = c.intermediate_size, K = c.num_experts_per_tok;
  std::vector<float> h(static_cast<size_t>(n) * H), a(I), u(I);
  cpu::rmsnorm(x.data(), full.ffn_norm.data(), h.data(), n, H, c.rms_norm_eps);
  std::vector<double> tol(static_cast<size_t>(n) * H, 0.0);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < K; ++k) {
      const int e = ref.ids[i * K + k];
      cpu::linear(&h[static_cast<size_t>(i) * H], full.w1[e].data(), a.data(), 1, H, I);
      cpu::linear(&h[static_cast<size_t>(i) * H], full.w3[e].data(), u.data(), 1, H, I);
      for (int j = 0; j < H; ++j) {
        double s = 0;
        for (int m = 0; m < I; ++m) {
          const float gm = (a[m] / (1.0f + std::exp(-a[m]))) * u[m];
          s += std::fabs(static_cast<double>(gm) * full.w2[e][static_cast<size_t>(j) * I + m]);
        }
        tol[static_cast<size_t>(i) * H + j] += 2 * gamma_m(I + K + n_ranks + 2) * std::fabs(ref.wts[i * K + k]) * s;
      }
    }
  return tol;
}

// The unsharded layer (random weights from `seed`) and its N shards per the TP plan.
struct Sharded {
  ModelConfig c = small_config();
  Layer full;
  TpPlan plan;
  std::vector<Layer> shards;
  Sharded(int n_ranks, uint32_t seed) : full(random_layer(c, seed)), plan(plan_tensor_parallel(c, n_ranks, 1)) {
    for (const TpShard& s : plan.shards) shards.push_back(shard_layer(c, full, s));
  }
};

// Runs a prefill of 5 tokens then one decode token through the attention block,
// unsharded and over n_ranks shards, checking bit-identity of the per-rank values and
// the tolerance on the all-reduced output. `sabotage` corrupts rank 1's q rows (a
// wrong head block) to show the check can fail; returns the out-of-tolerance count.
int check_attention(int n_ranks, bool sabotage = false) {
  Sharded sh(n_ranks, 11);
  const ModelConfig& c = sh.c;
  const Layer& full = sh.full;
  const TpPlan& plan = sh.plan;
  std::vector<Layer>& shards = sh.shards;
  if (sabotage) shards[1].wq = take_rows(full.wq.data(), c.hidden_size, plan.shards[0].q_rows);
  std::mt19937 g(5);
  AttnState ref_state;
  std::vector<AttnState> st(n_ranks);
  int bad = 0;
  int pos0 = 0;
  for (int n : {5, 1}) {
    const std::vector<float> x = rnd(static_cast<size_t>(n) * c.hidden_size, 1.0f, g);
    const std::vector<float> ref = attention_block(c, full, ref_state, x, n, pos0);
    std::vector<std::vector<float>> parts;
    for (int r = 0; r < n_ranks; ++r) {
      parts.push_back(attention_block(c, shards[r], st[r], x, n, pos0));
      if (sabotage) continue;
      // Before the all-reduce: this rank's heads equal the unsharded heads bit for bit.
      const TpShard& s = plan.shards[r];
      for (int i = 0; i < n; ++i)
        for (int q = 0; q < s.q_rows.size(); ++q)
          EXPECT_EQ(st[r].att[static_cast<size_t>(i) * s.q_rows.size() + q],
                    ref_state.att[static_cast<size_t>(i) * c.q_dim() + s.q_rows.begin + q])
              << "rank " << r << " token " << i << " attention column " << q;
      for (int p = 0; p < pos0 + n; ++p)
        for (int j = 0; j < s.kv_rows.size(); ++j)
          EXPECT_EQ(st[r].k_cache[static_cast<size_t>(p) * s.kv_rows.size() + j],
                    ref_state.k_cache[static_cast<size_t>(p) * c.kv_dim() + s.kv_rows.begin + j])
              << "rank " << r << " key cache position " << p;
    }
    bad += count_outside(all_reduce(parts), ref, oproj_tolerance(c, full, ref_state.att, n),
                         "attention N=" + std::to_string(n_ranks), !sabotage);
    pos0 += n;
  }
  return bad;
}

int check_moe(int n_ranks, bool sabotage = false) {
  Sharded sh(n_ranks, 23);
  const ModelConfig& c = sh.c;
  const Layer& full = sh.full;
  std::vector<Layer>& shards = sh.shards;
  if (sabotage) shards.pop_back();  // one rank's partial never arrives
  std::mt19937 g(7);
  int bad = 0;
  for (int n : {5, 1}) {  // prefill (grouped dispatch) and decode (fused single-token path)
    const std::vector<float> x = rnd(static_cast<size_t>(n) * c.hidden_size, 1.0f, g);
    const MoeOut ref = moe_block(c, full, x, n);
    std::vector<std::vector<float>> parts;
    for (const Layer& s : shards) {
      MoeOut m = moe_block(c, s, x, n);
      EXPECT_EQ(m.ids, ref.ids) << "the replicated router picks the same experts on every rank";
      EXPECT_EQ(m.wts, ref.wts);
      parts.push_back(std::move(m.out));
    }
    bad += count_outside(all_reduce(parts), ref.out, moe_tolerance(c, full, x, ref, n, n_ranks),
                         "moe N=" + std::to_string(n_ranks), !sabotage);
  }
  return bad;
}

}  // namespace

TEST(TpEmulation, AttentionOverTwoAndFourRanksEqualsUnsharded) {
  EXPECT_EQ(check_attention(2), 0);
  EXPECT_EQ(check_attention(4), 0);
}

TEST(TpEmulation, MoeOverTwoAndFourRanksEqualsUnsharded) {
  EXPECT_EQ(check_moe(2), 0);
  EXPECT_EQ(check_moe(4), 0);  // intermediate 50 over 4 ranks: uneven blocks 13, 13, 12, 12
}

TEST(TpEmulation, WrongShardsAreCaught) {
  // The tolerance is tight enough to see a wrong head block or a missing partial.
  EXPECT_GT(check_attention(2, true), 0);
  EXPECT_GT(check_moe(2, true), 0);
}

// ---------------------------------------------------------------- TP plan

TEST(ParallelPlan, ShardShapesSumToTheFullShapes) {
  const ModelConfig c = preset_config("mixtral-8x7b");
  for (int n : {1, 2, 4, 8}) {
    const TpPlan p = plan_tensor_parallel(c, n, 1);
    ASSERT_EQ(static_cast<int>(p.shards.size()), n);
    int q_end = 0, kv_end = 0, i_end = 0;
    int64_t attention = 0, experts = 0, params = 0;
    for (const TpShard& s : p.shards) {
      EXPECT_EQ(s.q_rows.begin, q_end) << "contiguous q blocks";
      EXPECT_EQ(s.kv_rows.begin, kv_end);
      EXPECT_EQ(s.inter.begin, i_end);
      // Every q head of the rank reads a kv head of the same rank (whole GQA groups).
      const int group = c.num_attention_heads / c.num_key_value_heads;
      EXPECT_EQ(s.q_heads.begin / group, s.kv_heads.begin);
      EXPECT_EQ((s.q_heads.end - 1) / group, s.kv_heads.end - 1);
      q_end = s.q_rows.end;
      kv_end = s.kv_rows.end;
      i_end = s.inter.end;
      attention += s.attention_params;
      experts += s.expert_params;
      params += s.params;
    }
    EXPECT_EQ(q_end, c.q_dim());
    EXPECT_EQ(kv_end, c.kv_dim());
    EXPECT_EQ(i_end, c.intermediate_size);
    EXPECT_EQ(attention, c.attention_params());
    EXPECT_EQ(experts, c.num_local_experts * c.expert_params());
    // The sum over ranks is the model plus (N-1) more copies of what is replicated.
    const TpShard& s0 = p.shards[0];
    EXPECT_EQ(params, c.total_params() + (n - 1) * (c.num_hidden_layers * s0.replicated_layer_params + s0.replicated_params));
  }
}

TEST(ParallelPlan, MixtralBytesPerRankAtTwoRanks) {
  // By hand: per layer attention 4096 x (2 x 4096 + 2 x 1024) / 2 = 20971520, experts
  // 8 x 3 x 4096 x 7168 = 704643072, norms + router 10 x 4096 = 40960; x 32 layers plus
  // embedding + lm_head 2 x 32000 x 4096 and the final norm 4096 = 23483125760 params.
  const TpPlan p = plan_tensor_parallel(preset_config("mixtral-8x7b"), 2, 8);
  for (const TpShard& s : p.shards) {
    EXPECT_EQ(s.params, 23483125760LL);
    EXPECT_EQ(s.weight_bytes, 2 * 23483125760LL);
    EXPECT_EQ(s.kv_bytes_per_token, 32LL * 2 * 512 * 2);  // 4 of 8 kv heads of 128
  }
  ASSERT_EQ(p.per_layer.size(), 2u);
  for (const CollectiveSpec& col : p.per_layer) {
    EXPECT_EQ(col.elements, 8 * 4096);
    EXPECT_EQ(col.bytes, 8 * 4096 * 2);
    EXPECT_EQ(col.ring_bytes_per_rank, 8 * 4096 * 2);  // 2 (N-1)/N = 1 at N = 2
  }
  EXPECT_TRUE(plan_tensor_parallel(preset_config("mixtral-8x7b"), 1, 8).per_layer.empty());
  EXPECT_EQ(plan_tensor_parallel(preset_config("mixtral-8x7b"), 1, 8).shards[0].params,
            preset_config("mixtral-8x7b").total_params());
}

TEST(ParallelPlan, IndivisibleHeadsAreRejected) {
  const ModelConfig c = preset_config("mixtral-8x7b");
  EXPECT_NE(error_of([&] { plan_tensor_parallel(c, 3, 1); }).find("num_attention_heads 32 is not divisible by 3"),
            std::string::npos);
  EXPECT_NE(error_of([&] { plan_tensor_parallel(c, 16, 1); }).find("num_key_value_heads 8 is not divisible by 16"),
            std::string::npos);
  EXPECT_NE(error_of([&] { plan_tensor_parallel(c, 0, 1); }).find("ranks must be a positive integer"), std::string::npos);
}

TEST(ParallelPlan, UnevenIntermediateBlocks) {
  std::vector<int> sizes;
  for (int r = 0; r < 4; ++r) sizes.push_back(split_range(50, 4, r).size());
  EXPECT_EQ(sizes, (std::vector<int>{13, 13, 12, 12}));
  EXPECT_EQ(split_range(50, 4, 3).end, 50);
}

// ---------------------------------------------------------------- placement

TEST(Placement, EveryLayerExpertPlacedExactlyOnce) {
  RoutingParams rp{32, 8, 2, 3, ""};
  auto src = make_routing_source(parse_routing_spec("mixtral-locality"), rp);
  const auto usage = generate_trace(*src, rp, 500).usage_counts();
  for (int n : {1, 2, 4, 8})
    for (const auto& info : placement_policies()) {
      const ExpertPlacement p = make_placement(info.name, usage, 32, 8, n);
      for (int l = 0; l < 32; ++l) {
        std::multiset<int> seen;
        for (int r = 0; r < n; ++r) {
          const auto on = p.experts_on(l, r);
          EXPECT_EQ(static_cast<int>(on.size()), 8 / n) << info.name << " keeps expert memory even";
          seen.insert(on.begin(), on.end());
        }
        EXPECT_EQ(seen, (std::multiset<int>{0, 1, 2, 3, 4, 5, 6, 7})) << info.name << " layer " << l;
      }
    }
}

TEST(Placement, BalancedIsNoWorseThanRoundRobinUnderSkew) {
  // Hand-made skew that round-robin lines up on one rank: the popular experts are the even ones.
  const std::vector<int64_t> skew = {100, 1, 100, 1, 100, 1, 100, 1};
  const PlacementLoad rr = placement_load(place_round_robin(1, 8, 2), skew);
  const PlacementLoad bal = placement_load(place_balanced(skew, 1, 8, 2), skew);
  EXPECT_DOUBLE_EQ(rr.step_imbalance, 400.0 / 202.0);
  EXPECT_DOUBLE_EQ(bal.step_imbalance, 1.0);
  // Routing sources: mixtral-locality is skewed per layer, uniform is not.
  for (const char* source : {"mixtral-locality", "uniform"}) {
    RoutingParams rp{32, 8, 2, 9, ""};
    auto src = make_routing_source(parse_routing_spec(source), rp);
    const auto usage = generate_trace(*src, rp, 4000).usage_counts();
    for (int n : {2, 4}) {
      const PlacementLoad a = placement_load(place_round_robin(32, 8, n), usage);
      const PlacementLoad b = placement_load(place_balanced(usage, 32, 8, n), usage);
      for (int l = 0; l < 32; ++l) EXPECT_LE(b.layer_imbalance[l], a.layer_imbalance[l]) << source << " layer " << l;
      EXPECT_LE(b.step_imbalance, a.step_imbalance) << source << " N=" << n;
      EXPECT_GE(b.step_imbalance, 1.0);
      if (std::string(source) == "mixtral-locality") {
        EXPECT_LT(b.step_imbalance, a.step_imbalance) << "N=" << n;
      }
    }
  }
}

TEST(Placement, BadInputIsOneClearError) {
  EXPECT_NE(error_of([] { make_placement("random", {}, 1, 8, 2); }).find("placement policy 'random' is unknown"),
            std::string::npos);
  const std::vector<int64_t> short_usage(7, 1);
  EXPECT_NE(error_of([&] { place_balanced(short_usage, 1, 8, 2); }).find("7 entries, expected layers x experts = 8"),
            std::string::npos);
  EXPECT_NE(error_of([] { place_round_robin(1, 8, 9); }).find("ranks is 9"), std::string::npos);
  ExpertPlacement p = place_round_robin(1, 8, 2);
  p.rank_of[1] = 0;  // five experts on rank 0
  EXPECT_NE(error_of([&] { validate_placement(p, "hand"); }).find("more than 4 experts on rank 0"), std::string::npos);
}

// ---------------------------------------------------------------- all-to-all

TEST(AllToAll, HandPlanAtTwoRanks) {
  // Round-robin: even experts on rank 0, odd on rank 1. Tokens 0, 1 live on rank 0, 2, 3 on rank 1.
  const ExpertPlacement p = place_round_robin(1, 8, 2);
  const std::vector<int32_t> ids = {0, 2, /**/ 1, 2, /**/ 1, 3, /**/ 0, 5};
  const AllToAllPlan a = plan_all_to_all(p, 0, ids, block_homes(4, 2), 2, 4096);
  EXPECT_EQ(a.send_rows, (std::vector<int64_t>{2, 1, 1, 2}));
  EXPECT_EQ(a.expert_rows, (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(a.experts_run, (std::vector<int>{2, 3}));  // {0, 2} and {1, 3, 5}
  EXPECT_EQ(a.send_bytes(0), 4096 * 2);
  EXPECT_EQ(a.recv_bytes(0), 4096 * 2);
}

TEST(AllToAll, CountsConserveTokens) {
  RoutingParams rp{4, 8, 2, 17, ""};
  auto src = make_routing_source(parse_routing_spec("mixtral-locality"), rp);
  const RoutingTrace t = generate_trace(*src, rp, 6, 32);  // 6 steps of 32 tokens
  for (int n : {2, 4}) {
    const ExpertPlacement p = place_balanced(t.usage_counts(), 4, 8, n);
    for (int s = 0; s < t.n_steps(); ++s)
      for (int l = 0; l < 4; ++l) {
        const auto ids = t.ids(s, l);
        const auto home = block_homes(32, n);
        const AllToAllPlan a = plan_all_to_all(p, l, ids, home, 2, 64);
        // Every routing is computed once; every (token, owner rank) pair is one row.
        EXPECT_EQ(std::accumulate(a.expert_rows.begin(), a.expert_rows.end(), int64_t{0}), 32 * 2);
        int64_t pairs = 0;
        std::set<int> experts;
        std::vector<int64_t> from_home(n, 0);
        for (int i = 0; i < 32; ++i) {
          const std::set<int> owners = {p.rank(l, ids[i * 2]), p.rank(l, ids[i * 2 + 1])};
          pairs += static_cast<int64_t>(owners.size());
          from_home[home[i]] += static_cast<int64_t>(owners.size());
          experts.insert(ids[i * 2]);
          experts.insert(ids[i * 2 + 1]);
        }
        EXPECT_EQ(std::accumulate(a.send_rows.begin(), a.send_rows.end(), int64_t{0}), pairs);
        for (int r = 0; r < n; ++r) {
          int64_t row_sum = 0;
          for (int d = 0; d < n; ++d) row_sum += a.rows(r, d);
          EXPECT_EQ(row_sum, from_home[r]);
        }
        int64_t sent = 0, received = 0;
        for (int r = 0; r < n; ++r) {
          sent += a.send_bytes(r);
          received += a.recv_bytes(r);
        }
        EXPECT_EQ(sent, received);
        EXPECT_EQ(std::accumulate(a.experts_run.begin(), a.experts_run.end(), 0), static_cast<int>(experts.size()));
      }
  }
}

TEST(EpEmulation, ExpertParallelPlanComputesTheUnshardedMoe) {
  // Each rank runs the experts it holds for the rows the all-to-all plan sends it and
  // returns one gate-weighted row per (token, rank); the home adds them. The expert
  // outputs are bit-identical to the unsharded ones (same op, same input), so only the
  // top-k sum is reordered: each side is within gamma_{K+1} sum_k |w_k y_k| of exact.
  const Sharded sh(1, 31);
  const ModelConfig& c = sh.c;
  const int H = c.hidden_size, I = c.intermediate_size, E = c.num_local_experts, K = c.num_experts_per_tok, n = 6;
  std::mt19937 g(3);
  const std::vector<float> x = rnd(static_cast<size_t>(n) * H, 1.0f, g);
  const MoeOut ref = moe_block(c, sh.full, x, n);
  std::vector<float> h(static_cast<size_t>(n) * H), y(H), scratch(2 * I);
  cpu::rmsnorm(x.data(), sh.full.ffn_norm.data(), h.data(), n, H, c.rms_norm_eps);
  std::vector<int64_t> usage(E, 0);
  for (int32_t e : ref.ids) ++usage[e];
  for (int N : {2, 4}) {
    const ExpertPlacement p = place_balanced(usage, 1, E, N);
    const std::vector<int> home = block_homes(n, N);
    const AllToAllPlan plan = plan_all_to_all(p, 0, ref.ids, home, K, H);
    std::vector<float> out(static_cast<size_t>(n) * H, 0.0f);
    std::vector<double> tol(static_cast<size_t>(n) * H, 0.0);
    std::vector<int64_t> rows(static_cast<size_t>(N) * N, 0), computed(N, 0);
    for (int t = 0; t < n; ++t)
      for (int r = 0; r < N; ++r) {  // rank r's part of token t, added at the home in rank order
        std::vector<float> part(H, 0.0f);
        bool sent = false;
        for (int k = 0; k < K; ++k) {
          const int e = ref.ids[t * K + k];
          if (p.rank(0, e) != r) continue;
          sent = true;
          ++computed[r];
          cpu::swiglu_expert(&h[static_cast<size_t>(t) * H], sh.full.w1[e].data(), sh.full.w3[e].data(),
                             sh.full.w2[e].data(), y.data(), scratch.data(), 1, H, I);
          const float w = ref.wts[t * K + k];
          for (int j = 0; j < H; ++j) {
            part[j] += w * y[j];
            tol[static_cast<size_t>(t) * H + j] += 2 * gamma_m(K + 1) * std::fabs(static_cast<double>(w) * y[j]);
          }
        }
        if (!sent) continue;
        ++rows[static_cast<size_t>(home[t]) * N + r];
        for (int j = 0; j < H; ++j) out[static_cast<size_t>(t) * H + j] += part[j];
      }
    EXPECT_EQ(rows, plan.send_rows) << "N=" << N << ": rows moved are the plan's";
    EXPECT_EQ(computed, plan.expert_rows) << "N=" << N;
    EXPECT_EQ(count_outside(out, ref.out, tol, "expert parallel N=" + std::to_string(N)), 0);
  }
}

// ---------------------------------------------------------------- the bound

TEST(ParallelBound, HandTraceExpertAndTensorParallel) {
  RoutingTrace t;
  t.n_layers = 2;
  t.n_experts = 8;
  t.top_k = 2;
  RoutingStep& s = t.add_step(2, false);
  s.ids = {0, 2, 0, 4, /* layer 1 */ 1, 2, 3, 2};
  ParallelBoundParams b;
  b.hbm_gbps = 1.0;  // 1 byte per ns
  b.expert_bytes = 100;
  b.dense_layer_bytes = 10;
  b.step_bytes = 5;
  b.collective_ns_per_layer = 7;
  // Round-robin over 2: layer 0 runs experts 0, 2, 4 on rank 0 (310 bytes) and none on
  // rank 1 (10); layer 1 runs 2 on rank 0 (110) and 1, 3 on rank 1 (210).
  const ParallelSimResult ep = simulate_expert_parallel(t, place_round_robin(2, 8, 2), b);
  EXPECT_EQ(ep.step_ns, (std::vector<int64_t>{5 + 310 + 7 + 210 + 7}));
  EXPECT_EQ(ep.rank_experts, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(ep.rank_rows, (std::vector<int64_t>{6, 2}));
  EXPECT_EQ(ep.rank_bytes, (std::vector<int64_t>{5 + 310 + 110, 5 + 10 + 210}));
  EXPECT_DOUBLE_EQ(ep.step_imbalance[0], 520.0 / 320.0);
  EXPECT_DOUBLE_EQ(ep.tokens_per_s, 2 * 1e9 / 539);
  // Tensor parallel: both ranks run a slice of all three experts of each layer.
  const ParallelSimResult tp = simulate_tensor_parallel(t, 2, b);
  EXPECT_EQ(tp.step_ns, (std::vector<int64_t>{5 + 2 * (310 + 7)}));
  EXPECT_DOUBLE_EQ(tp.step_imbalance[0], 1.0);
  b.hbm_gbps = 0;
  EXPECT_NE(error_of([&] { simulate_tensor_parallel(t, 2, b); }).find("hbm_gbps is 0"), std::string::npos);
}

TEST(ParallelBound, PlanFeedsTheBound) {
  const ModelConfig c = preset_config("mixtral-8x7b");
  const ParallelDtypes d;
  const ParallelBoundParams tp = tp_bound_params(plan_tensor_parallel(c, 2, 1), d, 4800, 20000);
  EXPECT_EQ(tp.expert_bytes, 3LL * 4096 * 7168 * 2);
  EXPECT_EQ(tp.dense_layer_bytes, (20971520LL + 40960) * 2);
  const ParallelBoundParams ep = ep_bound_params(c, d, 4800, 20000);
  EXPECT_EQ(ep.expert_bytes, 3LL * 4096 * 14336 * 2);
  const auto bytes = ep_rank_weight_bytes(c, place_round_robin(32, 8, 2), d);
  ASSERT_EQ(bytes.size(), 2u);
  EXPECT_EQ(bytes[0], bytes[1]);
  EXPECT_EQ(bytes[0] + bytes[1] - c.total_params() * 2,
            (32 * (c.attention_params() + 10 * 4096LL) + 2 * 32000LL * 4096 + 4096) * 2)
      << "the sum over ranks is the model plus one more copy of what is replicated";
  // One decode token of mixtral-locality: EP at batch 1 reads whole experts, TP half of
  // each; with the same collective latency TP's bound is the lower here.
  RoutingParams rp{32, 8, 2, 1, ""};
  auto src = make_routing_source(parse_routing_spec("mixtral-locality"), rp);
  const RoutingTrace t = generate_trace(*src, rp, 20);
  const ParallelSimResult ep_r = simulate_expert_parallel(t, place_balanced(t.usage_counts(), 32, 8, 2), ep);
  const ParallelSimResult tp_r = simulate_tensor_parallel(t, 2, tp);
  EXPECT_LT(tp_r.decode_ns, ep_r.decode_ns);
  EXPECT_GE(ep_r.mean_imbalance(), 1.0);
}

// ---------------------------------------------------------------- rank threads

// Every job of rank r runs on one thread of its own (the one setup(r) ran on, where a GPU
// model makes its device current), for the threads' whole life.
TEST(RankThreads, EachRankKeepsItsThread) {
  for (int n : {1, 2, 4, 8}) {
    std::vector<std::thread::id> setup_on(n), first(n);
    std::vector<int> setups(n, 0);
    RankThreads t(n, [&](int r) {
      setup_on[r] = std::this_thread::get_id();
      ++setups[r];
    });
    std::vector<int> runs(n, 0);
    for (int job = 0; job < 200; ++job)
      t.run([&](int r) {
        EXPECT_EQ(std::this_thread::get_id(), setup_on[r]) << "rank " << r << " job " << job;
        ++runs[r];
      });
    std::set<std::thread::id> distinct(setup_on.begin(), setup_on.end());
    EXPECT_EQ(static_cast<int>(distinct.size()), n);
    EXPECT_EQ(distinct.count(std::this_thread::get_id()), 0u) << "a rank ran on the caller's thread";
    for (int r = 0; r < n; ++r) {
      EXPECT_EQ(setups[r], 1) << "rank " << r;
      EXPECT_EQ(runs[r], 200) << "rank " << r;
    }
  }
}

// run() returns only when every rank is done, and rethrows the lowest throwing rank's
// error after all ranks finished; the threads take the next job afterwards.
TEST(RankThreads, ErrorsComeBackAfterEveryRankFinished) {
  RankThreads t(4, [](int) {});
  std::vector<int> done(4, 0);
  const std::string e = error_of([&] {
    t.run([&](int r) {
      if (r == 1 || r == 3) fail("rank {} failed", r);
      done[r] = 1;
    });
  });
  EXPECT_EQ(e, "rank 1 failed");
  EXPECT_EQ(done, (std::vector<int>{1, 0, 1, 0}));
  std::vector<int> again(4, 0);
  t.run([&](int r) { again[r] = r + 10; });
  EXPECT_EQ(again, (std::vector<int>{10, 11, 12, 13}));
  // A failed setup fails every job of that rank, the others still run.
  RankThreads bad(2, [](int r) {
    if (r == 1) fail("no device for rank {}", r);
  });
  std::vector<int> ran(2, 0);
  EXPECT_EQ(error_of([&] { bad.run([&](int r) { ran[r] = 1; }); }), "no device for rank 1");
  EXPECT_EQ(ran, (std::vector<int>{1, 0}));
  EXPECT_EQ(error_of([] { RankThreads none(0, {}); }), "rank threads: 0 ranks (expected at least 1)");
}

// ---------------------------------------------------------------- simulate-parallel

// The command prints, per GPU count, tensor parallel and expert parallel under every
// placement: the numbers of the library calls on the same trace (balanced placed on
// another seed's counts), and a layout the model cannot take is one line, exit 1.
TEST(SimulateParallel, CommandGivesTheLibrarysBoundPerLayout) {
  test::TempDir d;
  const test::CliRun r = test::run_moebench({"simulate-parallel", "--routing", "mixtral-locality", "--tokens", "48",
                                             "--tokens-per-step", "8", "--ranks", "2,4", "--hbm-gbps", "4800",
                                             "--collective-us", "20", "--json"},
                                            d);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const ModelConfig c = preset_config("mixtral-8x7b");
  RoutingParams p{32, 8, 2, 1, ""};
  auto src = make_routing_source(parse_routing_spec("mixtral-locality"), p);
  const RoutingTrace t = generate_trace(*src, p, 6, 8);
  RoutingParams cal_p = p;
  cal_p.seed = 2;
  auto cal_src = make_routing_source(parse_routing_spec("mixtral-locality"), cal_p);
  const std::vector<int64_t> usage = generate_trace(*cal_src, cal_p, 6, 8).usage_counts();
  const auto& rows = j.at("results");
  ASSERT_EQ(rows.size(), 2 * (1 + placement_policies().size()));
  size_t i = 0;
  for (int n : {2, 4}) {
    const ParallelSimResult tp =
        simulate_tensor_parallel(t, n, tp_bound_params(plan_tensor_parallel(c, n, 8), {}, 4800, 20000));
    EXPECT_EQ(rows[i].at("layout"), "tp");
    EXPECT_EQ(rows[i].at("ranks"), n);
    EXPECT_DOUBLE_EQ(rows[i].at("tokens_per_s").get<double>(), tp.tokens_per_s) << n;
    EXPECT_DOUBLE_EQ(rows[i].at("mean_step_imbalance").get<double>(), 1.0) << "every TP rank reads the same slices";
    ++i;
    for (const auto& info : placement_policies()) {
      const ExpertPlacement pl = make_placement(info.name, usage, 32, 8, n);
      const ParallelSimResult ep = simulate_expert_parallel(t, pl, ep_bound_params(c, {}, 4800, 20000));
      EXPECT_EQ(rows[i].at("layout"), "ep");
      EXPECT_EQ(rows[i].at("placement"), info.name);
      EXPECT_DOUBLE_EQ(rows[i].at("tokens_per_s").get<double>(), ep.tokens_per_s) << info.name << " " << n;
      EXPECT_DOUBLE_EQ(rows[i].at("mean_step_imbalance").get<double>(), ep.mean_imbalance()) << info.name << " " << n;
      ++i;
    }
  }
  EXPECT_GT(rows[1 + placement_policies().size()].at("tokens_per_s").get<double>(), rows[0].at("tokens_per_s").get<double>())
      << "TP over 4 GPUs reads half of TP over 2's bytes per GPU";
  const test::CliRun bad = test::run_moebench(
      {"simulate-parallel", "--routing", "uniform", "--tokens", "8", "--ranks", "3", "--hbm-gbps", "4800"}, d);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("num_attention_heads 32 is not divisible by 3"), std::string::npos) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  const test::CliRun shape = test::run_moebench(
      {"simulate-parallel", "--routing", "uniform", "--layers", "4", "--tokens", "8", "--ranks", "2", "--hbm-gbps", "4800"}, d);
  EXPECT_EQ(shape.code, 1);
  EXPECT_NE(shape.err.find("4 layers x 8 experts, top-2, model mixtral-8x7b has 32 x 8, top-2"), std::string::npos)
      << shape.err;
}

}  // namespace parallel_test
