// offload_provider.h: the CUDA expert provider for the pinned and disk tiers.
//
// N expert slots live in the device arena (one block, each slot w1 | w3 | w2 in the
// experts' format, each matrix its parts — the host store's layout, ExpertLayout);
// which (layer, expert) sits in which slot is decided by an ExpertCache
// (variants/expert_cache.h), the same decision code the simulator runs, driven in the
// same call order, so hit/miss counts equal simulate()'s for the same
// routing, predictions, policy and capacity. Loads go on a dedicated copy stream
// (cudaStreamNonBlocking): pinned tier, one cudaMemcpyAsync from the page-locked
// store; disk tier, pread (O_DIRECT) into one of two page-locked staging buffers,
// then the copy (double-buffered: the next read overlaps the previous copy).
//
// Synchronisation (all events, never a device sync):
//   - loaded[slot]   recorded on the copy stream after a slot's copy; acquire() makes
//                    the compute stream cudaStreamWaitEvent on the events of exactly the
//                    experts the layer needs (hits included: a prefetch may be in flight);
//   - done[layer]    recorded on the compute stream after the layer's expert compute,
//                    either by release(layer, stream) or, if the model does not call it,
//                    by the next acquire() (then it also covers the next layer's
//                    attention: correct, slightly later); before a slot is loaded again,
//                    the copy stream waits on done[] of the layer that last read it.
//
// How the model calls it (CUDA model, per step s, per layer l, compute stream cs):
//   provider.acquire(s, l, ids, n_ids, out, cs);   // after routing: ids on the host
//   ... launch layer l's expert compute on cs reading out[e].w1/w3/w2 ...
//   provider.release(l, cs);                       // optional but recommended
//   if (provider.wants_prediction() && l + 1 < n_layers)
//     provider.prefetch(s, l + 1, predicted_ids, n);  // (n_tokens, top_k) predicted ids
// prefetch(l + 1) must come after acquire(l) and before acquire(l + 1) (the order the
// simulator uses); after launching layer l's experts is best, since the disk tier reads
// on the host inside prefetch. Never prefetch past the last layer (ignored).
// At the end of a run provider.finish() (cache finish + counters collected). Destroy the
// provider only once the compute stream no longer reads its slots (synchronize it).
// warm_up(cs) may be called at load time (static/preload-all/belady warm sets); the
// first acquire() does it otherwise. One acquire() must not need more distinct experts
// than there are slots (a prefill chunk wider than the cache): Error naming both.
//
// Counters: profiler::ExpertCounters (the engine's, or the provider's own) get, per
// layer, route() for every distinct expert of an acquire (hits/misses, usage matrix:
// for decode, one per routing), load() for every demand or prefetch load once its copy
// finished (bytes and copy time from a pair of timing events on the copy stream, plus
// the pread time on the disk tier; read without blocking at the next acquire, or with
// finish()/collect_counters(true)), and stall() with the time the compute stream stood
// at the waits (a timing-event pair on the compute stream around them, only when some
// needed load was still in flight). Warm-up loads are not counted there (stats()).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/expert_host_store.h"
#include "engine/expert_provider.h"
#include "model/settings.h"
#include "profiler/counters.h"
#include "variants/expert_cache.h"

namespace moebench::cuda {

// Page-locked host memory through cudaHostAlloc (portable), usable from any thread
// (each call sets the device that was current when the allocator was made).
HostAllocator pinned_host_allocator();

struct OffloadOptions {
  std::string policy = "lru";             // variants/cache_policy.h registry
  int slots = 0;                          // 0: as many as fit in the slot budget (at most every expert)
  const RoutingTrace* trace = nullptr;    // belady (the future), static (popularity); not owned
  std::vector<int64_t> static_usage;      // static: (layers, experts) counts instead of the trace's
  profiler::ExpertCounters* counters = nullptr;  // the engine's (Profiler::experts); null: own ones
  // policy and slots from the settings (cache_policy, cache_slots).
  static OffloadOptions from_settings(const EngineSettings& s);
};

// Everything the provider moved, warm-up included (for "miss bytes / measured H2D").
struct OffloadStats {
  int64_t demand_loads = 0, prefetch_loads = 0, warm_loads = 0;
  int64_t bytes = 0;          // bytes copied host -> device, completed loads
  int64_t copy_ns = 0;        // summed copy-stream time of those copies (timing events)
  int64_t read_ns = 0;        // disk tier: summed pread time (host clock)
  int64_t stall_ns = 0;       // compute-stream waits, summed
  int64_t stalls = 0;         // acquires where some needed load was still in flight
  double h2d_gbps() const { return copy_ns > 0 ? static_cast<double>(bytes) / static_cast<double>(copy_ns) : 0; }
};

class OffloadProvider final : public ExpertProvider {
 public:
  // `slot_budget_bytes`: what the arena may give the slots (the budget minus the rest of
  // the model). Slots = opt.slots, or as many as fit when 0. Throws Error when fewer than
  // top_k slots fit, naming the minimum slot budget and the minimum GPU budget
  // (arena capacity - slot_budget_bytes + top_k slots); when opt.slots do not fit; or
  // when the policy cannot run (belady without a trace, preload-all short of slots).
  // The store must outlive the provider.
  OffloadProvider(DeviceArena& arena, const ExpertHostStore& store, uint64_t slot_budget_bytes,
                  OffloadOptions opt = {});
  ~OffloadProvider() override;
  OffloadProvider(const OffloadProvider&) = delete;
  OffloadProvider& operator=(const OffloadProvider&) = delete;

  // The slot count the constructor would take, or its Error (no device needed).
  static int plan_slots(uint64_t arena_capacity, const ExpertHostStore& store, uint64_t slot_budget_bytes,
                        const OffloadOptions& opt);
  // Minimum slot budget: top_k slots.
  static uint64_t min_slot_budget(const ExpertHostStore& store);
  static uint64_t slot_stride(const ExpertHostStore& store);  // slot bytes rounded to the arena alignment

  std::string describe() const override;  // "pinned, lru, 57 slots x 336.00 MiB"
  void acquire(int step, int layer, const int32_t* ids, int n_ids, ExpertWeights* out, void* stream) override;
  // acquire() where the experts flagged in `host` ((n_experts), or empty) that are not
  // resident are left to the host (ExpertCache::access_layer): no load, out[e] empty.
  void acquire_masked(int step, int layer, const int32_t* ids, int n_ids, ExpertWeights* out, void* stream,
                      std::span<const char> host);
  // Loads issued whose copies have not finished yet (event queries, no wait).
  int loads_in_flight() const;
  bool wants_prediction() const override;
  void prefetch(int step, int layer, const int32_t* ids, int n_ids) override;
  const profiler::ExpertCounters* counters() const override { return counters_; }

  void warm_up(void* stream);             // loads the policy's warm set (once)
  void release(int layer, void* stream) override;  // records done[layer] on the compute stream
  void sync_counters() override { collect_counters(true); }
  // Reads finished loads' and stalls' timings into the counters; wait: block until all are.
  void collect_counters(bool wait);
  void finish();                          // ExpertCache::finish + collect_counters(true)

  const ExpertCache& cache() const { return cache_; }
  const CacheCounters& cache_counters() const { return cache_.counters(); }
  const OffloadStats& stats() const { return stats_; }
  int n_slots() const { return n_slots_; }
  uint64_t slot_bytes() const { return store_.expert_bytes(); }
  const void* slot_ptr(int slot) const;
  cudaStream_t copy_stream() const { return copy_; }
  const ExpertHostStore& store() const { return store_; }

 private:
  enum class LoadKind { demand, prefetch, warm };
  struct PendingLoad {
    int layer;
    LoadKind kind;
    cudaEvent_t start, end;
    int64_t read_ns;
  };
  struct PendingStall {
    int layer;
    cudaEvent_t wanted, got;
  };
  void issue_load(ExpertKey key, int slot, LoadKind kind);
  cudaEvent_t timing_event();
  void mark_released(cudaStream_t cs);
  void destroy_handles() noexcept;

  DeviceArena& arena_;
  const ExpertHostStore& store_;
  OffloadOptions opt_;
  int n_slots_ = 0;
  uint64_t stride_ = 0;
  uint8_t* slots_ = nullptr;
  ExpertCache cache_;
  profiler::ExpertCounters own_counters_;
  profiler::ExpertCounters* counters_ = nullptr;
  cudaStream_t copy_ = nullptr;
  std::vector<cudaEvent_t> loaded_;        // (slots)
  std::vector<char> loaded_recorded_;      // (slots)
  std::vector<int> last_use_layer_;        // (slots) layer whose compute last read the slot, -1 none
  std::vector<cudaEvent_t> layer_done_;    // (layers)
  std::vector<cudaEvent_t> timing_pool_;   // free timing events
  std::deque<PendingLoad> pending_loads_;
  std::deque<PendingStall> pending_stalls_;
  // disk tier: two page-locked staging buffers, each free again when its event completes
  void* staging_alloc_[2] = {nullptr, nullptr};  // what cudaHostAlloc returned
  void* staging_[2] = {nullptr, nullptr};        // its first kStagingAlign boundary
  cudaEvent_t staging_free_[2] = {nullptr, nullptr};
  bool staging_used_[2] = {false, false};
  int next_staging_ = 0;
  // the layer whose done[] is not recorded yet (the model did not call release)
  int unreleased_layer_ = -1;
  bool warmed_ = false;
  std::vector<AccessResult> res_, pre_;
  std::vector<char> seen_;
  OffloadStats stats_;
};

}  // namespace moebench::cuda
