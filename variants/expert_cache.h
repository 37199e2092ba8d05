// expert_cache.h: the expert slot cache — residency of (layer, expert) keys in a
// fixed number of slots (global across layers), decided by a CachePolicy.
//
// The engine (which copies weights into the slots) and the simulator (which only
// counts) drive it through the same calls, in the same order, so their hit rates
// are equal by construction for the same routing, predictions and capacity:
//
//   ExpertCache cache(shape, make_cache_policy(name, ctx));
//   for (key : cache.warm_up()) load key into its slot;                 // before step 0
//   for each step s, for each layer l in order:
//     cache.access_layer(s, l, ids_of_step_layer, results);            // (n_tokens, top_k) ids
//     for (r : results) if (!r.hit) load r.key into r.slot;             // in order (see below)
//     if (cache.speculative() && l + 1 < layers)
//       cache.prefetch(s, l + 1, predicted_ids, results);               // loads to issue
//   cache.finish();
//
// In use: the experts one access_layer call needs are pinned until the next
// access_layer call, so they never evict each other and prefetches for the next
// layer never evict them; prefetched keys are pinned the same way. Hence
// capacity >= top_k (checked). Only when one call needs more distinct experts
// than there are slots (a prefill chunk) does the cache reuse the slot of an
// expert listed earlier in the same call: `evicted` names it, and the engine must
// have finished computing with it before the new load lands. Likewise any load
// whose `evicted` key was used by an earlier layer must wait (an event on the copy
// stream) for that layer's compute; the cache decides, the engine orders.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "variants/cache_policy.h"

namespace moebench {

struct AccessResult {
  ExpertKey key;
  bool hit = false;         // resident before this access (or prefetch)
  bool prefetched = false;  // demand hit on a slot a prefetch loaded and nothing used yet
  int slot = -1;            // slot in [0, capacity) that holds the key now; -1 when `host`
  std::optional<ExpertKey> evicted;  // key whose slot was reused for this load
  bool host = false;        // a miss left on the host (computed there, not loaded: no slot)
};

struct CacheCounters {
  int64_t accesses = 0;          // demand accesses: distinct experts per (step, layer)
  int64_t hits = 0;              // resident when accessed (prefetched ones included)
  int64_t misses = 0;            // = demand loads
  int64_t prefetch_loads = 0;    // speculative loads issued
  int64_t warm_loads = 0;        // loads before the first step
  int64_t evictions = 0;         // slots taken from a key (drops of `none` included)
  int64_t prefetch_hits = 0;     // demand hits on a prefetched, not yet used slot
  int64_t prefetch_wasted = 0;   // prefetched keys evicted (or left at finish) unused
  int64_t prefetch_skipped = 0;  // prefetches refused: every slot was in use
  int64_t host_computed = 0;     // demand accesses neither resident nor loaded: computed on the host
  int64_t loads() const { return misses + prefetch_loads + warm_loads; }
  double hit_rate() const { return accesses ? static_cast<double>(hits) / accesses : 0.0; }
  CacheCounters& operator+=(const CacheCounters& o);
};

class ExpertCache {
 public:
  // Throws Error if capacity < top_k or the shape is invalid.
  ExpertCache(CacheShape shape, std::unique_ptr<CachePolicy> policy);
  ~ExpertCache();
  ExpertCache(ExpertCache&&) noexcept;
  ExpertCache& operator=(ExpertCache&&) noexcept;

  const CacheShape& shape() const { return shape_; }
  bool speculative() const;

  // Makes the policy's warm set resident; returns the loads to perform (hit=false).
  std::vector<AccessResult> warm_up();
  // Demand access of one (step, layer): `ids` are the (n_tokens, top_k) expert ids
  // of the step, duplicates allowed. `out` gets one result per distinct expert, in
  // first-occurrence order. Releases the pins of the previous call.
  // `host` ((n_experts) flags, or empty): a flagged expert that is not resident is not
  // loaded either — no slot, no eviction; its result has host set, and it counts in
  // accesses and host_computed (not in misses, which stay the loads). The policy sees
  // the access (on_access with hit false) as for any miss.
  void access_layer(int step, int layer, std::span<const int32_t> ids, std::vector<AccessResult>& out,
                    std::span<const char> host = {});
  // Speculative loads of predicted experts of `layer` (the next one) at `step`.
  // `out` gets one result per load issued (already resident ones are skipped);
  // empty unless the policy is speculative.
  void prefetch(int step, int layer, std::span<const int32_t> ids, std::vector<AccessResult>& out);
  // Ends the run: releases pins, counts prefetched-but-unused keys as wasted.
  void finish();

  int slot_of(ExpertKey k) const;                // -1 when not resident
  std::optional<ExpertKey> key_in(int slot) const;
  int resident() const;                          // occupied slots
  const CacheCounters& counters() const { return total_; }
  const std::vector<CacheCounters>& counters_by_layer() const { return by_layer_; }  // (n_layers)

 private:
  int take_slot(const CacheTime& t, bool for_prefetch, KeyIndex* evicted);
  void evict(KeyIndex k);
  void release_pins();

  CacheShape shape_;
  std::unique_ptr<CachePolicy> policy_;
  std::vector<int> slot_of_;          // (n_keys) slot or -1
  std::vector<KeyIndex> key_of_;      // (capacity) key or -1
  std::vector<int> free_;             // free slots, popped from the back
  std::vector<char> pinned_;          // (n_keys)
  std::vector<char> unused_prefetch_; // (n_keys)
  std::vector<KeyIndex> pins_;        // pinned keys, in pin order
  std::vector<KeyIndex> done_;        // keys processed by the current access_layer, in order
  std::vector<int64_t> seen_;         // (n_experts) dedup stamp per call
  std::vector<KeyIndex> cand_;        // scratch: eviction candidates
  std::vector<int32_t> uniq_;         // scratch: distinct experts of a call
  int64_t tick_ = 0;
  int64_t call_ = 0;
  CacheCounters total_;
  std::vector<CacheCounters> by_layer_;
};

}  // namespace moebench
