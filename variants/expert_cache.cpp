// expert_cache.cpp: see expert_cache.h.
#include "variants/expert_cache.h"

#include "common/error.h"

namespace moebench {

CacheCounters& CacheCounters::operator+=(const CacheCounters& o) {
  accesses += o.accesses;
  hits += o.hits;
  misses += o.misses;
  prefetch_loads += o.prefetch_loads;
  warm_loads += o.warm_loads;
  evictions += o.evictions;
  prefetch_hits += o.prefetch_hits;
  prefetch_wasted += o.prefetch_wasted;
  prefetch_skipped += o.prefetch_skipped;
  host_computed += o.host_computed;
  return *this;
}

ExpertCache::ExpertCache(CacheShape shape, std::unique_ptr<CachePolicy> policy)
    : shape_(shape), policy_(std::move(policy)) {
  if (shape.n_layers <= 0 || shape.n_experts <= 0 || shape.top_k <= 0 || shape.top_k > shape.n_experts)
    fail("expert cache: shape layers={} experts={} top_k={} is invalid", shape.n_layers, shape.n_experts,
         shape.top_k);
  const int64_t keys = static_cast<int64_t>(shape.n_layers) * shape.n_experts;
  if (keys > (1 << 24))
    fail("expert cache: {} layers x {} experts is over the 16777216 experts it can track", shape.n_layers,
         shape.n_experts);
  if (shape.capacity < shape.top_k)
    fail("expert cache: capacity {} slots is below top_k {}: the experts of one token must all be resident",
         shape.capacity, shape.top_k);
  // Slots beyond one per expert could never be filled; refusing them also keeps a
  // mistyped capacity from allocating gigabytes of slot tables.
  if (shape.capacity > keys)
    fail("expert cache: capacity {} slots is more than the {} experts there are ({} layers x {}); at most {} slots "
         "can be used",
         shape.capacity, keys, shape.n_layers, shape.n_experts, keys);
  if (!policy_) fail("expert cache: no policy given");
  slot_of_.assign(shape.n_keys(), -1);
  key_of_.assign(shape.capacity, -1);
  free_.reserve(shape.capacity);
  for (int s = shape.capacity - 1; s >= 0; --s) free_.push_back(s);  // slot 0 is taken first
  pinned_.assign(shape.n_keys(), 0);
  unused_prefetch_.assign(shape.n_keys(), 0);
  seen_.assign(shape.n_experts, -1);
  by_layer_.assign(shape.n_layers, CacheCounters{});
}

ExpertCache::~ExpertCache() = default;
ExpertCache::ExpertCache(ExpertCache&&) noexcept = default;
ExpertCache& ExpertCache::operator=(ExpertCache&&) noexcept = default;

bool ExpertCache::speculative() const { return policy_->speculative(); }

int ExpertCache::slot_of(ExpertKey k) const {
  if (k.layer < 0 || k.layer >= shape_.n_layers || k.expert < 0 || k.expert >= shape_.n_experts) return -1;
  return slot_of_[shape_.index(k)];
}

std::optional<ExpertKey> ExpertCache::key_in(int slot) const {
  if (slot < 0 || slot >= shape_.capacity || key_of_[slot] < 0) return std::nullopt;
  return shape_.key(key_of_[slot]);
}

int ExpertCache::resident() const { return shape_.capacity - static_cast<int>(free_.size()); }

void ExpertCache::evict(KeyIndex k) {
  int slot = slot_of_[k];
  slot_of_[k] = -1;
  key_of_[slot] = -1;
  CacheCounters& L = by_layer_[k / shape_.n_experts];
  if (unused_prefetch_[k]) {
    unused_prefetch_[k] = 0;
    ++total_.prefetch_wasted;
    ++L.prefetch_wasted;
  }
  ++total_.evictions;
  ++L.evictions;
  policy_->on_evict(k);
}

int ExpertCache::take_slot(const CacheTime& t, bool for_prefetch, KeyIndex* evicted) {
  *evicted = -1;
  if (!free_.empty()) {
    int s = free_.back();
    free_.pop_back();
    return s;
  }
  cand_.clear();
  for (KeyIndex k : key_of_)
    if (!pinned_[k]) cand_.push_back(k);
  if (cand_.empty()) {
    if (for_prefetch) return -1;
    // One call needs more distinct experts than there are slots (prefill chunk):
    // reuse the slot of the earliest expert this call already processed, else of the
    // earliest pinned one (it will be reloaded when its turn comes).
    KeyIndex r = -1;
    for (KeyIndex k : done_)
      if (pinned_[k] && slot_of_[k] >= 0) {
        r = k;
        break;
      }
    if (r < 0)
      for (KeyIndex k : pins_)
        if (pinned_[k] && slot_of_[k] >= 0) {
          r = k;
          break;
        }
    if (r < 0) fail("expert cache: no slot can be reused (capacity {})", shape_.capacity);
    pinned_[r] = 0;
    cand_.push_back(r);
  }
  KeyIndex victim = policy_->choose_victim(cand_, t);
  if (victim < 0 || victim >= shape_.n_keys() || slot_of_[victim] < 0 || pinned_[victim])
    fail("expert cache: policy chose key {} which is not an evictable resident key", victim);
  int s = slot_of_[victim];
  evict(victim);
  *evicted = victim;
  return s;
}

void ExpertCache::release_pins() {
  const bool drop = policy_->drop_after_use();
  for (KeyIndex k : pins_) {
    if (!pinned_[k]) continue;
    pinned_[k] = 0;
    if (drop && slot_of_[k] >= 0) {
      int s = slot_of_[k];
      evict(k);
      free_.push_back(s);
    }
  }
  pins_.clear();
}

std::vector<AccessResult> ExpertCache::warm_up() {
  std::vector<AccessResult> out;
  for (KeyIndex k : policy_->warm_set()) {
    if (k < 0 || k >= shape_.n_keys()) fail("expert cache: warm set names key {} outside [0, {})", k, shape_.n_keys());
    if (slot_of_[k] >= 0) continue;
    if (free_.empty()) break;
    int s = free_.back();
    free_.pop_back();
    slot_of_[k] = s;
    key_of_[s] = k;
    ++total_.warm_loads;
    ++by_layer_[k / shape_.n_experts].warm_loads;
    policy_->on_insert(k, CacheTime{0, k / shape_.n_experts, ++tick_}, false);
    out.push_back(AccessResult{shape_.key(k), false, false, s, std::nullopt});
  }
  return out;
}

void ExpertCache::access_layer(int step, int layer, std::span<const int32_t> ids, std::vector<AccessResult>& out,
                               std::span<const char> host) {
  if (!host.empty() && static_cast<int>(host.size()) != shape_.n_experts)
    fail("expert cache: host flags for {} experts, the layer has {}", host.size(), shape_.n_experts);
  if (layer < 0 || layer >= shape_.n_layers) fail("expert cache: layer {} out of range [0, {})", layer, shape_.n_layers);
  release_pins();
  out.clear();
  done_.clear();
  ++call_;
  // Distinct experts in first-occurrence order; pin the resident ones first so that
  // the misses of this call cannot evict them.
  std::vector<int32_t>& uniq = uniq_;
  uniq.clear();
  for (int32_t e : ids) {
    if (e < 0 || e >= shape_.n_experts)
      fail("expert cache: expert id {} at layer {} out of range [0, {})", e, layer, shape_.n_experts);
    if (seen_[e] == call_) continue;
    seen_[e] = call_;
    uniq.push_back(e);
  }
  const KeyIndex base = layer * shape_.n_experts;
  for (int32_t e : uniq) {
    KeyIndex k = base + e;
    if (slot_of_[k] >= 0 && !pinned_[k]) {
      pinned_[k] = 1;
      pins_.push_back(k);
    }
  }
  CacheCounters& L = by_layer_[layer];
  for (int32_t e : uniq) {
    KeyIndex k = base + e;
    CacheTime t{step, layer, ++tick_};
    AccessResult r;
    r.key = {layer, e};
    ++total_.accesses;
    ++L.accesses;
    if (slot_of_[k] >= 0) {
      r.hit = true;
      r.slot = slot_of_[k];
      ++total_.hits;
      ++L.hits;
      if (unused_prefetch_[k]) {
        unused_prefetch_[k] = 0;
        r.prefetched = true;
        ++total_.prefetch_hits;
        ++L.prefetch_hits;
      }
    } else if (!host.empty() && host[e]) {
      r.host = true;
      ++total_.host_computed;
      ++L.host_computed;
      policy_->on_access(k, t, false);
      out.push_back(r);
      continue;  // not resident: nothing to pin
    } else {
      KeyIndex ev;
      int s = take_slot(t, false, &ev);
      slot_of_[k] = s;
      key_of_[s] = k;
      r.slot = s;
      if (ev >= 0) r.evicted = shape_.key(ev);
      ++total_.misses;
      ++L.misses;
      policy_->on_insert(k, t, false);
    }
    if (!pinned_[k]) {
      pinned_[k] = 1;
      pins_.push_back(k);
    }
    policy_->on_access(k, t, r.hit);
    done_.push_back(k);
    out.push_back(r);
  }
}

void ExpertCache::prefetch(int step, int layer, std::span<const int32_t> ids, std::vector<AccessResult>& out) {
  out.clear();
  if (!policy_->speculative()) return;
  if (layer < 0 || layer >= shape_.n_layers) fail("expert cache: prefetch layer {} out of range [0, {})", layer,
                                                  shape_.n_layers);
  ++call_;
  const KeyIndex base = layer * shape_.n_experts;
  std::vector<int32_t>& uniq = uniq_;
  uniq.clear();
  for (int32_t e : ids) {
    if (e < 0 || e >= shape_.n_experts)
      fail("expert cache: predicted expert id {} at layer {} out of range [0, {})", e, layer, shape_.n_experts);
    if (seen_[e] == call_) continue;
    seen_[e] = call_;
    uniq.push_back(e);
  }
  // Predicted keys must not evict each other: pin the resident ones first.
  for (int32_t e : uniq) {
    KeyIndex k = base + e;
    if (slot_of_[k] >= 0 && !pinned_[k]) {
      pinned_[k] = 1;
      pins_.push_back(k);
    }
  }
  for (int32_t e : uniq) {
    KeyIndex k = base + e;
    if (slot_of_[k] >= 0) continue;
    CacheTime t{step, layer, ++tick_};
    KeyIndex ev;
    int s = take_slot(t, true, &ev);
    if (s < 0) {
      ++total_.prefetch_skipped;
      ++by_layer_[layer].prefetch_skipped;
      continue;
    }
    slot_of_[k] = s;
    key_of_[s] = k;
    unused_prefetch_[k] = 1;
    ++total_.prefetch_loads;
    ++by_layer_[layer].prefetch_loads;
    policy_->on_insert(k, t, true);
    pinned_[k] = 1;
    pins_.push_back(k);
    AccessResult r;
    r.key = {layer, e};
    r.slot = s;
    if (ev >= 0) r.evicted = shape_.key(ev);
    out.push_back(r);
  }
}

void ExpertCache::finish() {
  release_pins();
  for (KeyIndex k = 0; k < shape_.n_keys(); ++k) {
    if (!unused_prefetch_[k]) continue;
    unused_prefetch_[k] = 0;
    ++total_.prefetch_wasted;
    ++by_layer_[k / shape_.n_experts].prefetch_wasted;
  }
}

}  // namespace moebench
