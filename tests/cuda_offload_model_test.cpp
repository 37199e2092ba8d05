// cuda_offload_model_test.cpp: the CUDA model with experts offloaded (pinned host store
// and disk tier, OffloadProvider) — skipped, with a message, without a GPU.
//   * every tier x policy gives logits bitwise identical to the resident path with the
//     same strategy (offloading moves bytes; it must not change a single bit), for the
//     model's gate and for a synthetic routing source;
//   * a run replayed from the trace it recorded reproduces it bitwise;
//   * for the same trace and capacity, the engine's hits and misses equal simulate()'s,
//     prefetch included (the engine predicts from the replayed routing with the
//     simulator's predictor, same seed);
//   * a budget below the non-expert weights + top_k slots fails up front naming the minimum;
//   * experts computed on the host (expert_exec cpu | hybrid, cpu_moe_layers) stay within
//     the stated tolerance of the gpu path.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "engine/cuda/cuda_model.h"
#include "engine/cuda/device.h"
#include "engine/device_plan.h"
#include "engine/expert_part.h"
#include "engine/host_kernel_rate.h"
#include "common/error.h"
#include "engine/routing_recorder.h"
#include "engine/synth_checkpoint.h"
#include "profiler/counters.h"
#include "teacher_forced.h"
#include "test_util.h"
#include "variants/simulator.h"

namespace cuda_offload_model_test {

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

// expert_exec cpu | hybrid and cpu_moe_layers (docs/HYBRID.md): the same offloaded model
// with some experts computed on the host from the pinned store. Its logits are within
// the stated tolerance of the gpu path's (2e-2 of the largest |logit|, at least 1), the
// greedy token the same wherever the gpu path's top two are further apart than twice
// that, and the host link did the work it says.
namespace {

// The stated tolerance of a cpu/hybrid run against the gpu path: logits within 2e-2 of
// the largest |logit| (at least 1), the greedy token the same wherever the gpu path's top
// two are further apart than twice that.
void expect_within_tolerance(const std::vector<float>& ref, const std::vector<float>& got, int V,
                             const std::string& what) {
  constexpr double kTolerance = 2e-2;
  ASSERT_EQ(got.size(), ref.size()) << what;
  double scale = 1;
  for (float v : ref) scale = std::max(scale, std::abs(static_cast<double>(v)));
  const double tol = kTolerance * scale;
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(ref[i]) - got[i]));
  EXPECT_LE(worst, tol) << what;
  for (size_t row = 0; row * V < ref.size(); ++row) {
    const float* r = ref.data() + row * V;
    const float* g = got.data() + row * V;
    std::vector<float> top(r, r + V);
    std::partial_sort(top.begin(), top.begin() + 2, top.end(), std::greater<float>());
    if (top[0] - top[1] <= 2 * tol) continue;  // a near tie: either token is within tolerance
    EXPECT_EQ(std::max_element(r, r + V) - r, std::max_element(g, g + V) - g) << what << " position " << row;
  }
}

EngineSettings host_link_settings(const char* exec, int cpu_layers, const char* dtype) {
  EngineSettings s = settings("fused", "fused");
  s.expert_tier = "pinned";
  s.cache_policy = "lfu-prefetch";
  s.cache_slots = 4;  // 4 of the 8 experts: decode misses
  s.routing = "mixtral-locality";
  s.expert_exec = exec;
  s.cpu_moe_layers = cpu_layers;
  s.expert_dtype = dtype;
  return s;
}

}  // namespace

TEST_F(CudaOffloadModel, HostExpertsMatchTheGpuPathWithinTolerance) {
  auto w = WeightSource::synthetic(preset_config("micro"), 3);
  const int V = w.config().vocab_size;
  const auto with = host_link_settings;
  for (const char* dtype : {"bf16", "int4"}) {
    profiler::Profiler p0;
    const auto ref = logits_of(w, with("gpu", 0, dtype), nullptr, &p0);
    EXPECT_EQ(p0.experts.total().host_experts, 0);
    profiler::HostKernelRate first;  // of the first model with a host link on this store
    for (const char* exec : {"cpu", "hybrid"})
      for (int cpu_layers : {0, 1}) {
        const std::string what = std::string(dtype) + " " + exec + " cpu_moe_layers=" + std::to_string(cpu_layers);
        profiler::Profiler p;
        const auto got = logits_of(w, with(exec, cpu_layers, dtype), nullptr, &p);
        expect_within_tolerance(ref, got, V, what);
        const profiler::ExpertStats& t = p.experts.total();
        if (std::string(exec) == "cpu" || cpu_layers > 0) {
          EXPECT_GT(t.host_experts, 0) << what;
          EXPECT_GT(t.host_bytes, 0) << what;
          EXPECT_GT(t.host_ns, 0) << what;
          EXPECT_GT(p.experts.host_kernel_gbps(), 0) << what;
        }
        // The host kernel's rate: measured once for the store, the same for every model on it.
        const profiler::HostKernelRate& k = p.experts.host_kernel();
        EXPECT_GE(k.samples, kHostRateSamples) << what;
        if (first.samples == 0) first = k;
        EXPECT_EQ(k.best_gbps, first.best_gbps) << what;
        EXPECT_EQ(k.median_gbps, first.median_gbps) << what;
        if (cpu_layers > 0) {
          EXPECT_EQ(p.experts.layer(0).loads, 0) << what;  // layer 0 never copies
        }
      }
    // A model without a host link records no rate, not the one an earlier model noted.
    profiler::Profiler q;
    logits_of(w, with("hybrid", 0, dtype), nullptr, &q);
    EXPECT_GT(q.experts.host_kernel_gbps(), 0) << dtype;
    logits_of(w, with("gpu", 0, dtype), nullptr, &q);
    EXPECT_EQ(q.experts.host_kernel_gbps(), 0) << dtype;
  }
  // Resident experts never miss: the knob runs and changes nothing.
  EngineSettings r = with("cpu", 1, "bf16");
  r.expert_tier = "resident";
  profiler::Profiler pr;
  logits_of(w, r, nullptr, &pr);
  EXPECT_EQ(pr.experts.total().host_experts, 0);
}

// hybrid's split experts: with MOEBENCH_HYBRID_SPLIT=half every decode layer with a miss
// splits its last miss in half (the host computes rows [0, inter/2), the GPU the rest
// from the scratch slot, the partial outputs summed), whatever the rates, and copies the
// others. Same tolerance; the parts were copied (bytes beyond the whole loads') and the
// host read half experts.
TEST_F(CudaOffloadModel, SplitExpertsMatchTheGpuPathWithinTolerance) {
  auto w = WeightSource::synthetic(preset_config("micro"), 3);
  const ModelConfig& c = w.config();
  profiler::Profiler p0;
  const auto ref = logits_of(w, host_link_settings("gpu", 0, "bf16"), nullptr, &p0);
  ASSERT_GT(p0.experts.total().loads, 0);
  const int64_t expert_bytes = p0.experts.total().bytes_moved / p0.experts.total().loads;  // whole loads only
  ASSERT_EQ(expert_bytes % 2, 0);
  ASSERT_EQ(setenv("MOEBENCH_HYBRID_SPLIT", "half", 1), 0);
  profiler::Profiler p;
  std::vector<float> got;
  try {
    got = logits_of(w, host_link_settings("hybrid", 0, "bf16"), nullptr, &p);
  } catch (...) {
    unsetenv("MOEBENCH_HYBRID_SPLIT");
    throw;
  }
  unsetenv("MOEBENCH_HYBRID_SPLIT");
  expect_within_tolerance(ref, got, c.vocab_size, "hybrid, split in half");
  const profiler::ExpertStats& t = p.experts.total();
  EXPECT_GT(t.host_experts, 0);
  EXPECT_GT(t.host_bytes, 0);
  EXPECT_EQ(t.host_bytes % (expert_bytes / 2), 0);  // halves
  EXPECT_GT(t.bytes_moved, t.loads * expert_bytes);  // the GPU's halves crossed the link too
  EXPECT_EQ((t.bytes_moved - t.loads * expert_bytes) % (expert_bytes / 2), 0);
  // A bad value of the switch is one clear error.
  ASSERT_EQ(setenv("MOEBENCH_HYBRID_SPLIT", "2", 1), 0);
  EXPECT_THROW(logits_of(w, host_link_settings("hybrid", 0, "bf16")), Error);
  unsetenv("MOEBENCH_HYBRID_SPLIT");
}

// hybrid_split=balance: cpu mode's schedule, the link taking the share of each layer's
// parts a feedback loop on the layers' finish times sets (how much depends on the
// machine's speeds; the host keeps at least one part of every layer with a miss). Same
// tolerance, whatever the share, and the host did work.
TEST_F(CudaOffloadModel, BalancedSplitMatchesTheGpuPathWithinTolerance) {
  auto w = WeightSource::synthetic(preset_config("micro"), 3);
  const ModelConfig& c = w.config();
  const auto ref = logits_of(w, host_link_settings("gpu", 0, "bf16"));
  EngineSettings s = host_link_settings("hybrid", 0, "bf16");
  s.hybrid_split = "balance";
  profiler::Profiler p;
  const auto got = logits_of(w, s, nullptr, &p);
  expect_within_tolerance(ref, got, c.vocab_size, "hybrid, hybrid_split=balance");
  const profiler::ExpertStats& t = p.experts.total();
  EXPECT_GT(t.host_experts, 0);
  EXPECT_GT(t.host_bytes, 0);
  EXPECT_GT(t.host_layers, 0);
}

// The quantised formats' split (int4, int8, fp8): micro with an intermediate size of 512
// cuts into two parts of 256 rows (int4 and fp8 cut only at their 128-row scale groups).
// With MOEBENCH_HYBRID_SPLIT=half the host computes rows [0, 256) of the split miss in
// place, the link copies rows [256, 512) (w2's block of columns pitched, with its scales
// and zero points) into the scratch, packed as a 256-row expert the quantised decode
// kernels run: the stated tolerance against the gpu path of the same format, and the
// bytes are the parts' (expert_part_plan). MOEBENCH_SPLIT_QUANT=0 keeps whole experts
// per link (no part crosses); hybrid_split=balance stays within the tolerance too.
TEST_F(CudaOffloadModel, QuantisedSplitExpertsMatchTheGpuPathWithinTolerance) {
  ModelConfig c = preset_config("micro");
  c.intermediate_size = 512;
  auto w = WeightSource::synthetic(c, 3);
  struct Env {  // sets the variables for one model, unsets them however it ends
    Env(std::initializer_list<std::pair<const char*, const char*>> v) : vars(v) {
      for (const auto& kv : vars) setenv(kv.first, kv.second, 1);
    }
    ~Env() {
      for (const auto& kv : vars) unsetenv(kv.first);
    }
    std::vector<std::pair<const char*, const char*>> vars;
  };
  for (const char* dtype : {"int4", "int8", "fp8"}) {
    const QuantFormat f = parse_quant_format(dtype, "test");
    profiler::Profiler p0;
    const auto ref = logits_of(w, host_link_settings("gpu", 0, dtype), nullptr, &p0);
    ASSERT_GT(p0.experts.total().loads, 0) << dtype;
    const int64_t expert_bytes = p0.experts.total().bytes_moved / p0.experts.total().loads;  // whole loads only
    const ExpertLayout L = expert_layout(c, f);
    const int64_t host_part = static_cast<int64_t>(expert_part_plan(L, c.hidden_size, 512, 0, 256).bytes);
    const int64_t link_part = static_cast<int64_t>(expert_part_plan(L, c.hidden_size, 512, 256, 512).bytes);
    {
      profiler::Profiler p;
      std::vector<float> got;
      {
        Env env{{"MOEBENCH_HYBRID_SPLIT", "half"}};
        got = logits_of(w, host_link_settings("hybrid", 0, dtype), nullptr, &p);
      }
      expect_within_tolerance(ref, got, c.vocab_size, std::string(dtype) + " hybrid, split in half");
      const profiler::ExpertStats& t = p.experts.total();
      EXPECT_GT(t.host_experts, 0) << dtype;
      ASSERT_GT(t.host_bytes, 0) << dtype;
      EXPECT_EQ(t.host_bytes % host_part, 0) << dtype;  // the host read halves, in place
      const int64_t parts = t.bytes_moved - t.loads * expert_bytes;  // the GPU's halves crossed the link too
      EXPECT_GT(parts, 0) << dtype;
      EXPECT_EQ(parts % link_part, 0) << dtype;
      EXPECT_EQ(parts / link_part, t.host_bytes / host_part) << dtype;  // one copied half per host half
    }
    {
      profiler::Profiler p;
      std::vector<float> got;
      {
        Env env{{"MOEBENCH_HYBRID_SPLIT", "half"}, {"MOEBENCH_SPLIT_QUANT", "0"}};
        got = logits_of(w, host_link_settings("hybrid", 0, dtype), nullptr, &p);
      }
      expect_within_tolerance(ref, got, c.vocab_size, std::string(dtype) + " hybrid, whole experts");
      const profiler::ExpertStats& t = p.experts.total();
      EXPECT_EQ(t.bytes_moved, t.loads * expert_bytes) << dtype;  // no part crossed
      EXPECT_EQ(t.host_bytes % expert_bytes, 0) << dtype;
    }
    EngineSettings s = host_link_settings("hybrid", 0, dtype);
    s.hybrid_split = "balance";
    profiler::Profiler p;
    const auto got = logits_of(w, s, nullptr, &p);
    expect_within_tolerance(ref, got, c.vocab_size, std::string(dtype) + " hybrid, hybrid_split=balance");
    EXPECT_GT(p.experts.total().host_bytes, 0) << dtype;
  }
  // A bad value of the switch is one clear error.
  Env env{{"MOEBENCH_SPLIT_QUANT", "yes"}};
  EXPECT_THROW(logits_of(w, host_link_settings("hybrid", 0, "int4")), Error);
}

}  // namespace cuda_offload_model_test

#else
TEST(CudaOffloadModel, SkippedWithoutCuda) { GTEST_SKIP() << "built without CUDA: CUDA offload model tests skipped"; }
#endif
