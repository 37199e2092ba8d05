// cache_policy.cpp: the cache policies and their registry (see cache_policy.h).
#include "variants/cache_policy.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "common/error.h"

namespace moebench {

namespace {

// Least recently used (by last access or insert tick); ties: lowest key.
class LruPolicy : public CachePolicy {
 public:
  explicit LruPolicy(const CacheShape& s) : last_(s.n_keys(), -1) {}
  void on_access(KeyIndex k, const CacheTime& t, bool) override { last_[k] = t.tick; }
  void on_insert(KeyIndex k, const CacheTime& t, bool) override { last_[k] = t.tick; }
  KeyIndex choose_victim(std::span<const KeyIndex> c, const CacheTime&) override { return lru_of(c); }

 protected:
  KeyIndex lru_of(std::span<const KeyIndex> c) const {
    KeyIndex best = c[0];
    for (KeyIndex k : c)
      if (last_[k] < last_[best] || (last_[k] == last_[best] && k < best)) best = k;
    return best;
  }
  std::vector<int64_t> last_;  // (n_keys) tick of last access or insert
};

class NonePolicy final : public LruPolicy {
 public:
  using LruPolicy::LruPolicy;
  bool drop_after_use() const override { return true; }
};

class PrefetchPolicy final : public LruPolicy {
 public:
  using LruPolicy::LruPolicy;
  bool speculative() const override { return true; }
};

// Least frequently used; demand-access counts are kept across evictions (a key
// that was popular comes back with its count). Ties: least recently used.
class LfuPolicy : public LruPolicy {
 public:
  explicit LfuPolicy(const CacheShape& s) : LruPolicy(s), freq_(s.n_keys(), 0) {}
  void on_access(KeyIndex k, const CacheTime& t, bool hit) override {
    ++freq_[k];
    LruPolicy::on_access(k, t, hit);
  }
  KeyIndex choose_victim(std::span<const KeyIndex> c, const CacheTime&) override {
    KeyIndex best = c[0];
    for (KeyIndex k : c) {
      if (freq_[k] < freq_[best] || (freq_[k] == freq_[best] && (last_[k] < last_[best] ||
                                                                 (last_[k] == last_[best] && k < best))))
        best = k;
    }
    return best;
  }

 private:
  std::vector<int64_t> freq_;
};

class LfuPrefetchPolicy final : public LfuPolicy {
 public:
  using LfuPolicy::LfuPolicy;
  bool speculative() const override { return true; }
};

// Pins the most used keys (never evicted), LRU among the rest.
class StaticPolicy final : public LruPolicy {
 public:
  StaticPolicy(const CacheShape& s, const std::vector<int64_t>& usage) : LruPolicy(s), pinned_(s.n_keys(), 0) {
    int n_pin = s.capacity >= s.n_keys() ? s.n_keys() : s.capacity - s.top_k;
    std::vector<KeyIndex> order(s.n_keys());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](KeyIndex a, KeyIndex b) { return usage[a] > usage[b]; });
    for (int i = 0; i < n_pin && i < s.n_keys(); ++i) {
      if (usage[order[i]] <= 0) break;
      pins_.push_back(order[i]);
      pinned_[order[i]] = 1;
    }
  }
  std::vector<KeyIndex> warm_set() const override { return pins_; }
  KeyIndex choose_victim(std::span<const KeyIndex> c, const CacheTime&) override {
    KeyIndex best = -1;
    for (KeyIndex k : c) {
      if (pinned_[k]) continue;
      if (best < 0 || last_[k] < last_[best] || (last_[k] == last_[best] && k < best)) best = k;
    }
    return best >= 0 ? best : lru_of(c);
  }

 private:
  std::vector<KeyIndex> pins_;  // most used first
  std::vector<char> pinned_;    // (n_keys)
};

class PreloadAllPolicy final : public LruPolicy {
 public:
  explicit PreloadAllPolicy(const CacheShape& s) : LruPolicy(s), n_keys_(s.n_keys()) {
    if (s.capacity < s.n_keys())
      fail("policy preload-all: needs {} slots ({} layers x {} experts), capacity is {}", s.n_keys(), s.n_layers,
           s.n_experts, s.capacity);
  }
  std::vector<KeyIndex> warm_set() const override {
    std::vector<KeyIndex> all(n_keys_);
    std::iota(all.begin(), all.end(), 0);
    return all;
  }

 private:
  int n_keys_;
};

// Belady's MIN: evict the candidate whose next use lies farthest in the future.
// Time of an access = step * n_layers + layer. Warm-loads the first `capacity`
// distinct keys of the trace, exactly the loads MIN makes before its first eviction,
// so it counts no warm-up misses that static/preload-all would not count either.
class BeladyPolicy final : public CachePolicy {
 public:
  BeladyPolicy(const CacheShape& s, const RoutingTrace& t) : n_layers_(s.n_layers), uses_(s.n_keys()) {
    if (t.n_layers != s.n_layers || t.n_experts != s.n_experts)
      fail("policy belady: trace has {} layers x {} experts, the cache {} x {}", t.n_layers, t.n_experts, s.n_layers,
           s.n_experts);
    std::vector<char> seen(s.n_keys(), 0);
    for (int st = 0; st < t.n_steps(); ++st) {
      for (int l = 0; l < t.n_layers; ++l) {
        int64_t time = static_cast<int64_t>(st) * n_layers_ + l;
        for (int32_t e : t.ids(st, l)) {
          KeyIndex k = l * s.n_experts + e;
          auto& u = uses_[k];
          if (u.empty() || u.back() != time) u.push_back(time);
          if (!seen[k]) {
            seen[k] = 1;
            if (static_cast<int>(warm_.size()) < s.capacity) warm_.push_back(k);
          }
        }
      }
    }
  }
  std::vector<KeyIndex> warm_set() const override { return warm_; }
  KeyIndex choose_victim(std::span<const KeyIndex> c, const CacheTime& now) override {
    int64_t t = static_cast<int64_t>(now.step) * n_layers_ + now.layer;
    KeyIndex best = c[0];
    int64_t best_next = -1;
    for (KeyIndex k : c) {
      const auto& u = uses_[k];
      auto it = std::upper_bound(u.begin(), u.end(), t);
      int64_t next = it == u.end() ? std::numeric_limits<int64_t>::max() : *it;
      if (next > best_next || (next == best_next && k < best)) {
        best = k;
        best_next = next;
      }
    }
    return best;
  }

 private:
  int n_layers_;
  std::vector<std::vector<int64_t>> uses_;  // (n_keys) sorted access times
  std::vector<KeyIndex> warm_;
};

std::vector<int64_t> static_usage(const PolicyContext& ctx) {
  if (!ctx.usage.empty()) {
    if (static_cast<int>(ctx.usage.size()) != ctx.shape.n_keys())
      fail("policy static: usage has {} counts, expected {} (layers {} x experts {})", ctx.usage.size(),
           ctx.shape.n_keys(), ctx.shape.n_layers, ctx.shape.n_experts);
    return ctx.usage;
  }
  if (!ctx.trace) fail("policy static: needs usage counts or a routing trace to find the most used experts");
  if (ctx.trace->n_layers != ctx.shape.n_layers || ctx.trace->n_experts != ctx.shape.n_experts)
    fail("policy static: trace has {} layers x {} experts, the cache {} x {}", ctx.trace->n_layers,
         ctx.trace->n_experts, ctx.shape.n_layers, ctx.shape.n_experts);
  return ctx.trace->usage_counts();
}

}  // namespace

const std::vector<CachePolicyInfo>& cache_policies() {
  using P = std::unique_ptr<CachePolicy>;
  static const std::vector<CachePolicyInfo> r = {
      {"none", "load on use, drop after the layer ran (no reuse)", false, false,
       [](const PolicyContext& c) { return P(new NonePolicy(c.shape)); }},
      {"lru", "evict the least recently used expert", false, false,
       [](const PolicyContext& c) { return P(new LruPolicy(c.shape)); }},
      {"lfu", "evict the least frequently used expert (counts survive eviction; ties LRU)", false, false,
       [](const PolicyContext& c) { return P(new LfuPolicy(c.shape)); }},
      {"static", "pin the capacity - top_k most used experts (from usage counts or the trace), LRU in the rest", true,
       false, [](const PolicyContext& c) { return P(new StaticPolicy(c.shape, static_usage(c))); }},
      {"preload-all", "every expert resident before the first step; error when capacity is short", false, false,
       [](const PolicyContext& c) { return P(new PreloadAllPolicy(c.shape)); }},
      {"prefetch", "LRU plus speculative loads of the experts predicted for layer L+1 while at layer L", false, true,
       [](const PolicyContext& c) { return P(new PrefetchPolicy(c.shape)); }},
      {"lfu-prefetch", "LFU plus speculative loads of the experts predicted for layer L+1 while at layer L", false,
       true, [](const PolicyContext& c) { return P(new LfuPrefetchPolicy(c.shape)); }},
      {"belady", "offline optimum (MIN) from the routing trace: evict the expert used farthest ahead", true, false,
       [](const PolicyContext& c) -> P {
         if (!c.trace) fail("policy belady: needs a routing trace (the future access sequence)");
         return P(new BeladyPolicy(c.shape, *c.trace));
       }},
  };
  return r;
}

std::vector<std::string> cache_policy_names() {
  std::vector<std::string> n;
  for (const auto& p : cache_policies()) n.push_back(p.name);
  return n;
}

const CachePolicyInfo& find_cache_policy(const std::string& name) {
  for (const auto& p : cache_policies())
    if (p.name == name) return p;
  fail("cache policy '{}' is unknown, expected one of: {}", name, fmt::join(cache_policy_names(), ", "));
}

std::unique_ptr<CachePolicy> make_cache_policy(const std::string& name, const PolicyContext& ctx) {
  return find_cache_policy(name).make(ctx);
}

}  // namespace moebench
