// moe_variants_test.cpp: MoE strategies, expert tiers, cache policies and routing
// sources never change what the CPU model computes, the engine's hit rate
// equals the simulator's, and pooled buffers allocate nothing in steady state.
#include <gtest/gtest.h>

#include <cstring>

#include "engine/cpu_expert_provider.h"
#include "engine/cpu_model.h"
#include "engine/generate.h"
#include "engine/routing_recorder.h"
#include "engine/synth_checkpoint.h"
#include "profiler/counters.h"
#include "teacher_forced.h"
#include "test_util.h"
#include "variants/simulator.h"

namespace moe_variants_test {

using namespace moebench;

namespace {

const std::vector<int32_t> kPrompt = {1, 415, 293, 90, 285, 114, 287, 461, 75, 2};  // < 512: fits micro

std::vector<int32_t> greedy(const WeightSource& w, const EngineSettings& s, int new_tokens = 16,
                            profiler::Profiler* prof = nullptr) {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.settings = s;
  ctx.prof = prof;
  CpuModel m(ctx);
  GenerateOptions opt;
  opt.max_new_tokens = new_tokens;
  opt.stop_at_eos = false;
  return generate(m, kPrompt, opt).output;
}

// Logits of the prompt and 8 teacher-forced decode steps.
std::vector<float> logits_of(const WeightSource& w, const EngineSettings& s, RoutingRecorder* rec = nullptr,
                             profiler::Profiler* prof = nullptr) {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.settings = s;
  ctx.prof = prof;
  CpuModel m(ctx);
  if (rec) m.set_routing_observer(std::ref(*rec));
  return test::teacher_forced_logits(m, kPrompt);
}

EngineSettings resident(const std::string& d = "fused", const std::string& c = "fused", const std::string& b = "pooled") {
  EngineSettings s;
  s.expert_tier = "resident";
  s.dispatch = d;
  s.combine = c;
  s.buffers = b;
  return s;
}

}  // namespace

TEST(MoeVariants, EveryStrategyGivesTheSameGreedyTokens) {
  auto w = WeightSource::synthetic(preset_config("tiny"), 3);
  auto ref = greedy(w, resident());
  for (const char* d : {"serial", "grouped", "fused"})
    for (const char* c : {"loop", "index_add", "fused"})
      for (const char* b : {"alloc", "pooled"}) {
        EXPECT_EQ(greedy(w, resident(d, c, b)), ref) << d << "/" << c << "/" << b;
      }
}

TEST(MoeVariants, TiersAndPoliciesAreBitwiseIdenticalToResident) {
  ModelConfig c = preset_config("micro");
  test::TempDir dir;
  write_synthetic_checkpoint(c, 11, DType::bf16, dir.str());
  auto w = WeightSource::checkpoint(dir.str());
  for (const char* strat : {"serial", "grouped"}) {
    EngineSettings base = resident(strat, "index_add", "pooled");
    auto ref = logits_of(w, base);
    for (const char* tier : {"pinned", "disk"})
      for (const char* pol : {"none", "lru", "lfu", "prefetch"}) {
        EngineSettings s = base;
        s.expert_tier = tier;
        s.cache_policy = pol;
        s.cache_slots = 3;  // fewer than the 4 experts of one layer: prefill reuses slots
        EXPECT_EQ(logits_of(w, s), ref) << strat << " " << tier << " " << pol;
      }
  }
}

TEST(MoeVariants, TraceReplayReproducesTheRunBitwise) {
  test::TempDir dir;
  auto w = WeightSource::synthetic(preset_config("micro"), 2);
  EngineSettings s = resident();
  s.routing = "mixtral-locality";
  RoutingRecorder rec(2, 4, 2, "test");
  auto a = logits_of(w, s, &rec);
  save_trace(rec.trace(), dir.str("t.json"));
  s.routing = "trace:" + dir.str("t.json");
  RoutingRecorder rec2(2, 4, 2, "test");
  auto b = logits_of(w, s, &rec2);
  EXPECT_EQ(a, b);
  EXPECT_EQ(rec.trace().steps.size(), rec2.trace().steps.size());
  for (size_t i = 0; i < rec.trace().steps.size(); ++i) EXPECT_EQ(rec.trace().steps[i].ids, rec2.trace().steps[i].ids);
  // The model's own routing differs from the locality source's choices.
  EXPECT_NE(logits_of(w, resident()), a);
}

TEST(MoeVariants, EngineHitRateEqualsSimulator) {
  test::TempDir dir;
  auto w = WeightSource::synthetic(preset_config("micro"), 4);
  // Record the routing of a mixtral-locality run once, then replay it under each policy.
  EngineSettings rs = resident();
  rs.routing = "mixtral-locality";
  RoutingRecorder rec(2, 4, 2, "test");
  logits_of(w, rs, &rec);
  save_trace(rec.trace(), dir.str("t.json"));
  for (const char* pol : {"none", "lru", "lfu", "static", "belady", "prefetch"})
    for (int cap : {2, 3, 5}) {
      EngineSettings s = resident("grouped", "index_add", "pooled");
      s.expert_tier = "pinned";
      s.cache_policy = pol;
      s.cache_slots = cap;
      s.routing = "trace:" + dir.str("t.json");
      EngineContext ctx;
      ctx.weights = &w;
      ctx.settings = s;
      CpuModel m(ctx);
      test::teacher_forced_logits(m, kPrompt);
      auto& prov = dynamic_cast<const CpuCachedProvider&>(m.experts());
      SimOptions opt;
      opt.link.h2d_gbps = 50;
      // prefetch: the engine predicts from the replayed trace exactly as the simulator does.
      opt.prediction.accuracy = s.prefetch_accuracy;
      opt.prediction.seed = s.routing_seed;
      SimResult sim = simulate(rec.trace(), pol, cap, opt);
      ASSERT_TRUE(sim.error.empty()) << sim.error;
      EXPECT_EQ(prov.cache().counters().hits, sim.counters.hits) << pol << " cap " << cap;
      EXPECT_EQ(prov.cache().counters().misses, sim.counters.misses) << pol << " cap " << cap;
    }
}

TEST(MoeVariants, PooledBuffersAllocateNothingInSteadyStateDecode) {
  auto w = WeightSource::synthetic(preset_config("micro"), 5);
  for (const char* d : {"serial", "grouped", "fused"}) {
    EngineContext ctx;
    ctx.weights = &w;
    ctx.settings = resident(d, "index_add", "pooled");
    CpuModel m(ctx);
    std::vector<float> l(w.config().vocab_size);
    m.forward(kPrompt.data(), static_cast<int>(kPrompt.size()), 0, l.data());
    int32_t t = 7;
    m.forward(&t, 1, static_cast<int>(kPrompt.size()), l.data());  // first decode sizes the pool
    const int64_t before = m.moe_workspace().allocations;
    for (int i = 1; i < 10; ++i) m.forward(&t, 1, static_cast<int>(kPrompt.size()) + i, l.data());
    EXPECT_EQ(m.moe_workspace().allocations, before) << d;
    // alloc allocates on every pass: the counter can tell the two apart.
    ctx.settings = resident(d, "index_add", "alloc");
    CpuModel a(ctx);
    a.forward(kPrompt.data(), static_cast<int>(kPrompt.size()), 0, l.data());
    const int64_t b2 = a.moe_workspace().allocations;
    a.forward(&t, 1, static_cast<int>(kPrompt.size()), l.data());
    EXPECT_GT(a.moe_workspace().allocations, b2) << d;
  }
}

TEST(MoeVariants, ProfilerCountsHitsMissesAndBytes) {
  auto w = WeightSource::synthetic(preset_config("micro"), 6);
  EngineSettings s = resident();
  s.expert_tier = "pinned";
  s.cache_policy = "lru";
  s.cache_slots = 4;
  profiler::Profiler prof;
  logits_of(w, s, nullptr, &prof);
  const auto& t = prof.experts.total();
  EXPECT_GT(t.misses, 0);
  EXPECT_GT(t.hits, 0);
  const ModelConfig& c = w.config();
  EXPECT_EQ(t.bytes_moved, t.loads * 3LL * c.hidden_size * c.intermediate_size * 2);
}

}  // namespace moe_variants_test
