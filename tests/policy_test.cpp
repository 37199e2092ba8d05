// policy_test.cpp: ExpertCache mechanics and the cache policies on hand-made
// access sequences with exact expected hits and eviction orders.
#include <gtest/gtest.h>

#include "common/error.h"
#include "variants/cache_policy.h"
#include "variants/expert_cache.h"

namespace policy_test {

using namespace moebench;

namespace {

// 1 layer x 8 experts, top-1: every step accesses one expert, so sequences read
// like textbook paging examples.
ExpertCache cache1(const std::string& policy, int capacity, const RoutingTrace* trace = nullptr) {
  CacheShape s{1, 8, 1, capacity};
  return ExpertCache(s, make_cache_policy(policy, PolicyContext{s, trace, {}}));
}

struct Outcome {
  std::string pattern;                 // 'H' hit / 'M' miss per access
  std::vector<std::optional<int>> ev;  // evicted expert per access
};

Outcome drive(ExpertCache& c, const std::vector<int>& seq) {
  Outcome r;
  std::vector<AccessResult> out;
  for (size_t s = 0; s < seq.size(); ++s) {
    int32_t id = seq[s];
    c.access_layer(static_cast<int>(s), 0, std::span<const int32_t>(&id, 1), out);
    r.pattern += out.at(0).hit ? 'H' : 'M';
    r.ev.push_back(out[0].evicted ? std::optional<int>(out[0].evicted->expert) : std::nullopt);
  }
  c.finish();
  return r;
}

RoutingTrace trace1(const std::vector<int>& seq) {
  RoutingTrace t;
  t.n_layers = 1;
  t.n_experts = 8;
  t.top_k = 1;
  for (int e : seq) t.add_step(1, false).ids[0] = e;
  return t;
}

}  // namespace

TEST(Policy, RegistryHasEveryPolicy) {
  for (const char* n : {"none", "lru", "lfu", "static", "preload-all", "prefetch", "belady"}) {
    const CachePolicyInfo& p = find_cache_policy(n);
    EXPECT_FALSE(p.description.empty());
  }
  EXPECT_TRUE(find_cache_policy("prefetch").speculative);
  EXPECT_TRUE(find_cache_policy("belady").needs_trace);
  try {
    find_cache_policy("fifo");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lru"), std::string::npos);  // lists the names
  }
}

TEST(Policy, LruEvictionOrder) {
  ExpertCache c = cache1("lru", 3);
  //            1  2  3  1  4  2  5  1  3
  Outcome r = drive(c, {1, 2, 3, 1, 4, 2, 5, 1, 3});
  EXPECT_EQ(r.pattern, "MMMHMMMMM");
  // 4 evicts 2 (LRU of {2,3,1}); 2 evicts 3; 5 evicts 1; 1 evicts 4; 3 evicts 2.
  std::vector<std::optional<int>> ev = {std::nullopt, std::nullopt, std::nullopt, std::nullopt, 2, 3, 1, 4, 2};
  EXPECT_EQ(r.ev, ev);
}

TEST(Policy, LfuEvictionOrder) {
  ExpertCache c = cache1("lfu", 2);
  //            1  1  2  3  2  3  1
  Outcome r = drive(c, {1, 1, 2, 3, 2, 3, 1});
  // 3 evicts 2 (freq 1 < 1's 2); 2 evicts 3 (freq 1); 3 finds 1 and 2 both at freq 2
  // and evicts the less recent, 1; 1 then finds 2 and 3 at freq 2 and evicts 2.
  EXPECT_EQ(r.pattern, "MHMMMMM");
  std::vector<std::optional<int>> ev = {std::nullopt, std::nullopt, std::nullopt, 2, 3, 1, 2};
  EXPECT_EQ(r.ev, ev);
}

TEST(Policy, NoneNeverHitsAndDrops) {
  ExpertCache c = cache1("none", 4);
  Outcome r = drive(c, {1, 1, 2, 2, 1});
  EXPECT_EQ(r.pattern, "MMMMM");
  EXPECT_EQ(c.counters().evictions, 5);
  EXPECT_EQ(c.resident(), 0);
}

TEST(Policy, BeladyIsOptimalOnTextbookSequence) {
  // Classic example, 3 frames: MIN makes 7 faults on 7 0 1 2 0 3 0 4 2 3 0 3 2 with
  // ids mapped into 0..7; the first 3 distinct keys are warm-loaded (not counted).
  std::vector<int> seq = {7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2};
  RoutingTrace t = trace1(seq);
  ExpertCache c = cache1("belady", 3, &t);
  auto warm = c.warm_up();
  EXPECT_EQ(warm.size(), 3u);
  Outcome r = drive(c, seq);
  EXPECT_EQ(r.pattern, "HHHMHMHMHHMHH");
  EXPECT_EQ(r.ev[3], 1);  // 1 and 7 are never used again: the lower key goes
  EXPECT_EQ(r.ev[5], 7);
  EXPECT_EQ(r.ev[7], 0);  // used at 10, after 2 (8) and 3 (9)
  EXPECT_EQ(r.ev[10], 4);
  EXPECT_EQ(c.counters().misses + c.counters().warm_loads, 7);  // textbook OPT: 7 faults
}

TEST(Policy, StaticPinsTheMostUsed) {
  // top_k 1, capacity 3: pins 2 keys (capacity - top_k), one scratch slot.
  std::vector<int> seq = {5, 6, 5, 1, 6, 2, 5, 6, 3};
  RoutingTrace t = trace1(seq);
  ExpertCache c = cache1("static", 3, &t);
  EXPECT_EQ(c.warm_up().size(), 2u);  // experts 5 and 6
  Outcome r = drive(c, seq);
  EXPECT_EQ(r.pattern, "HHHMHMHHM");
  EXPECT_EQ(r.ev[5], 1);  // the scratch slot, never a pinned one
  EXPECT_EQ(r.ev[8], 2);
}

TEST(Policy, PreloadAllNeedsRoomForEverything) {
  CacheShape s{2, 8, 2, 15};
  EXPECT_THROW(make_cache_policy("preload-all", PolicyContext{s, nullptr, {}}), Error);
  s.capacity = 16;
  ExpertCache c(s, make_cache_policy("preload-all", PolicyContext{s, nullptr, {}}));
  EXPECT_EQ(c.warm_up().size(), 16u);
  std::vector<AccessResult> out;
  std::vector<int32_t> ids = {3, 7};
  c.access_layer(0, 1, ids, out);
  EXPECT_TRUE(out[0].hit && out[1].hit);
}

TEST(Policy, NeedsTraceErrors) {
  CacheShape s{1, 8, 1, 2};
  EXPECT_THROW(make_cache_policy("belady", PolicyContext{s, nullptr, {}}), Error);
  EXPECT_THROW(make_cache_policy("static", PolicyContext{s, nullptr, {}}), Error);
  std::vector<int64_t> usage(8, 1);
  EXPECT_NO_THROW(make_cache_policy("static", PolicyContext{s, nullptr, usage}));
}

TEST(ExpertCache, CapacityBelowTopKIsAnError) {
  CacheShape s{2, 8, 2, 1};
  try {
    ExpertCache c(s, make_cache_policy("lru", PolicyContext{s, nullptr, {}}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("top_k"), std::string::npos);
  }
}

TEST(ExpertCache, ExpertsOfOneLayerNeverEvictEachOther) {
  // capacity == top_k: the two experts of a token always fit together.
  CacheShape s{2, 8, 2, 2};
  ExpertCache c(s, make_cache_policy("lru", PolicyContext{s, nullptr, {}}));
  std::vector<AccessResult> out;
  std::vector<int32_t> a = {1, 2}, b = {2, 3};
  c.access_layer(0, 0, a, out);
  c.access_layer(1, 0, b, out);  // 2 hits and must be pinned before 3 loads
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].hit);
  EXPECT_FALSE(out[1].hit);
  ASSERT_TRUE(out[1].evicted.has_value());
  EXPECT_EQ(out[1].evicted->expert, 1);
  EXPECT_EQ(c.slot_of({0, 2}), out[0].slot);
  EXPECT_EQ(c.slot_of({0, 3}), out[1].slot);
  EXPECT_NE(out[0].slot, out[1].slot);
}

TEST(ExpertCache, DuplicatesAreOneAccessAndSlotsAreConsistent) {
  CacheShape s{2, 8, 2, 4};
  ExpertCache c(s, make_cache_policy("lru", PolicyContext{s, nullptr, {}}));
  std::vector<AccessResult> out;
  std::vector<int32_t> ids = {1, 2, 2, 1, 5, 1};  // 3 tokens of a prefill chunk
  c.access_layer(0, 0, ids, out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(c.counters().accesses, 3);
  for (const auto& r : out) EXPECT_EQ(c.key_in(r.slot), r.key);
}

TEST(ExpertCache, PrefillChunkLargerThanCapacityReusesEarlierSlots) {
  CacheShape s{1, 8, 2, 2};
  ExpertCache c(s, make_cache_policy("lru", PolicyContext{s, nullptr, {}}));
  std::vector<AccessResult> out;
  std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5};  // 6 distinct experts, 2 slots
  c.access_layer(0, 0, ids, out);
  ASSERT_EQ(out.size(), 6u);
  for (size_t i = 2; i < 6; ++i) {
    ASSERT_TRUE(out[i].evicted.has_value());
    EXPECT_EQ(out[i].evicted->expert, static_cast<int>(i) - 2);  // the earliest processed one
  }
}

TEST(ExpertCache, PrefetchCountsHitsAndWaste) {
  CacheShape s{2, 8, 1, 3};
  ExpertCache c(s, make_cache_policy("prefetch", PolicyContext{s, nullptr, {}}));
  ASSERT_TRUE(c.speculative());
  std::vector<AccessResult> out, pre;
  std::vector<int32_t> a = {4}, p = {6}, b = {6};
  c.access_layer(0, 0, a, out);
  c.prefetch(0, 1, p, pre);
  ASSERT_EQ(pre.size(), 1u);
  c.access_layer(0, 1, b, out);
  EXPECT_TRUE(out[0].hit);
  EXPECT_TRUE(out[0].prefetched);
  std::vector<int32_t> wrong = {2};
  c.access_layer(1, 0, a, out);
  c.prefetch(1, 1, wrong, pre);  // mispredicted: 2 is never used
  c.finish();
  EXPECT_EQ(c.counters().prefetch_loads, 2);
  EXPECT_EQ(c.counters().prefetch_hits, 1);
  EXPECT_EQ(c.counters().prefetch_wasted, 1);
  // Non-speculative policies ignore prefetch.
  ExpertCache l(s, make_cache_policy("lru", PolicyContext{s, nullptr, {}}));
  l.prefetch(0, 1, p, pre);
  EXPECT_TRUE(pre.empty());
}

TEST(ExpertCache, PrefetchNeverEvictsTheExpertsInUse) {
  CacheShape s{2, 8, 2, 3};
  ExpertCache c(s, make_cache_policy("prefetch", PolicyContext{s, nullptr, {}}));
  std::vector<AccessResult> out, pre;
  std::vector<int32_t> a = {0, 1}, p = {2, 3};
  c.access_layer(0, 0, a, out);
  c.prefetch(0, 1, p, pre);  // one free slot: one load, the second is refused
  EXPECT_EQ(pre.size(), 1u);
  EXPECT_EQ(c.counters().prefetch_skipped, 1);
  EXPECT_GE(c.slot_of({0, 0}), 0);
  EXPECT_GE(c.slot_of({0, 1}), 0);
}

}  // namespace policy_test
