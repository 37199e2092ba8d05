// cache_policy.h: expert-cache policies as pure decision logic over
// (layer, expert, step), and their registry (name, one-line description, factory).
//
// A policy never owns slots or moves bytes: ExpertCache (expert_cache.h) keeps the
// residency and asks the policy which resident key to evict, which keys to warm up
// and whether it takes speculative loads. The engine and the simulator both drive
// ExpertCache, so for the same access sequence they take the same decisions.
//
//   none         load on use, drop after the layer ran
//   lru          evict the least recently used
//   lfu          evict the least frequently used (counts kept across evictions; ties: LRU)
//   static       pin the (capacity - top_k) most used keys (warm-loaded), LRU in the rest
//   preload-all  every expert resident before the first step; error if capacity is short
//   prefetch     LRU, plus speculative loads for layer L+1 issued while at layer L
//   lfu-prefetch LFU, plus the same speculative loads
//   belady       offline optimum (MIN): evict the key used farthest in the future of a
//                trace; warm-loads the first `capacity` distinct keys of the trace
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "variants/routing_trace.h"

namespace moebench {

// A cache key (layer, expert) as one index: layer * n_experts + expert.
using KeyIndex = int32_t;

struct ExpertKey {
  int layer = 0;
  int expert = 0;
  bool operator==(const ExpertKey&) const = default;
};

struct CacheShape {
  int n_layers = 0;
  int n_experts = 0;
  int top_k = 0;
  int capacity = 0;  // expert slots, global across layers
  int n_keys() const { return n_layers * n_experts; }
  KeyIndex index(ExpertKey k) const { return k.layer * n_experts + k.expert; }
  ExpertKey key(KeyIndex i) const { return {i / n_experts, i % n_experts}; }
};

// When an event happens: the (step, layer) being run, and a global event counter.
struct CacheTime {
  int step = 0;
  int layer = 0;
  int64_t tick = 0;
};

class CachePolicy {
 public:
  virtual ~CachePolicy() = default;
  // Keys made resident before the first step, in load order (static, preload-all, belady).
  virtual std::vector<KeyIndex> warm_set() const { return {}; }
  // True for `none`: the keys a layer used are dropped when the next layer starts.
  virtual bool drop_after_use() const { return false; }
  // True for `prefetch`: ExpertCache::prefetch loads; otherwise it is a no-op.
  virtual bool speculative() const { return false; }
  // A demand access (after the key was made resident when it missed).
  virtual void on_access(KeyIndex, const CacheTime&, bool /*hit*/) {}
  virtual void on_insert(KeyIndex, const CacheTime&, bool /*prefetch*/) {}
  virtual void on_evict(KeyIndex) {}
  // Picks the key to evict among `candidates` (resident, not in use; never empty).
  virtual KeyIndex choose_victim(std::span<const KeyIndex> candidates, const CacheTime& now) = 0;
};

// What a policy may know at construction.
struct PolicyContext {
  CacheShape shape;
  // The run's routing trace: the future access sequence (belady) and the popularity
  // (static, unless `usage` is given). Not owned; must outlive the factory call only.
  const RoutingTrace* trace = nullptr;
  std::vector<int64_t> usage;  // (n_layers, n_experts) routing counts for static; empty: from trace
};

struct CachePolicyInfo {
  std::string name;
  std::string description;
  bool needs_trace;  // belady (future), static (popularity, unless usage is given)
  bool speculative;  // takes prefetch() loads
  std::function<std::unique_ptr<CachePolicy>(const PolicyContext&)> make;
};

const std::vector<CachePolicyInfo>& cache_policies();
std::vector<std::string> cache_policy_names();
// Throws Error listing the registered names.
const CachePolicyInfo& find_cache_policy(const std::string& name);
// Throws Error when the policy cannot run with this context (no trace for belady,
// capacity short of every expert for preload-all, ...).
std::unique_ptr<CachePolicy> make_cache_policy(const std::string& name, const PolicyContext& ctx);

}  // namespace moebench
