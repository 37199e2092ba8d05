// host_kernel_rate_test.cpp: the host expert kernel's rate measurement
// (engine/host_kernel_rate.h) — which experts it reads (cold: each once, more than the
// last-level cache, consecutive ones in different layers), the summary of its samples,
// and that a store is measured once per run (every later model on it gets the same
// numbers). No verdict depends on how fast this machine is.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <utility>

#include "common/error.h"
#include "engine/host_kernel_rate.h"
#include "engine/weight_source.h"

namespace host_kernel_rate_test {

using namespace moebench;

namespace {

void expect_cold_plan(int layers, int experts, int64_t expert_bytes, int64_t cache) {
  const HostRatePlan p = host_rate_plan(layers, experts, expert_bytes, cache);
  SCOPED_TRACE(testing::Message() << layers << "x" << experts << " experts of " << expert_bytes << " B, cache " << cache);
  EXPECT_TRUE(p.cold);
  const int samples = static_cast<int>(p.experts.size()) - p.flush;
  EXPECT_GE(p.flush * expert_bytes, kHostRateFlushFactor * cache);
  EXPECT_GE(samples, kHostRateSamples);
  EXPECT_GE(samples * expert_bytes, kHostRateColdFactor * cache);
  std::set<std::pair<int, int>> seen;
  for (size_t i = 0; i < p.experts.size(); ++i) {
    const ExpertKey k = p.experts[i];
    EXPECT_TRUE(k.layer >= 0 && k.layer < layers && k.expert >= 0 && k.expert < experts);
    EXPECT_TRUE(seen.insert({k.layer, k.expert}).second) << "expert (" << k.layer << ", " << k.expert << ") read twice";
    if (i > 0 && layers > 1) {
      EXPECT_NE(k.layer, p.experts[i - 1].layer) << "two reads in a row in one layer";
    }
  }
}

}  // namespace

// Mixtral's bf16 and int4 experts on a 300 MB cache: bf16 reads 2 to flush and 8
// samples; int4 needs more of its smaller experts.
TEST(HostKernelRate, PlanReadsColdExpertsOnce) {
  expect_cold_plan(32, 8, 352321536, 300ll << 20);
  expect_cold_plan(32, 8, 92798976, 300ll << 20);
  expect_cold_plan(48, 128, 9437184, 32ll << 20);  // many small experts (Qwen3-MoE shape)
  const HostRatePlan bf16 = host_rate_plan(32, 8, 352321536, 300ll << 20);
  EXPECT_EQ(bf16.flush, 2);
  EXPECT_EQ(static_cast<int>(bf16.experts.size()) - bf16.flush, kHostRateSamples);
  // Unknown cache size: 512 MiB assumed, still cold.
  expect_cold_plan(32, 8, 352321536, 0);
}

TEST(HostKernelRate, SmallModelPlanSaysNotCold) {
  const HostRatePlan p = host_rate_plan(2, 4, 1 << 20, 300ll << 20);
  EXPECT_FALSE(p.cold);
  EXPECT_GE(static_cast<int>(p.experts.size()) - p.flush, kHostRateSamples);
  EXPECT_LE(p.flush, 8);  // no more than every expert once to warm the cache
  EXPECT_LE(static_cast<int>(p.experts.size()), 8 + kHostRateSamples);
  for (const ExpertKey& k : p.experts) EXPECT_TRUE(k.layer >= 0 && k.layer < 2 && k.expert >= 0 && k.expert < 4);
  EXPECT_THROW(host_rate_plan(0, 4, 1, 1), Error);
  EXPECT_THROW(host_rate_plan(2, 4, 0, 1), Error);
}

// The copies beside the host's measurement stay inside the store when it has fewer
// experts per layer than copies (a 2-layer, 4-expert test model: the first version took
// expert (1, -1) there and failed the model's load).
TEST(HostKernelRate, BothLinksCopiesStayInTheStore) {
  const auto keys = both_links_copy_experts(2, 4, 8);
  ASSERT_EQ(keys.size(), 8u);
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_GE(keys[i].layer, 0) << i;
    EXPECT_LT(keys[i].layer, 2) << i;
    EXPECT_GE(keys[i].expert, 0) << i;
    EXPECT_LT(keys[i].expert, 4) << i;
    for (size_t j = 0; j < i; ++j) EXPECT_FALSE(keys[i] == keys[j]) << i << " " << j;  // distinct while the store has 8
  }
  EXPECT_EQ(keys.front(), (ExpertKey{1, 3}));
  EXPECT_EQ(keys.back(), (ExpertKey{0, 0}));
  for (const ExpertKey& k : both_links_copy_experts(1, 1, 5)) EXPECT_EQ(k, (ExpertKey{0, 0}));
  const auto mixtral = both_links_copy_experts(32, 8, 8);  // the last layer's eight experts
  for (int i = 0; i < 8; ++i) EXPECT_EQ(mixtral[static_cast<size_t>(i)], (ExpertKey{31, 7 - i}));
  EXPECT_THROW(both_links_copy_experts(0, 4, 8), Error);
}

TEST(HostKernelRate, SummaryIsBestMedianWorst) {
  profiler::HostKernelRate r = summarize_host_rates({40.0, 55.5, 47.0});
  EXPECT_EQ(r.best_gbps, 55.5);
  EXPECT_EQ(r.median_gbps, 47.0);
  EXPECT_EQ(r.worst_gbps, 40.0);
  EXPECT_EQ(r.samples, 3);
  r = summarize_host_rates({50.0, 10.0, 30.0, 20.0});
  EXPECT_EQ(r.median_gbps, 25.0);
  EXPECT_THROW(summarize_host_rates({}), Error);
  EXPECT_THROW(summarize_host_rates({1.0, 0.0}), Error);
}

// A real measurement on a tiny pinned store: the plan's sample count, ordered rates, the
// threads of this thread's team; a second call for the same store returns the first
// call's numbers (measured once per run), another store is measured anew.
TEST(HostKernelRate, StoreIsMeasuredOncePerRun) {
  const WeightSource w = WeightSource::open("synthetic:micro", 3);
  HostStoreOptions o;
  o.progress = 0;
  auto st = ExpertHostStore::pinned(w, aligned_host_allocator(), o);
  const cpu::CpuIsa isa = cpu::select_cpu_isa("", cpu::host_cpu_features(), "test");
  const profiler::HostKernelRate a = host_kernel_rate(*st, isa);
  const HostRatePlan plan = host_rate_plan(st->n_layers(), st->n_experts(), static_cast<int64_t>(st->expert_bytes()),
                                           last_level_cache_bytes());
  EXPECT_EQ(a.samples, static_cast<int>(plan.experts.size()) - plan.flush);
  EXPECT_EQ(a.cold, plan.cold);
  EXPECT_GT(a.worst_gbps, 0);
  EXPECT_LE(a.worst_gbps, a.median_gbps);
  EXPECT_LE(a.median_gbps, a.best_gbps);
  EXPECT_GE(a.threads, 1);
  const profiler::HostKernelRate b = host_kernel_rate(*st, isa);
  EXPECT_EQ(b.best_gbps, a.best_gbps);
  EXPECT_EQ(b.median_gbps, a.median_gbps);
  EXPECT_EQ(b.worst_gbps, a.worst_gbps);
  auto other = ExpertHostStore::pinned(w, aligned_host_allocator(), o, QuantFormat::int4);
  const profiler::HostKernelRate c = host_kernel_rate(*other, isa);
  const HostRatePlan plan4 = host_rate_plan(other->n_layers(), other->n_experts(),
                                            static_cast<int64_t>(other->expert_bytes()), last_level_cache_bytes());
  EXPECT_EQ(c.samples, static_cast<int>(plan4.experts.size()) - plan4.flush);  // its own plan, its own measurement
  EXPECT_GT(c.best_gbps, 0);
}

// Both links at once: the host reads every expert but the copied ones, layer by layer;
// a sample counts only while the copies still run after it (running() is asked before
// each read and after it), the first read is never a sample.
TEST(HostKernelRate, HostBesideTheCopiesCountsOnlyOverlappedSamples) {
  const std::vector<ExpertKey> skip = both_links_copy_experts(2, 4, 3);  // (1,3) (1,2) (1,1)
  const std::vector<ExpertKey> order = host_read_order(2, 4, skip);
  ASSERT_EQ(order.size(), 5u);
  EXPECT_EQ(order[0], (ExpertKey{0, 0}));
  EXPECT_EQ(order[1], (ExpertKey{1, 0}));
  EXPECT_EQ(order[2], (ExpertKey{0, 1}));
  for (const ExpertKey& k : order) EXPECT_EQ(std::count(skip.begin(), skip.end(), k), 0);
  EXPECT_THROW(host_read_order(0, 4, {}), Error);

  const WeightSource w = WeightSource::open("synthetic:micro", 3);
  HostStoreOptions o;
  o.progress = 0;
  auto st = ExpertHostStore::pinned(w, aligned_host_allocator(), o);
  const cpu::CpuIsa isa = cpu::select_cpu_isa("", cpu::host_cpu_features(), "test");
  // running() true for its first 4 calls: before read 0 (unmeasured: not asked after it),
  // before read 1 and after it (a sample), before read 2 but not after it (not counted);
  // then the loop stops.
  int calls = 0;
  HostReadSum s = measure_host_kernel_while(*st, isa, {}, [&] { return ++calls <= 4; });
  EXPECT_EQ(s.samples, 1);
  EXPECT_EQ(s.bytes, static_cast<int64_t>(st->expert_bytes()));
  EXPECT_GT(s.gbps(), 0);
  calls = 0;
  s = measure_host_kernel_while(*st, isa, {}, [&] { return ++calls <= 1; });  // copies done after the first read
  EXPECT_EQ(s.samples, 0);
  EXPECT_EQ(s.gbps(), 0);
}

}  // namespace host_kernel_rate_test
