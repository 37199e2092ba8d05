// cuda_offload_model_test.cpp: the CUDA model with experts offloaded (pinned host store
// and disk tier, OffloadProvider) — skipped, with a message, without a GPU.
//   * every tier x policy gives logits bitwise identical to the resident path with the
//     same strategy (offloading moves bytes; it must not change a single bit), for the
//     model's gate and for a synthetic routing source;
//   * a run replayed from the trace it recorded reproduces it bitwise;
//   * for the same trace and capacity, the engine's hits and misses equal simulate()'s,
//     prefetch included (the engine predicts from the replayed routing with the
//     simulator's predictor, same seed);
//   * a budget below the non-expert weights + top_k slots fails up front naming the minimum.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <string>
#include <vector>

#include "engine/cuda/cuda_model.h"
#include "engine/cuda/device.h"
#include "common/error.h"
#include "engine/routing_recorder.h"
#include "engine/synth_checkpoint.h"
#include "profiler/counters.h"
#include "teacher_forced.h"
#include "test_util.h"
#include "variants/simulator.h"

using namespace moebench;

namespace {

const std::vector<int32_t> kPrompt{5, 17, 29, 41, 53, 65, 77};

EngineSettings settings(const std::string& dispatch, const std::string& combine = "index_add") {
  EngineSettings s;
  s.dispatch = dispatch;
  s.combine = combine;
  s.buffers = "pooled";
  s.max_model_len = 64;
  s.max_num_batched_tokens = 32;
  s.gpu_mem_budget = "1GiB";
  return s;
}

// Logits of the prompt and 8 teacher-forced decode steps.
std::vector<float> logits_of(const WeightSource& w, const EngineSettings& s, RoutingRecorder* rec = nullptr,
                             profiler::Profiler* prof = nullptr) {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = "cuda";
  ctx.settings = s;
  ctx.prof = prof;
  cuda::CudaModel m(ctx);
  if (rec) m.set_routing_observer(std::ref(*rec));
  return test::teacher_forced_logits(m, kPrompt);
}

class CudaOffloadModel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA offload model tests skipped";
  }
};

}  // namespace

TEST_F(CudaOffloadModel, TiersAndPoliciesAreBitwiseIdenticalToResident) {
  ModelConfig c = preset_config("micro");
  test::TempDir dir;
  write_synthetic_checkpoint(c, 11, DType::bf16, dir.str());
  auto w = WeightSource::checkpoint(dir.str());
  for (const char* routing : {"model", "mixtral-locality"})
    for (const char* strat : {"serial", "grouped", "fused"}) {
      EngineSettings base = settings(strat, std::string(strat) == "fused" ? "fused" : "index_add");
      base.routing = routing;
      auto ref = logits_of(w, base);
      for (const char* tier : {"pinned", "disk"})
        for (const char* pol : {"none", "lru", "lfu", "prefetch"}) {
          EngineSettings s = base;
          s.expert_tier = tier;
          s.cache_policy = pol;
          s.cache_slots = 4;  // one layer's 4 experts (a prefill acquire needs them all) of the 8
          EXPECT_EQ(logits_of(w, s), ref) << routing << " " << strat << " " << tier << " " << pol;
        }
    }
}

TEST_F(CudaOffloadModel, TraceReplayReproducesTheRunBitwise) {
  test::TempDir dir;
  auto w = WeightSource::synthetic(preset_config("micro"), 2);
  EngineSettings s = settings("fused", "fused");
  s.routing = "mixtral-locality";
  s.expert_tier = "pinned";
  s.cache_slots = 4;
  RoutingRecorder rec(2, 4, 2, "test");
  auto a = logits_of(w, s, &rec);
  save_trace(rec.trace(), dir.str("t.json"));
  s.routing = "trace:" + dir.str("t.json");
  RoutingRecorder rec2(2, 4, 2, "test");
  auto b = logits_of(w, s, &rec2);
  EXPECT_EQ(a, b);
  ASSERT_EQ(rec.trace().steps.size(), rec2.trace().steps.size());
  for (size_t i = 0; i < rec.trace().steps.size(); ++i) EXPECT_EQ(rec.trace().steps[i].ids, rec2.trace().steps[i].ids);
}

TEST_F(CudaOffloadModel, EngineHitsEqualTheSimulator) {
  test::TempDir dir;
  auto w = WeightSource::synthetic(preset_config("micro"), 4);
  EngineSettings rs = settings("fused", "fused");
  rs.routing = "mixtral-locality";
  RoutingRecorder rec(2, 4, 2, "test");
  logits_of(w, rs, &rec);
  save_trace(rec.trace(), dir.str("t.json"));
  for (const char* pol : {"none", "lru", "lfu", "static", "belady", "prefetch"})
    for (int cap : {4, 5, 7}) {
      EngineSettings s = settings("grouped");
      s.expert_tier = "pinned";
      s.cache_policy = pol;
      s.cache_slots = cap;
      s.routing = "trace:" + dir.str("t.json");
      profiler::Profiler prof;
      logits_of(w, s, nullptr, &prof);
      SimOptions opt;
      opt.prediction.accuracy = s.prefetch_accuracy;
      opt.prediction.seed = s.routing_seed;
      SimResult sim = simulate(rec.trace(), pol, cap, opt);
      ASSERT_TRUE(sim.error.empty()) << sim.error;
      EXPECT_EQ(prof.experts.total().hits, sim.counters.hits) << pol << " cap " << cap;
      EXPECT_EQ(prof.experts.total().misses, sim.counters.misses) << pol << " cap " << cap;
      EXPECT_GT(prof.experts.total().bytes_moved, 0) << pol << " cap " << cap;
    }
}

TEST_F(CudaOffloadModel, TooSmallBudgetNamesTheMinimum) {
  auto w = WeightSource::synthetic(preset_config("tiny"), 3);
  EngineSettings s = settings("fused", "fused");
  s.expert_tier = "pinned";
  s.gpu_mem_budget = "2MiB";
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = "cuda";
  ctx.settings = s;
  try {
    cuda::CudaModel m(ctx);
    FAIL() << "expected the budget to be refused";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("needs at least"), std::string::npos) << msg;
    EXPECT_NE(msg.find("raise --gpu-mem-budget to at least"), std::string::npos) << msg;
  }
}

#else
TEST(CudaOffloadModel, SkippedWithoutCuda) { GTEST_SKIP() << "built without CUDA: CUDA offload model tests skipped"; }
#endif
