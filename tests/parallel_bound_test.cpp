// parallel_bound_test.cpp: what a tensor-parallel case records and how it is bounded,
// without a GPU. The per-GPU figures (Case::gpus) survive a results file round trip and
// are the deltas of a model's counters per decode step; the TP bound is the largest
// rank's bytes over HBM plus the least measured all-reduce time per step (resident,
// batch 1 and batched; offloaded: rank 0's copies over the link, serial or
// overlapped); without the per-GPU figures a TP case gets no bound and says why.
#include <gtest/gtest.h>

#include <algorithm>

#include "engine/shard.h"
#include "model/config.h"
#include "reports/results.h"
#include "suites/bound.h"
#include "suites/runner.h"

using namespace moebench;
using namespace moebench::suites;

namespace {

reports::DeviceInfo h200() {
  reports::DeviceInfo d;
  d.kind = reports::DeviceKind::cuda;
  d.hbm_read_gbps = d.hbm_gbps = 4400;
  d.h2d_gbps = 50;
  return d;
}

std::vector<reports::GpuRank> two_gpus(int64_t coll0_ns, int64_t coll1_ns) {
  std::vector<reports::GpuRank> g(2);
  g[0] = {"cuda:0 NVIDIA H200", 50'000'000'000, 51'000'000'000, 64, coll0_ns, 64};
  g[1] = {"cuda:1 NVIDIA H200", 49'000'000'000, 50'000'000'000, 64, coll1_ns, 64};
  return g;
}

// 10 decode steps of 5 ms after a prefill.
reports::Case tp_case(const char* tier, const char* policy) {
  reports::Case c;
  c.suite = "s";
  c.name = "c";
  c.settings.knobs["expert_tier"] = tier;
  c.settings.knobs["cache_policy"] = policy;
  c.settings.knobs["tensor_parallel"] = "2";
  c.repetitions = 1;
  reports::Repetition r;
  r.latency_ns = {50'000'000};
  r.phase = {reports::Phase::prefill};
  for (int i = 0; i < 10; ++i) {
    r.latency_ns.push_back(5'000'000);
    r.phase.push_back(reports::Phase::decode);
  }
  c.samples.push_back(r);
  c.aggregates = reports::compute_aggregates(c);
  return c;
}

}  // namespace

TEST(ParallelBound, ResidentIsTheLargestRanksBytesPlusTheLeastCollectiveTime) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  reports::Case c = tp_case("resident", "lru");
  c.gpus = two_gpus(900'000, 1'100'000);
  auto b = physical_bound(c, cfg, "cuda", h200());
  ASSERT_TRUE(b.has_value());
  const double rank_bytes = static_cast<double>(bytes_per_decode_token(tp_rank_config(cfg, 0, 2), 2));
  EXPECT_LT(rank_bytes, 0.55 * static_cast<double>(bytes_per_decode_token(cfg, 2)));  // about half: lm_head and norms stay whole
  EXPECT_NEAR(b->value, 1.0 / (rank_bytes / 4400e9 + 900e-6), 1e-9);
  EXPECT_NEAR(b->percent, 200.0 / b->value * 100, 1e-9);  // 5 ms per step = 200 tok/s
  EXPECT_NE(b->description.find("tensor parallel over 2 GPUs"), std::string::npos) << b->description;
  // Batched: B tokens per step, the same step time.
  auto bb = bench_decode_bound(cfg, h200(), c.settings, 8, 100, c.gpus);
  ASSERT_TRUE(bb.has_value());
  EXPECT_NEAR(bb->value, 8 * b->value, 1e-6);
  EXPECT_NEAR(bb->percent, 800 / bb->value * 100, 1e-9);
}

TEST(ParallelBound, NoPerGpuFiguresNoBound) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  reports::Case c = tp_case("resident", "lru");
  std::string why;
  EXPECT_FALSE(physical_bound(c, cfg, "cuda", h200(), {}, &why).has_value());
  EXPECT_NE(why.find("tensor_parallel=2 but the case recorded 0 GPUs"), std::string::npos) << why;
  EXPECT_FALSE(bench_decode_bound(cfg, h200(), c.settings, 8, 100).has_value());
}

TEST(ParallelBound, OffloadedAddsTheCollectivesToTheComputeSide) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  const double hbm_s = static_cast<double>(bytes_per_decode_token(tp_rank_config(cfg, 0, 2), 2)) / 4400e9;
  reports::Case c = tp_case("pinned", "lru");
  c.gpus = two_gpus(700'000, 800'000);
  c.experts.decode_bytes_moved = 10LL * 500'000'000;  // 0.5 GB per decode token on rank 0
  auto b = physical_bound(c, cfg, "cuda", h200());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->time_model, "serial");
  EXPECT_NEAR(b->value, 1.0 / (0.5e9 / 50e9 + hbm_s + 700e-6), 1e-9) << b->description;
  c.settings.knobs["cache_policy"] = "lfu-prefetch";
  b = physical_bound(c, cfg, "cuda", h200());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->time_model, "overlap");
  EXPECT_NEAR(b->value, 1.0 / std::max(0.5e9 / 50e9, hbm_s + 700e-6), 1e-9);
}

TEST(ParallelBound, PerGpuFiguresRoundTripAndArePerDecodeStep) {
  Model::GpuRankStats before{"cuda:0 NVIDIA H200", 1, 2, 10, 5'000'000, 640};
  Model::GpuRankStats after{"cuda:0 NVIDIA H200", 30, 40, 74, 69'000'000, 640 + 64 * 64};
  const auto g = gpu_ranks_between({before}, {after});
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].decode_steps, 64);
  EXPECT_EQ(g[0].collective_ns_per_step, 1'000'000);
  EXPECT_EQ(g[0].collective_calls_per_step, 64);
  EXPECT_EQ(g[0].arena_used_bytes, 30);
  EXPECT_TRUE(gpu_ranks_between({}, {}).empty());

  reports::Results r;
  r.device = h200();
  reports::Case c = tp_case("resident", "lru");
  c.gpus = two_gpus(900'000, 1'100'000);
  r.cases.push_back(c);
  const reports::Results back = reports::results_from_json(reports::to_json(r), "round trip");
  ASSERT_EQ(back.cases.size(), 1u);
  ASSERT_EQ(back.cases[0].gpus.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(back.cases[0].gpus[i].device, c.gpus[i].device);
    EXPECT_EQ(back.cases[0].gpus[i].arena_peak_bytes, c.gpus[i].arena_peak_bytes);
    EXPECT_EQ(back.cases[0].gpus[i].collective_ns_per_step, c.gpus[i].collective_ns_per_step);
    EXPECT_EQ(back.cases[0].gpus[i].collective_calls_per_step, c.gpus[i].collective_calls_per_step);
    EXPECT_EQ(back.cases[0].gpus[i].decode_steps, c.gpus[i].decode_steps);
  }
  // A file without the field (every earlier one) reads as one GPU.
  nlohmann::json j = reports::to_json(r);
  j["cases"][0].erase("gpus");
  EXPECT_TRUE(reports::results_from_json(j, "older file").cases[0].gpus.empty());
}
