// shard_test.cpp: the tensor-parallel shards a rank uploads (engine/shard.h), on the
// CPU: every tensor's slices over the ranks tile the full tensor exactly (rows
// concatenate, column blocks interleave), the rank config's tensor shapes are the
// slices' shapes, a row block is the synthetic generator's run at its offset (what the
// CUDA upload generates in place), per-rank bytes match the partition plan, and the
// tensor_parallel knob fails with one line naming what does not divide.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/engine.h"
#include "engine/parallel_plan.h"
#include "engine/shard.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "variants/routing.h"
#include "model/settings.h"

namespace shard_test {

using namespace moebench;

namespace {

std::vector<uint16_t> synth_values(const TensorSpec& s, uint64_t seed) {
  std::vector<uint16_t> v(static_cast<size_t>(s.numel()));
  synth_fill(s, seed, DType::bf16, v.data(), 0, s.numel());
  return v;
}

ModelConfig uneven_config() {  // 8 q heads, 4 kv heads, an intermediate size 4 does not divide
  ModelConfig c = preset_config("tiny");
  c.name = "uneven";
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 16;
  c.intermediate_size = 50;
  c.num_hidden_layers = 2;
  c.vocab_size = 64;
  return c;
}

// Every tensor of `c`: the ranks' slices rebuild the full tensor, and each slice has the
// shape of the same tensor in the rank's config.
void check_tiling(const ModelConfig& c, int world) {
  std::vector<std::map<std::string, TensorSpec>> rank_specs(world);
  for (int r = 0; r < world; ++r)
    for (auto& s : model_tensor_specs(tp_rank_config(c, r, world))) rank_specs[r][s.name] = s;
  int sliced = 0;
  for (const TensorSpec& full : model_tensor_specs(c)) {
    const std::vector<uint16_t> whole = synth_values(full, 7);
    const int64_t rows = full.shape[0], cols = full.numel() / rows;
    std::vector<uint16_t> rebuilt(whole.size(), 0xFFFF);
    for (int r = 0; r < world; ++r) {
      const TensorSlice sl = tp_slice(c, full.name, r, world);
      const TensorSpec part = slice_spec(full, sl);
      ASSERT_EQ(part.shape, rank_specs[r].at(full.name).shape) << full.name << " rank " << r;
      const std::vector<uint16_t> mine = slice_tensor(whole.data(), full, sl);
      ASSERT_EQ(static_cast<int64_t>(mine.size()), part.numel()) << full.name;
      if (sl.kind == TensorSlice::Kind::full) {
        ASSERT_EQ(mine, whole) << full.name;
        continue;
      }
      ++sliced;
      for (int64_t i = 0; i < part.shape[0]; ++i)
        for (int64_t j = 0; j < part.shape[1]; ++j) {
          const int64_t fi = sl.kind == TensorSlice::Kind::rows ? sl.range.begin + i : i;
          const int64_t fj = sl.kind == TensorSlice::Kind::cols ? sl.range.begin + j : j;
          rebuilt[fi * cols + fj] = mine[i * part.shape[1] + j];
        }
    }
    if (tp_slice(c, full.name, 0, world).kind != TensorSlice::Kind::full) {
      EXPECT_EQ(rebuilt, whole) << full.name;
    }
  }
  // q, k, v, o per layer and w1, w2, w3 per expert.
  EXPECT_EQ(sliced, world * c.num_hidden_layers * (4 + 3 * c.num_local_experts));
}

}  // namespace

TEST(Shard, SlicesTileTheFullTensors) {
  check_tiling(preset_config("tiny"), 2);
  check_tiling(uneven_config(), 2);
  check_tiling(uneven_config(), 4);  // intermediate 50 over 4: blocks of 13, 13, 12, 12
  ModelConfig eight = uneven_config();  // Mixtral's natural 8-way layout: one kv head per rank
  eight.num_attention_heads = 16;
  eight.num_key_value_heads = 8;
  eight.head_dim = 8;
  check_tiling(eight, 8);  // intermediate 50 over 8: blocks of 7, 7, 6, ..., 6
}

TEST(Shard, WhichDimensionEachTensorSplits) {
  const ModelConfig c = preset_config("mixtral-8x7b");
  using K = TensorSlice::Kind;
  const TensorSlice q = tp_slice(c, names::layer(3, "self_attn.q_proj.weight"), 1, 2);
  EXPECT_EQ(q.kind, K::rows);
  EXPECT_EQ(q.range.begin, 2048);
  EXPECT_EQ(q.range.end, 4096);
  const TensorSlice k = tp_slice(c, names::layer(3, "self_attn.k_proj.weight"), 1, 2);
  EXPECT_EQ(k.kind, K::rows);
  EXPECT_EQ(k.range.begin, 512);
  EXPECT_EQ(k.range.end, 1024);
  const TensorSlice o = tp_slice(c, names::layer(3, "self_attn.o_proj.weight"), 0, 2);
  EXPECT_EQ(o.kind, K::cols);
  EXPECT_EQ(o.range.end, 2048);
  EXPECT_EQ(tp_slice(c, names::expert(0, 5, "w1"), 1, 2).kind, K::rows);
  EXPECT_EQ(tp_slice(c, names::expert(0, 5, "w3"), 1, 2).range.begin, 7168);
  EXPECT_EQ(tp_slice(c, names::expert(0, 5, "w2"), 1, 2).kind, K::cols);
  for (const char* rep : {"input_layernorm.weight", "post_attention_layernorm.weight", "block_sparse_moe.gate.weight"})
    EXPECT_EQ(tp_slice(c, names::layer(0, rep), 1, 2).kind, K::full) << rep;
  EXPECT_EQ(tp_slice(c, names::embed(), 1, 2).kind, K::full);
  EXPECT_EQ(tp_slice(c, names::lm_head(), 1, 2).kind, K::full);
  EXPECT_EQ(tp_slice(c, names::final_norm(), 1, 2).kind, K::full);
  const ModelConfig r1 = tp_rank_config(c, 1, 2);
  EXPECT_EQ(r1.num_attention_heads, 16);
  EXPECT_EQ(r1.num_key_value_heads, 4);
  EXPECT_EQ(r1.intermediate_size, 7168);
  EXPECT_EQ(r1.head_dim, 128);
  EXPECT_EQ(r1.hidden_size, 4096);
}

// What the CUDA upload generates in place for a row block: the generator's values from
// the block's first element on, equal to the block cut from the whole tensor.
TEST(Shard, RowBlockIsTheGeneratorAtItsOffset) {
  const ModelConfig c = uneven_config();
  for (const std::string& name : {names::expert(1, 3, "w1"), names::layer(0, "self_attn.k_proj.weight")}) {
    const TensorSpec full = tensor_spec(c, name);
    const std::vector<uint16_t> whole = synth_values(full, 11);
    for (int r = 0; r < 4; ++r) {
      const TensorSlice sl = tp_slice(c, name, r, 4);
      ASSERT_EQ(sl.kind, TensorSlice::Kind::rows);
      const TensorSpec part = slice_spec(full, sl);
      std::vector<uint16_t> gen(static_cast<size_t>(part.numel()));
      synth_fill(full, 11, DType::bf16, gen.data(), static_cast<int64_t>(sl.range.begin) * full.shape[1], part.numel());
      EXPECT_EQ(gen, slice_tensor(whole.data(), full, sl)) << name << " rank " << r;
    }
  }
}

// The bytes of a rank's tensors are the plan's per-rank parameters (Mixtral-8x7B at 2:
// 23,483,125,760 each), so the memory plan of a rank is the plan's.
TEST(Shard, RankTensorsHoldThePlansParameters) {
  const ModelConfig c = preset_config("mixtral-8x7b");
  const TpPlan plan = plan_tensor_parallel(c, 2, 1);
  for (int r = 0; r < 2; ++r) {
    int64_t params = 0;
    for (auto& s : model_tensor_specs(tp_rank_config(c, r, 2))) params += s.numel();
    EXPECT_EQ(params, plan.shards[r].params);
  }
  EXPECT_EQ(plan.shards[0].params, 23483125760LL);
}

TEST(Shard, KnobIsParsedAndCheckedWithOneLine) {
  EngineSettings s;
  EXPECT_EQ(s.tensor_parallel, 1);
  bool listed = false;
  for (auto& [k, v] : s.to_list()) listed = listed || (k == "tensor_parallel" && v == "1");
  EXPECT_TRUE(listed);
  s.set("tensor_parallel", "2");
  EXPECT_EQ(s.tensor_parallel, 2);
  try {
    s.set("tensor_parallel", "0");
    FAIL() << "tensor_parallel=0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor_parallel=0: expected an integer >= 1"), std::string::npos) << e.what();
  }
  ModelConfig c = preset_config("tiny");  // 4 q heads, 2 kv heads
  EXPECT_NO_THROW(check_parallel_knobs(c, 2, 1));
  try {
    check_parallel_knobs(c, 3, 1);
    FAIL() << "3 ranks over 4 heads accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("tensor_parallel=3: num_attention_heads 4 of tiny is not divisible by 3"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  c.num_key_value_heads = 1;
  try {
    check_parallel_knobs(c, 2, 1);
    FAIL() << "1 kv head over 2 ranks accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_key_value_heads 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tp_rank_config(c, 0, 2), Error);
  // The other families are not sharded: one line naming the family.
  try {
    check_parallel_knobs(preset_config("tiny-qwen3"), 2, 1);
    FAIL() << "tensor parallel over a qwen3_moe model accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a qwen3_moe model"), std::string::npos) << e.what();
  }
}

// The all-reduce memory knob: auto by default, three values, anything else one line.
TEST(Shard, AllReduceMemoryKnob) {
  EngineSettings s;
  EXPECT_EQ(s.tp_allreduce, "auto");
  for (const char* v : {"symmetric", "plain", "lsa", "auto"}) {
    s.set("tp_allreduce", v);
    EXPECT_EQ(s.tp_allreduce, v);
  }
  try {
    s.set("tp_allreduce", "nvls");
    FAIL() << "tp_allreduce=nvls accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "setting tp_allreduce=nvls: expected one of auto|symmetric|plain|lsa");
  }
  bool listed = false;
  for (auto& [k, v] : s.to_list()) listed = listed || (k == "tp_allreduce" && v == "auto");
  EXPECT_TRUE(listed);
}

TEST(Shard, CpuBackendRefusesTensorParallel) {
  const WeightSource w = WeightSource::open("synthetic:tiny:layers=1", 1);
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = "cpu";
  ctx.settings.tensor_parallel = 2;
  try {
    create_model(ctx);
    FAIL() << "cpu backend with tensor_parallel=2 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor_parallel=2: tensor parallelism runs on the cuda backend"),
              std::string::npos)
        << e.what();
  }
}

// Expert parallel's knobs: expert_parallel (an integer, not with tensor_parallel, at most
// the experts of a layer; the cpu backend refuses it) and ep_placement, whose placement
// for a run is round-robin, or balanced on the counts of another seed of the routing
// source (never worse than round-robin on those counts; routing=model has none: one line).
TEST(Shard, ExpertParallelKnobsAndPlacement) {
  EngineSettings s;
  EXPECT_EQ(s.expert_parallel, 1);
  EXPECT_EQ(s.ep_placement, "round-robin");
  EXPECT_EQ(s.tp_reduce, "residual");
  s.set("tp_reduce", "partial");
  EXPECT_EQ(s.tp_reduce, "partial");
  EXPECT_THROW(s.set("tp_reduce", "both"), Error);
  s.set("expert_parallel", "2");
  s.set("ep_placement", "balanced");
  EXPECT_EQ(s.expert_parallel, 2);
  EXPECT_EQ(s.ep_placement, "balanced");
  EXPECT_THROW(s.set("ep_placement", "random"), Error);
  bool listed = false;
  for (auto& [k, v] : s.to_list()) listed = listed || (k == "expert_parallel" && v == "2");
  EXPECT_TRUE(listed);
  const ModelConfig c = preset_config("mixtral-8x7b");
  EXPECT_NO_THROW(check_parallel_knobs(c, 1, 8));
  EXPECT_THROW(check_parallel_knobs(c, 1, 16), Error);
  EXPECT_THROW(check_parallel_knobs(c, 2, 2), Error);

  s.ep_placement = "round-robin";
  const ExpertPlacement rr = ep_placement_for(s, c, 2);
  EXPECT_EQ(rr.policy, "round-robin");
  EXPECT_EQ(rr.rank(5, 3), 1);
  EXPECT_EQ(rr.experts_on(0, 0), (std::vector<int>{0, 2, 4, 6}));
  s.ep_placement = "balanced";
  try {
    ep_placement_for(s, c, 2);  // routing=model
    FAIL() << "balanced placement without a routing source accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("ep_placement=balanced: needs routing counts"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  s.routing = "mixtral-locality";
  const ExpertPlacement bal = ep_placement_for(s, c, 2);
  validate_placement(bal, "balanced");
  EXPECT_EQ(bal.policy, "balanced");
  EXPECT_EQ(bal.rank_of, ep_placement_for(s, c, 2).rank_of);  // deterministic: the same seed, the same placement
  // Balanced on the calibration counts: no worse than round-robin there.
  RoutingParams p{c.num_hidden_layers, c.num_local_experts, c.num_experts_per_tok, s.routing_seed + 1, ""};
  auto src = make_routing_source(parse_routing_spec(s.routing), p);
  const std::vector<int64_t> usage = generate_trace(*src, p, kEpCalibrationTokens, 1).usage_counts();
  EXPECT_LE(placement_load(bal, usage).step_imbalance, placement_load(rr, usage).step_imbalance);

  const WeightSource w = WeightSource::open("synthetic:tiny:layers=1", 1);
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = "cpu";
  ctx.settings.expert_parallel = 2;
  try {
    create_model(ctx);
    FAIL() << "cpu backend with expert_parallel=2 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expert_parallel=2: expert parallelism runs on the cuda backend"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace shard_test
