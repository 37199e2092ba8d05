// hybrid_split_test.cpp: expert_exec's host link on the CPU — the cost model's split
// and copies ahead, the cache leaving host experts unloaded, the settings, stages and
// suite, and the CPU backend under the knobs. No GPU: what the CUDA engine decides per
// miss is these functions (the simulator's host link: simulator_test; the hybrid
// bound: bound_test).
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include "common/error.h"
#include "engine/cpu_model.h"
#include "model/settings.h"
#include "profiler/counters.h"
#include "reports/results.h"
#include "suites/runner.h"
#include "suites/suite.h"
#include "teacher_forced.h"
#include "tests/test_util.h"
#include "variants/hybrid_split.h"
#include "variants/stages.h"

namespace hybrid_split_test {

using namespace moebench;

namespace {

HybridRates rates(double copy, double host, int64_t bytes = 1000, int64_t overhead = 0) {
  return HybridRates{copy, host, bytes, overhead};
}

}  // namespace

TEST(HybridSplit, EqualLinksSplitInHalf) {
  const HybridRates r = rates(1.0, 1.0);  // 1000 ns per expert on either link
  EXPECT_EQ(hybrid_host_count(0, 0, r), 0);
  EXPECT_EQ(hybrid_host_count(1, 0, r), 0);  // a tie (1000 either way): fewer on the host
  EXPECT_EQ(hybrid_host_count(2, 0, r), 1);
  EXPECT_EQ(hybrid_host_count(4, 0, r), 2);
}

TEST(HybridSplit, FasterHostTakesMore) {
  // host twice as fast: 4 misses -> 1 copied (1000 ns) + 3 on the host (1500 ns) beats
  // 2 + 2 (2000, 1000) and 0 + 4 (2000).
  EXPECT_EQ(hybrid_host_count(4, 0, rates(1.0, 2.0)), 3);
  // a slow host (a tenth of the link) never helps with one miss
  EXPECT_EQ(hybrid_host_count(1, 0, rates(1.0, 0.1)), 0);
  // but with 20 misses one goes there (19000 ns against 20000 on the link alone; two
  // would take the host 20000)
  EXPECT_EQ(hybrid_host_count(20, 0, rates(1.0, 0.1)), 1);
}

TEST(HybridSplit, BacklogAndOverheadMoveTheSplit) {
  // copies already queued for 3000 ns: both misses go to the host (2000 < 4000)
  EXPECT_EQ(hybrid_host_count(2, 3000, rates(1.0, 1.0)), 2);
  // a 5000 ns fixed host cost keeps them on the link (2000 < 6000)
  EXPECT_EQ(hybrid_host_count(2, 0, rates(1.0, 1.0, 1000, 5000)), 0);
}

TEST(HybridSplit, SplitPartsBalanceTheLinks) {
  // copy 1000 ns, host 500 ns per expert, parts of a tenth.
  HybridRates r = rates(1.0, 2.0);
  r.split_units = 10;
  // One miss: 7 parts on the host (350 ns) against 3 copied (300 ns); 6 would leave the
  // link 400 ns.
  HybridPlan p = hybrid_plan_for(ExpertExec::hybrid, 0, 0, 1, 0, r);
  EXPECT_EQ(p.n_host, 0);
  EXPECT_EQ(p.split_parts, 7);
  EXPECT_EQ(p.flagged(), 1);
  EXPECT_EQ(plan_host_ns(p, r), 350);
  EXPECT_EQ(plan_split_copy_ns(p, r), 300);
  EXPECT_EQ(hybrid_split_end_ns(1, 0, r), 350);
  // Two misses: whole experts end at 1000 either way (one each way; ties: fewer on the
  // host), and a part of the host's one given to the link would end after the copy.
  p = hybrid_plan_for(ExpertExec::hybrid, 0, 0, 2, 0, r);
  EXPECT_EQ(p.n_host, 1);
  EXPECT_EQ(p.split_parts, 0);
  EXPECT_EQ(p.host_parts(), 10);
  EXPECT_EQ(hybrid_layer_left_ns(0, p, r), 500);
  // A host four times the link (250 ns): both whole on the host end at 500; the first
  // gives 4 of its parts to the idle link: 400 ns on the link, 1.6 experts x 250 on the host.
  HybridRates fast = rates(1.0, 4.0);
  fast.split_units = 10;
  p = hybrid_plan_for(ExpertExec::hybrid, 0, 0, 2, 0, fast);
  EXPECT_EQ(p.n_host, 1);
  EXPECT_EQ(p.split_parts, 6);
  EXPECT_EQ(p.host_parts(), 16);
  EXPECT_EQ(hybrid_split_end_ns(2, 0, fast), 400);
  EXPECT_EQ(plan_host_ns(p, fast), 400);
  EXPECT_EQ(plan_split_copy_ns(p, fast), 400);
  // Copies are never traded for parts: with the host as fast as the link, 4 misses go 2
  // and 2, whole (the copies may hit later).
  HybridRates even = rates(1.0, 1.0);
  even.split_units = 10;
  p = hybrid_plan_for(ExpertExec::hybrid, 0, 0, 4, 0, even);
  EXPECT_EQ(p.n_host, 2);
  EXPECT_EQ(p.split_parts, 0);
  // One miss, links as fast: whole, it is copied (a tie); split_copies shares it in half.
  EXPECT_EQ(hybrid_plan_for(ExpertExec::hybrid, 0, 0, 1, 0, even).flagged(), 0);
  even.split_copies = true;
  p = hybrid_plan_for(ExpertExec::hybrid, 0, 0, 1, 0, even);
  EXPECT_EQ(p.n_host, 0);
  EXPECT_EQ(p.split_parts, 5);
  EXPECT_EQ(hybrid_split_end_ns(1, 0, even), 500);
  // A link busy for 2000 ns: everything on the host, nothing split.
  p = hybrid_plan_for(ExpertExec::hybrid, 0, 0, 2, 2000, r);
  EXPECT_EQ(p.n_host, 2);
  EXPECT_EQ(p.split_parts, 0);
  // Whole experts (split_units 1) are the old rule; cpu mode and cpu layers never split;
  // gpu computes nothing on the host.
  r.split_units = 1;
  EXPECT_EQ(hybrid_plan_for(ExpertExec::hybrid, 0, 0, 4, 0, r).n_host, hybrid_host_count(4, 0, r));
  r.split_units = 10;
  p = hybrid_plan_for(ExpertExec::cpu, 0, 0, 2, 0, r);
  EXPECT_EQ(p.n_host, 2);
  EXPECT_EQ(p.split_parts, 0);
  p = hybrid_plan_for(ExpertExec::hybrid, 3, 1, 1, 0, r);
  EXPECT_EQ(p.n_host, 1);
  EXPECT_EQ(p.split_parts, 0);
  EXPECT_EQ(hybrid_plan_for(ExpertExec::gpu, 0, 0, 2, 0, r).flagged(), 0);
  EXPECT_EQ(split_units_for(14336), 56);
  EXPECT_EQ(split_units_for(512), 2);
  EXPECT_EQ(split_units_for(256), 8);  // parts of 32 rows
  EXPECT_EQ(split_units_for(128), 4);
  EXPECT_EQ(split_units_for(32), 1);
  EXPECT_EQ(split_units_for(300), 1);
  r.split_units = 0;
  EXPECT_THROW(check_hybrid_rates(r, "test"), Error);
}

TEST(HybridSplit, PrefetchCopiesAheadOnlyWhatBeatsTheHost) {
  // copy 1000 ns, host 500 ns per expert.
  const HybridRates r = rates(1.0, 2.0);
  EXPECT_EQ(hybrid_split_end_ns(2, 0, r), 1000);  // one each way
  EXPECT_EQ(hybrid_split_end_ns(0, 0, r), 0);
  // An idle link and a layer ending in 1000 ns: one of two predicted experts copied
  // ahead lands as the next layer starts, which then ends when the host has the other
  // (500); none ahead: 1000 (split); both: the second lands 1000 into it.
  EXPECT_EQ(hybrid_prefetch_count(2, 0, 1000, r), 1);
  // A link busy for 1000 ns more and the layer ending now: the host takes both (1000),
  // a copy ahead would end at 2000.
  EXPECT_EQ(hybrid_prefetch_count(2, 1000, 0, r), 0);
  // A long layer (the host busy 5000 ns): both land in time.
  EXPECT_EQ(hybrid_prefetch_count(2, 0, 5000, r), 2);
  EXPECT_EQ(hybrid_prefetch_count(0, 0, 5000, r), 0);
  // A faster link than host (copy 500, host 1000), the layer ending now: copying the one
  // predicted expert ahead ties with copying it on demand, and a guess is left alone;
  // with the layer 300 ns from its end the copy ahead gains 300 ns.
  EXPECT_EQ(hybrid_prefetch_count(1, 0, 0, rates(2.0, 1.0)), 0);
  EXPECT_EQ(hybrid_prefetch_count(1, 0, 300, rates(2.0, 1.0)), 1);
  EXPECT_EQ(hybrid_layer_left_ns(300, 0, r), 300);
  EXPECT_EQ(hybrid_layer_left_ns(300, 2, r), 1000);
  EXPECT_EQ(hybrid_layer_left_ns(300, 2, rates(1.0, 2.0, 1000, 400)), 1400);

  CacheShape shape{2, 8, 2, 4};
  ExpertCache cache(shape, make_cache_policy("lru", PolicyContext{shape, nullptr, {}}));
  std::vector<AccessResult> res;
  cache.access_layer(0, 1, std::vector<int32_t>{4}, res);  // (1, 4) resident
  std::vector<int32_t> kept;
  keep_prefetches(cache, 1, std::vector<int32_t>{3, 4, 6, 3, 7}, 1, kept);
  EXPECT_EQ(kept, (std::vector<int32_t>{3, 4, 3}));  // the resident 4 stays; of 3, 6, 7 the first
  keep_prefetches(cache, 1, std::vector<int32_t>{3, 4, 6}, 0, kept);
  EXPECT_EQ(kept, (std::vector<int32_t>{4}));
}

TEST(HybridSplit, JointRatesSlowBothLinksWhileBothRun) {
  // copy 1000 ns, host 500 ns per expert alone; while both run the copies go at half
  // their speed (0.5 of 1.0 GB/s) and the host at three quarters (1.5 of 2.0).
  HybridRates r = rates(1.0, 2.0);
  TwoLinkTimes t = two_link_times(1000, 500, r);
  EXPECT_EQ(t.copy_end_ns, 1000);  // no joint rates: each alone
  EXPECT_EQ(t.host_end_ns, 500);
  EXPECT_EQ(two_link_times(1000, 0, r).host_end_ns, 0);
  r.joint_copy_gbps = 0.5;
  r.joint_host_gbps = 1.5;
  t = two_link_times(1000, 500, r);
  EXPECT_EQ(t.host_end_ns, 667);   // 500 / 0.75, both running
  EXPECT_EQ(t.copy_end_ns, 1333);  // 333 done by then, 667 alone after
  EXPECT_EQ(two_link_copy_left_ns(1000, 500, r, 400), 800);
  EXPECT_EQ(two_link_copy_left_ns(1000, 500, r, 2000), 0);
  EXPECT_EQ(two_link_copy_left_ns(1000, 0, r, 400), 600);  // no host work: the copies alone
  // The host's fixed cost: the copies run alone meanwhile.
  r.host_overhead_ns = 200;
  t = two_link_times(1000, 500, r);
  EXPECT_EQ(t.host_end_ns, 867);
  EXPECT_EQ(t.copy_end_ns, 1333);  // 200 alone, 333 beside the host (in 667 ns), 467 alone
  r.host_overhead_ns = 0;
  // Two misses: alone the links would take one each (1000, 500: a tie with both on the
  // host, 1000, and ties go to fewer host experts); with the joint rates the copy would
  // end at 1333, so both go to the host — copies that only slow the host are not made.
  EXPECT_EQ(hybrid_host_count(2, 0, rates(1.0, 2.0)), 1);
  EXPECT_EQ(hybrid_host_count(2, 0, r), 2);
  EXPECT_EQ(hybrid_split_end_ns(2, 0, r), 1000);
  // Copies ahead beside a long layer (4 host experts, 2000 ns): alone a copy ahead is
  // free (it lands before the layer ends); with the host slowed to 0.6 of its speed while
  // it runs it delays the layer more than it gains (2800 against 2500); at 0.9 it gains.
  const HybridPlan four{4, 0, 1};
  EXPECT_EQ(hybrid_prefetch_count(1, 0, four, rates(1.0, 2.0)), 1);
  r.joint_host_gbps = 1.2;
  EXPECT_EQ(hybrid_prefetch_count(1, 0, four, r), 0);
  r.joint_host_gbps = 1.8;
  EXPECT_EQ(hybrid_prefetch_count(1, 0, four, r), 1);
  EXPECT_EQ(hybrid_layer_left_ns(0, four, r), 2000);
  EXPECT_EQ(hybrid_layer_left_ns(1000, four, r), 2200);  // 2000 beside the copy (0.9), 200 alone
  r.joint_host_gbps = -1;
  EXPECT_THROW(check_hybrid_rates(r, "t"), Error);
}

TEST(HybridSplit, ExecModes) {
  const HybridRates r = rates(1.0, 1.0);
  EXPECT_EQ(host_count_for(ExpertExec::gpu, 0, 3, 4, 0, r), 0);
  EXPECT_EQ(host_count_for(ExpertExec::cpu, 0, 3, 4, 0, r), 4);
  EXPECT_EQ(host_count_for(ExpertExec::hybrid, 0, 3, 4, 0, r), 2);
  EXPECT_EQ(host_count_for(ExpertExec::gpu, 4, 3, 4, 0, r), 4);  // layer 3 < 4 cpu layers
  EXPECT_EQ(host_count_for(ExpertExec::gpu, 3, 3, 4, 0, r), 0);
  EXPECT_EQ(parse_expert_exec("hybrid", "x"), ExpertExec::hybrid);
  try {
    parse_expert_exec("both", "setting expert_exec");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "setting expert_exec=both: expected one of gpu|cpu|hybrid");
  }
  EXPECT_THROW(check_hybrid_rates(rates(1.0, 0.0), "t"), Error);
  EXPECT_THROW(check_hybrid_rates(rates(0.0, 1.0), "t"), Error);
  EXPECT_NO_THROW(check_hybrid_rates(rates(1.0, 1.0), "t"));
}

TEST(HybridSplit, LinkSecondsIsTheSumOfRates) {
  EXPECT_DOUBLE_EQ(hybrid_link_seconds(110e9, 55, 55), 1.0);
  EXPECT_DOUBLE_EQ(hybrid_link_seconds(55e9, 55, 0), 1.0);
  EXPECT_THROW(hybrid_link_seconds(1, 0, 0), Error);
  // The host idle 0.5 s of the token: 110 GB takes (110 + 55 x 0.5) / 110 = 1.25 s (the
  // link 68.75 GB, the host 41.25 GB in its 0.75 s); 20 GB the link alone moves in 0.36 s,
  // before the host could start.
  EXPECT_DOUBLE_EQ(hybrid_link_seconds(110e9, 55, 55, 0.5), 1.25);
  EXPECT_DOUBLE_EQ(hybrid_link_seconds(20e9, 55, 55, 0.5), 20.0 / 55);
  EXPECT_DOUBLE_EQ(hybrid_link_seconds(27.5e9, 55, 55, 0.5), 0.5);  // the two forms meet
  // The two links' joint read of host memory measured at 80 GB/s (55 + 55 alone): while
  // the host may run they carry 80 together, so 110 GB takes 0.5 + (110 - 27.5) / 80 s.
  EXPECT_DOUBLE_EQ(hybrid_link_seconds(110e9, 55, 55, 0.5, 80), 0.5 + 82.5 / 80);
  EXPECT_DOUBLE_EQ(hybrid_link_seconds(110e9, 55, 55, 0.5, 200), 1.25);  // above the sum: the sum
  EXPECT_DOUBLE_EQ(hybrid_link_seconds(110e9, 55, 55, 0, 30), 2.0);      // below a link alone: that link
  MeasuredRate m(3.0);
  EXPECT_DOUBLE_EQ(m.gbps(), 3.0);
  m.add(1000, 500);
  EXPECT_DOUBLE_EQ(m.gbps(), 2.0);
}

namespace {
// Mixtral bf16 experts with both links' solo and joint rates (GB/s).
HybridRates joint_rates(double copy, double host, double joint_copy, double joint_host) {
  HybridRates r;
  r.copy_gbps = copy;
  r.host_gbps = host;
  r.joint_copy_gbps = joint_copy;
  r.joint_host_gbps = joint_host;
  r.expert_bytes = 352321536;
  return r;
}
}  // namespace

// hybrid_rates=decode: the rates decode measures replace the load-time ones, recent
// samples weighing more; samples that mix a link alone with both at once are not counted.
TEST(HybridSplit, DecodeLearnsTheJointRates) {
  DecayingRate d(0.5, 2, 7.0);
  EXPECT_DOUBLE_EQ(d.gbps(), 7.0);
  d.add(1000, 100);  // 10 GB/s
  EXPECT_FALSE(d.learned());
  EXPECT_DOUBLE_EQ(d.gbps(), 7.0);  // one sample: not yet
  d.add(0, 100);                    // nothing measured: no sample
  EXPECT_EQ(d.samples(), 1);
  d.add(2000, 100);  // 20 GB/s: (1000 x 0.5 + 2000) / (100 x 0.5 + 100)
  EXPECT_TRUE(d.learned());
  EXPECT_DOUBLE_EQ(d.gbps(), 2500.0 / 150.0);
  for (int i = 0; i < 40; ++i) d.add(3000, 100);  // the old samples fade
  EXPECT_NEAR(d.gbps(), 30.0, 1e-6);
  EXPECT_THROW(DecayingRate(0.0), Error);
  EXPECT_THROW(DecayingRate(0.5, 0), Error);

  const HybridRates load = joint_rates(55, 90, 45, 79);
  DecodeLinkRates dl(0.8, 2);
  auto same = [](const HybridRates& a, const HybridRates& b) {
    return a.copy_gbps == b.copy_gbps && a.host_gbps == b.host_gbps && a.joint_copy_gbps == b.joint_copy_gbps &&
           a.joint_host_gbps == b.joint_host_gbps;
  };
  EXPECT_TRUE(same(dl.apply(load), load));  // nothing learned yet
  dl.copies(480, 10, true);
  dl.copies(480, 10, true);   // 48 GB/s beside the host
  dl.copies(5500, 100, false);  // alone: not a joint sample
  dl.host(720, 10, true, true);
  dl.host(720, 10, true, true);  // 72 GB/s beside copies
  dl.host(10000, 10, true, false);  // copies ended during it: mixed, not counted
  dl.host(900, 10, false, true);    // no copy at its start: alone (the thread that issues copies waits for the host)
  dl.host(850, 10, false, false);   // 85 alone
  const HybridRates r = dl.apply(load);
  EXPECT_DOUBLE_EQ(r.joint_copy_gbps, 48.0);
  EXPECT_DOUBLE_EQ(r.joint_host_gbps, 72.0);
  EXPECT_DOUBLE_EQ(r.copy_gbps, 55.0);  // the solo copy rate stays the load's
  EXPECT_DOUBLE_EQ(r.host_gbps, (900 * 0.8 + 850) / (10 * 0.8 + 10));
  EXPECT_EQ(dl.joint_copy().samples(), 2);
  EXPECT_EQ(dl.joint_host().samples(), 2);
  EXPECT_EQ(dl.solo_host().samples(), 2);
  // Without the joint rates measured at load there is nothing to learn them into.
  HybridRates plain = load;
  plain.joint_copy_gbps = plain.joint_host_gbps = 0;
  EXPECT_TRUE(same(dl.apply(plain), plain));
  // A solo rate measured under the joint one was disturbed: the joint one is the floor.
  EXPECT_DOUBLE_EQ(solo_rate_for_joint(26.9, 45.0), 45.0);
  EXPECT_DOUBLE_EQ(solo_rate_for_joint(55.0, 45.0), 55.0);
}

// With the solo copy rate measured low (26.9 GB/s where the copies beside the host gave
// 45) the joint model took every copy for twice as slow as it is and gave the host the
// misses; with the floor above, the same layer sends its second miss to the link.
TEST(HybridSplit, SoloCopyFloorMovesMissesToTheLink) {
  HybridRates r = joint_rates(26.9, 90.2, 45.0, 79.3);
  r.host_overhead_ns = 135000;
  const int low = hybrid_host_count(2, 0, r);
  r.copy_gbps = solo_rate_for_joint(26.9, 45.0);
  const int floored = hybrid_host_count(2, 0, r);
  EXPECT_EQ(low, 2);
  EXPECT_EQ(floored, 1);
}

TEST(HybridSplit, CacheLeavesHostExpertsUnloaded) {
  CacheShape shape{2, 8, 2, 4};
  ExpertCache cache(shape, make_cache_policy("lru", PolicyContext{shape, nullptr, {}}));
  std::vector<AccessResult> res;
  cache.access_layer(0, 0, std::vector<int32_t>{1, 2}, res);  // both loaded
  std::vector<int32_t> misses;
  const std::vector<int32_t> ids = {2, 5, 6, 5};
  distinct_misses(cache, 0, ids, misses);
  EXPECT_EQ(misses, (std::vector<int32_t>{5, 6}));
  std::vector<char> host;
  mark_host_experts(misses, 1, 8, host);  // the last miss (6) on the host
  EXPECT_EQ(host[6], 1);
  EXPECT_EQ(host[5], 0);
  cache.access_layer(1, 0, ids, res, host);
  ASSERT_EQ(res.size(), 3u);
  EXPECT_TRUE(res[0].hit);  // 2
  EXPECT_FALSE(res[1].hit);  // 5 loaded
  EXPECT_FALSE(res[1].host);
  EXPECT_GE(res[1].slot, 0);
  EXPECT_TRUE(res[2].host);  // 6: no slot
  EXPECT_EQ(res[2].slot, -1);
  EXPECT_EQ(cache.slot_of({0, 6}), -1);
  EXPECT_GE(cache.slot_of({0, 5}), 0);
  EXPECT_EQ(cache.counters().host_computed, 1);
  EXPECT_EQ(cache.counters().misses, 3);  // 1, 2, 5: the loads
  EXPECT_EQ(cache.counters().accesses, 5);
  EXPECT_THROW(cache.access_layer(2, 0, ids, res, std::vector<char>(3, 0)), Error);
  EXPECT_THROW(mark_host_experts(misses, 3, 8, host), Error);
}

TEST(HybridSplit, SettingsKnobs) {
  EngineSettings s;
  EXPECT_EQ(s.expert_exec, "gpu");
  EXPECT_EQ(s.cpu_moe_layers, 0);
  s.set("expert_exec", "hybrid");
  s.set("cpu_moe_layers", "4");
  EXPECT_EQ(s.expert_exec, "hybrid");
  EXPECT_EQ(s.cpu_moe_layers, 4);
  try {
    s.set("expert_exec", "host");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "setting expert_exec=host: expected one of gpu|cpu|hybrid");
  }
  EXPECT_THROW(s.set("cpu_moe_layers", "-1"), Error);
  EXPECT_EQ(s.hybrid_rates, "decode");
  s.set("hybrid_rates", "load");
  EXPECT_EQ(s.hybrid_rates, "load");
  EXPECT_THROW(s.set("hybrid_rates", "measured"), Error);
  EXPECT_EQ(s.hybrid_split, "balance");
  s.set("hybrid_split", "all");
  EXPECT_EQ(s.hybrid_split, "all");
  s.set("hybrid_split", "balance");
  EXPECT_EQ(s.hybrid_split, "balance");
  EXPECT_THROW(s.set("hybrid_split", "half"), Error);  // tests only, through MOEBENCH_HYBRID_SPLIT
  bool listed = false;
  for (auto& d : setting_docs()) listed |= d.key == "expert_exec";
  EXPECT_TRUE(listed);
}

// hybrid_split=balance: the plan for a share of a layer's parts (whole copies first, then
// one split expert, the rest on the host), and the feedback that moves the share one part
// toward the link that finished first.
TEST(HybridSplit, BalanceSharePlansTheLinksShareAndFollowsTheLaterLink) {
  BalanceShare b(4, 0.5);
  HybridPlan p = b.plan(1);  // 2 of 4 parts to the link: one split expert, 2 parts on the host
  EXPECT_EQ(b.link_units(1), 2);
  EXPECT_EQ(p.n_host, 0);
  EXPECT_EQ(p.split_parts, 2);
  EXPECT_EQ(p.flagged(), 1);
  p = b.plan(2);  // 4 of 8: the first miss copied whole, the second on the host
  EXPECT_EQ(p.n_host, 1);
  EXPECT_EQ(p.split_parts, 0);
  EXPECT_EQ(p.host_parts(), 4);
  b.observe(2, false);  // the link was done first: one more part to it
  p = b.plan(2);        // 5 of 8: one copied, the other split with 3 parts on the host
  EXPECT_EQ(b.link_units(2), 5);
  EXPECT_EQ(p.n_host, 0);
  EXPECT_EQ(p.split_parts, 3);
  EXPECT_EQ(p.flagged(), 1);
  b.observe(2, true);
  b.observe(2, true);
  EXPECT_EQ(b.link_units(2), 3);
  EXPECT_EQ(b.link_units(1), 2);  // each miss count has its own share
  // the host always keeps a part (its layer reports the outcome), the link may get none
  for (int i = 0; i < 20; ++i) b.observe(1, false);
  EXPECT_EQ(b.link_units(1), 3);
  EXPECT_EQ(b.plan(1).split_parts, 1);
  for (int i = 0; i < 20; ++i) b.observe(1, true);
  EXPECT_EQ(b.link_units(1), 0);
  p = b.plan(1);  // cpu mode's plan: the miss whole on the host
  EXPECT_EQ(p.n_host, 1);
  EXPECT_EQ(p.split_parts, 0);
  EXPECT_EQ(b.plan(0).flagged(), 0);
  // the starting share: the link's part of the joint read
  HybridRates r{50, 100, 1000, 0, 4, false, 40, 80};
  EXPECT_NEAR(balance_initial_share(r), 40.0 / 120.0, 1e-12);
  EXPECT_THROW(BalanceShare(1, 0.5), Error);
  EXPECT_THROW(BalanceShare(4, 1.5), Error);
}

// The CPU backend computes every expert on the host already: expert_exec and
// cpu_moe_layers are accepted and recorded there and change nothing (docs/HYBRID.md).
TEST(HybridSplit, CpuBackendAcceptsTheSettingsWithIdenticalOutputs) {
  auto w = WeightSource::synthetic(preset_config("micro"), 3);
  auto logits = [&](const std::string& tier, const std::string& exec, int cpu_layers) {
    EngineSettings s;
    s.max_model_len = 64;
    s.expert_tier = tier;
    s.cache_slots = 4;
    s.routing = "mixtral-locality";
    s.expert_exec = exec;
    s.cpu_moe_layers = cpu_layers;
    s.validate();
    EngineContext ctx;
    ctx.weights = &w;
    ctx.backend = "cpu";
    ctx.settings = s;
    CpuModel m(ctx);
    return test::teacher_forced_logits(m, {5, 17, 29, 41}, 6);
  };
  for (const char* tier : {"resident", "pinned"}) {
    const auto ref = logits(tier, "gpu", 0);
    for (const char* exec : {"cpu", "hybrid"})
      for (int cpu_layers : {0, 1}) EXPECT_EQ(logits(tier, exec, cpu_layers), ref) << tier << " " << exec << " " << cpu_layers;
  }
}

TEST(HybridSplit, StagesAndSuite) {
  const EngineSettings p2 = stage_settings("P2");
  for (const char* st : {"P3", "P3-int4", "P2-cpu"}) {
    SCOPED_TRACE(st);
    EngineSettings s = stage_settings(st);
    EXPECT_EQ(s.expert_exec, std::string(st) == "P2-cpu" ? "cpu" : "hybrid");
    EXPECT_EQ(s.expert_dtype, std::string(st) == "P3-int4" ? "int4" : "bf16");
    s.expert_exec = p2.expert_exec;
    s.expert_dtype = p2.expert_dtype;
    s.stage = p2.stage;
    EXPECT_EQ(s.to_list(), p2.to_list());  // P2 otherwise
  }
  setenv("MOEBENCH_SUITES_DIR", (test::source_dir() + "/suites").c_str(), 1);
  const suites::Suite s = suites::load_suite("stages-gpu-hybrid");
  const auto v = suites::expand(s, {}, [](const std::string&) { return std::string("cuda"); });
  std::map<std::string, std::string> budget;
  for (const suites::Instance& in : v) {
    EXPECT_EQ(in.model, "mixtral-8x7b");
    EXPECT_EQ(in.settings.expert_tier, "pinned");
    EXPECT_EQ(in.settings.routing, "mixtral-locality");
    EXPECT_TRUE(in.cold_each_case);
    EXPECT_GT(in.warmup_runs, 0);
    budget[in.settings.stage] = in.settings.gpu_mem_budget;
  }
  EXPECT_EQ(budget, (std::map<std::string, std::string>{
                        {"P2", "22GiB"}, {"P3", "22GiB"}, {"P2-cpu", "22GiB"}, {"P2-int4", "18GiB"}, {"P3-int4", "18GiB"}}));
}

// The host link's counters: a host expert is a miss that loads nothing; its bytes, busy
// time and the layers' overhead reach the results, the decode ones without the prefill.
TEST(HybridSplit, HostCountersReachTheResults) {
  profiler::ExpertCounters p;
  p.configure(2, 4);
  p.note_host_kernel_gbps(80);
  p.note_slots(57);
  p.route(1, 2, false);  // prefill: one host expert
  p.host_route(1, 2);
  p.host_work(1, 1000, 20);
  p.host_overhead(1, 5);
  p.end_token();
  p.route(0, 1, true);  // decode: a hit and a host expert
  p.route(0, 3, false);
  p.host_route(0, 3);
  p.host_work(0, 1000, 10);
  p.host_overhead(0, 3);
  p.both_links(0, 480, 10, 0, 0);   // copies beside the host
  p.both_links(0, 0, 0, 720, 10);   // the host beside copies
  p.end_token();
  EXPECT_EQ(p.total().misses, 2);
  EXPECT_EQ(p.total().host_experts, 2);
  EXPECT_EQ(p.usage(0, 3), 1);  // counted once, by route()
  EXPECT_EQ(p.layer(0).host_layers, 1);
  reports::ExpertCounters e;
  suites::add_expert_counters(e, p);
  EXPECT_EQ(e.host_experts, 2);
  EXPECT_EQ(e.host_bytes, 2000);
  EXPECT_EQ(e.decode_host_bytes, 1000);
  EXPECT_EQ(e.host_busy_ns, 30);
  EXPECT_EQ(e.decode_host_busy_ns, 10);
  EXPECT_EQ(e.decode_host_layers, 1);
  EXPECT_EQ(e.decode_host_overhead_ns, 3);
  EXPECT_EQ(e.decode_joint_copy_bytes, 480);
  EXPECT_EQ(e.decode_joint_copy_ns, 10);
  EXPECT_EQ(e.decode_joint_host_bytes, 720);
  EXPECT_EQ(e.decode_joint_host_ns, 10);
  EXPECT_EQ(e.host_kernel_gbps, 80);
  EXPECT_EQ(e.slots, 57);
  p.reset();
  EXPECT_EQ(p.host_kernel_gbps(), 80);  // a property of the model: kept
  EXPECT_EQ(p.total().host_bytes, 0);
}

// The host kernel's measured rate with its spread reaches the results and survives the
// results file.
TEST(HybridSplit, HostKernelSpreadReachesTheResultsFile) {
  profiler::ExpertCounters p;
  p.configure(2, 4);
  profiler::HostKernelRate k;
  k.best_gbps = 52.5;
  k.median_gbps = 49.0;
  k.worst_gbps = 41.25;
  k.samples = 8;
  k.threads = 16;
  k.cold = true;
  p.note_host_kernel(k);
  EXPECT_EQ(p.host_kernel_gbps(), 52.5);
  reports::ExpertCounters e;
  suites::add_expert_counters(e, p);
  EXPECT_EQ(e.host_kernel_gbps, 52.5);
  EXPECT_EQ(e.host_kernel_median_gbps, 49.0);
  EXPECT_EQ(e.host_kernel_worst_gbps, 41.25);
  EXPECT_EQ(e.host_kernel_samples, 8);
  EXPECT_TRUE(e.host_kernel_cold);
  reports::Results r;
  reports::Case c;
  c.name = "P3";
  c.experts = e;
  r.cases.push_back(c);
  const reports::Results back = reports::results_from_json(reports::to_json(r), "round trip");
  ASSERT_EQ(back.cases.size(), 1u);
  const reports::ExpertCounters& b = back.cases[0].experts;
  EXPECT_EQ(b.host_kernel_gbps, 52.5);
  EXPECT_EQ(b.host_kernel_median_gbps, 49.0);
  EXPECT_EQ(b.host_kernel_worst_gbps, 41.25);
  EXPECT_EQ(b.host_kernel_samples, 8);
  EXPECT_TRUE(b.host_kernel_cold);
  nlohmann::json j = reports::to_json(r);
  j["cases"][0]["experts"]["host_kernel_cold"] = "yes";
  try {
    reports::results_from_json(j, "bad.json");
    ADD_FAILURE() << "a non-boolean host_kernel_cold was accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("host_kernel_cold"), std::string::npos) << err.what();
  }
}

}  // namespace hybrid_split_test
