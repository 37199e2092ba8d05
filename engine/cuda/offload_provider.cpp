// offload_provider.cpp: see offload_provider.h. Host C++ (no kernels).
#include "engine/cuda/offload_provider.h"

#include <algorithm>
#include <chrono>

#include "engine/cuda/check.cuh"
#include "engine/device_plan.h"
#include "common/error.h"
#include "common/clock.h"
#include "common/units.h"
#include "profiler/nvtx.h"

namespace moebench::cuda {

namespace {

using profiler::now_ns;

// cudaEventQuery: true when complete, false when not yet; throws on a real error.
bool event_done(cudaEvent_t e) {
  const cudaError_t r = cudaEventQuery(e);
  if (r == cudaSuccess) return true;
  if (r == cudaErrorNotReady) return false;
  throw_cuda(r, "cudaEventQuery", __FILE__, __LINE__);
}

}  // namespace

int OffloadProvider::plan_slots(uint64_t arena_capacity, const ExpertHostStore& store, uint64_t budget,
                                const OffloadOptions& opt) {
  const uint64_t rest = arena_capacity > budget ? arena_capacity - budget : 0;
  return plan_expert_slots(OffloadProvider::slot_stride(store), store.top_k(), store.n_layers() * store.n_experts(),
                           budget, rest, opt.slots);
}

namespace {

ExpertCache make_cache(const ExpertHostStore& store, int slots, const OffloadOptions& opt) {
  CacheShape shape{store.n_layers(), store.n_experts(), store.top_k(), slots};
  PolicyContext ctx{shape, opt.trace, opt.static_usage};
  return ExpertCache(shape, make_cache_policy(opt.policy, ctx));
}

}  // namespace

HostAllocator pinned_host_allocator() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  HostAllocator a;
  a.name = "cudaHostAlloc (page-locked)";
  a.page_locked = true;
  a.alloc = [dev](size_t bytes) -> void* {
    CUDA_CHECK(cudaSetDevice(dev));
    void* p = nullptr;
    const cudaError_t e = cudaHostAlloc(&p, std::max<size_t>(bytes, 1), cudaHostAllocPortable);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      fail("cudaHostAlloc of {} failed: {} ({}); the host may not have that much memory to page-lock",
           format_bytes(bytes), cudaGetErrorName(e), cudaGetErrorString(e));
    }
    return p;
  };
  a.free = [](void* p) { (void)cudaFreeHost(p); };
  return a;
}

OffloadOptions OffloadOptions::from_settings(const EngineSettings& s) {
  OffloadOptions o;
  o.policy = s.cache_policy;
  o.slots = s.cache_slots;
  return o;
}

uint64_t OffloadProvider::slot_stride(const ExpertHostStore& store) {
  const uint64_t a = ArenaBook::kDefaultAlignment;
  return (store.expert_bytes() + a - 1) / a * a;
}

uint64_t OffloadProvider::min_slot_budget(const ExpertHostStore& store) {
  return slot_stride(store) * static_cast<uint64_t>(store.top_k());
}

OffloadProvider::OffloadProvider(DeviceArena& arena, const ExpertHostStore& store, uint64_t slot_budget_bytes,
                                 OffloadOptions opt)
    : arena_(arena),
      store_(store),
      opt_(std::move(opt)),
      n_slots_(plan_slots(arena.capacity(), store, slot_budget_bytes, opt_)),
      stride_(slot_stride(store)),
      cache_(make_cache(store, n_slots_, opt_)) {
  const int L = store.n_layers(), E = store.n_experts();
  counters_ = opt_.counters ? opt_.counters : &own_counters_;
  if (counters_->n_layers() != L || counters_->n_experts() != E) counters_->configure(L, E);
  slots_ = static_cast<uint8_t*>(arena_.alloc(stride_ * static_cast<uint64_t>(n_slots_),
                                              fmt::format("expert slots ({} x {})", n_slots_, format_bytes(stride_))));
  try {
    CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    loaded_.assign(n_slots_, nullptr);
    for (auto& e : loaded_) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    loaded_recorded_.assign(n_slots_, 0);
    last_use_layer_.assign(n_slots_, -1);
    layer_done_.assign(L, nullptr);
    for (auto& e : layer_done_) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    if (store.tier() == HostTier::disk) {
      for (int b = 0; b < 2; ++b) {
        // O_DIRECT reads need kStagingAlign-aligned buffers; cudaHostAlloc aligns small
        // allocations less than that, so take the slack and start at the next boundary.
        constexpr uintptr_t a = ExpertHostStore::kStagingAlign;
        CUDA_CHECK(cudaHostAlloc(&staging_alloc_[b], store.staging_bytes() + a, cudaHostAllocPortable));
        staging_[b] = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(staging_alloc_[b]) + a - 1) / a * a);
        CUDA_CHECK(cudaEventCreateWithFlags(&staging_free_[b], cudaEventDisableTiming));
      }
    }
    seen_.assign(E, 0);
  } catch (...) {
    destroy_handles();  // the destructor does not run for a throwing constructor
    throw;
  }
}

OffloadProvider::~OffloadProvider() { destroy_handles(); }

void OffloadProvider::destroy_handles() noexcept {
  // No throws: errors here are sticky ones already reported elsewhere.
  if (copy_) cudaStreamSynchronize(copy_);
  for (auto& p : pending_loads_) {
    cudaEventDestroy(p.start);
    cudaEventDestroy(p.end);
  }
  pending_loads_.clear();
  for (auto& p : pending_stalls_) {
    cudaEventDestroy(p.wanted);
    cudaEventDestroy(p.got);
  }
  pending_stalls_.clear();
  for (auto e : timing_pool_) cudaEventDestroy(e);
  timing_pool_.clear();
  for (auto e : loaded_)
    if (e) cudaEventDestroy(e);
  loaded_.clear();
  for (auto e : layer_done_)
    if (e) cudaEventDestroy(e);
  layer_done_.clear();
  for (int b = 0; b < 2; ++b) {
    if (staging_free_[b]) cudaEventDestroy(staging_free_[b]);
    if (staging_alloc_[b]) cudaFreeHost(staging_alloc_[b]);
    staging_alloc_[b] = nullptr;
    staging_free_[b] = nullptr;
    staging_[b] = nullptr;
  }
  if (copy_) cudaStreamDestroy(copy_);
  copy_ = nullptr;
  if (slots_) {
    try {
      arena_.free(slots_);
    } catch (...) {
    }
    slots_ = nullptr;
  }
}

std::string OffloadProvider::describe() const {
  return fmt::format("{}, {}, {} slots x {} ({}); {}", host_tier_name(store_.tier()), opt_.policy, n_slots_,
                     format_bytes(store_.expert_bytes()), format_bytes(stride_ * n_slots_), store_.describe());
}

bool OffloadProvider::wants_prediction() const { return cache_.speculative(); }

const void* OffloadProvider::slot_ptr(int slot) const {
  if (slot < 0 || slot >= n_slots_) fail("offload provider: slot {} out of range [0, {})", slot, n_slots_);
  return slots_ + stride_ * static_cast<uint64_t>(slot);
}

cudaEvent_t OffloadProvider::timing_event() {
  if (!timing_pool_.empty()) {
    cudaEvent_t e = timing_pool_.back();
    timing_pool_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  CUDA_CHECK(cudaEventCreate(&e));
  return e;
}

void OffloadProvider::issue_load(ExpertKey key, int slot, LoadKind kind) {
  profiler::NvtxRange range(profiler::RangeKind::expert_load, key.expert);
  uint8_t* dst = slots_ + stride_ * static_cast<uint64_t>(slot);
  // The slot's previous occupant: the copy waits until the compute that read it is done.
  if (last_use_layer_[slot] >= 0) CUDA_CHECK(cudaStreamWaitEvent(copy_, layer_done_[last_use_layer_[slot]], 0));
  last_use_layer_[slot] = -1;
  const ExpertLayout& L = store_.layout();
  PendingLoad p{key.layer, kind, timing_event(), timing_event(), 0};
  if (store_.tier() == HostTier::pinned) {
    CUDA_CHECK(cudaEventRecord(p.start, copy_));
    CUDA_CHECK(cudaMemcpyAsync(dst, store_.expert(key.layer, key.expert), store_.expert_bytes(),
                               cudaMemcpyHostToDevice, copy_));
    CUDA_CHECK(cudaEventRecord(p.end, copy_));
  } else {
    const int b = next_staging_;
    next_staging_ ^= 1;
    // The staging buffer is reused once its previous copy has left it (double buffering:
    // this read overlaps the other buffer's copy).
    if (staging_used_[b]) CUDA_CHECK(cudaEventSynchronize(staging_free_[b]));
    const int64_t t0 = now_ns();
    const StagedExpert st = store_.read_expert(key.layer, key.expert, staging_[b]);
    p.read_ns = now_ns() - t0;
    const uint8_t* src = static_cast<const uint8_t*>(staging_[b]);
    CUDA_CHECK(cudaEventRecord(p.start, copy_));
    for (int m = 0; m < 3; ++m)  // each matrix's parts (values, scales, zero points) to their place in the slot
      for (int q = 0; q < L.n_parts; ++q)
        CUDA_CHECK(cudaMemcpyAsync(dst + L.offset[m][q], src + st.part[m][q], L.bytes[m][q], cudaMemcpyHostToDevice,
                                   copy_));
    CUDA_CHECK(cudaEventRecord(p.end, copy_));
    CUDA_CHECK(cudaEventRecord(staging_free_[b], copy_));
    staging_used_[b] = true;
  }
  CUDA_CHECK(cudaEventRecord(loaded_[slot], copy_));
  loaded_recorded_[slot] = 1;
  pending_loads_.push_back(p);
  switch (kind) {
    case LoadKind::demand: ++stats_.demand_loads; break;
    case LoadKind::prefetch: ++stats_.prefetch_loads; break;
    case LoadKind::warm: ++stats_.warm_loads; break;
  }
}

void OffloadProvider::warm_up(void* stream) {
  (void)stream;
  if (warmed_) return;
  warmed_ = true;
  for (const AccessResult& r : cache_.warm_up()) issue_load(r.key, r.slot, LoadKind::warm);
}

void OffloadProvider::mark_released(cudaStream_t cs) {
  if (unreleased_layer_ < 0) return;
  CUDA_CHECK(cudaEventRecord(layer_done_[unreleased_layer_], cs));
  unreleased_layer_ = -1;
}

void OffloadProvider::release(int layer, void* stream) {
  if (layer != unreleased_layer_) return;  // already recorded (or nothing acquired for it)
  mark_released(static_cast<cudaStream_t>(stream));
}

void OffloadProvider::acquire(int step, int layer, const int32_t* ids, int n_ids, ExpertWeights* out, void* stream) {
  acquire_masked(step, layer, ids, n_ids, out, stream, {});
}

int OffloadProvider::loads_in_flight() const {
  int n = 0;
  for (auto it = pending_loads_.rbegin(); it != pending_loads_.rend(); ++it) {
    if (event_done(it->end)) break;  // one stream: the earlier ones are done too
    ++n;
  }
  return n;
}

void OffloadProvider::acquire_masked(int step, int layer, const int32_t* ids, int n_ids, ExpertWeights* out,
                                     void* stream, std::span<const char> host) {
  const cudaStream_t cs = static_cast<cudaStream_t>(stream);
  const int E = store_.n_experts();
  if (layer < 0 || layer >= store_.n_layers())
    fail("offload provider: layer {} out of range [0, {})", layer, store_.n_layers());
  if (!warmed_) warm_up(stream);
  collect_counters(false);
  // The layer acquired before this one has had its expert compute enqueued on cs by now.
  mark_released(cs);

  // One call's experts must all fit at once (the model computes after acquire returns).
  int distinct = 0;
  std::fill(seen_.begin(), seen_.end(), 0);
  for (int i = 0; i < n_ids; ++i) {
    const int32_t e = ids[i];
    if (e < 0 || e >= E) fail("offload provider: expert id {} at layer {} out of range [0, {})", e, layer, E);
    if (!seen_[e] && (host.empty() || !host[e] || cache_.slot_of(ExpertKey{layer, e}) >= 0)) seen_[e] = 1, ++distinct;
  }
  if (distinct > n_slots_)
    fail("offload provider: layer {} of step {} needs {} distinct experts at once but the cache has {} slots: "
         "split the prefill chunk (max_num_batched_tokens) or give at least {} slots",
         layer, step, distinct, n_slots_, distinct);

  cache_.access_layer(step, layer, std::span<const int32_t>(ids, static_cast<size_t>(n_ids)), res_, host);
  // Experts left to the host are misses that load nothing (their work is counted by the
  // host: ExpertCounters::host_route, host_work).
  for (const AccessResult& r : res_)
    if (r.host) counters_->route(layer, r.key.expert, false);
  std::erase_if(res_, [](const AccessResult& r) { return r.host; });
  {
    profiler::NvtxRange range(profiler::RangeKind::expert_load, layer, "expert_load issue");
    for (const AccessResult& r : res_) {
      counters_->route(layer, r.key.expert, r.hit);
      if (!r.hit) issue_load(r.key, r.slot, LoadKind::demand);
    }
  }
  // The compute stream waits only on the loads of the experts this layer needs.
  bool in_flight = false;
  for (const AccessResult& r : res_)
    if (loaded_recorded_[r.slot] && !event_done(loaded_[r.slot])) in_flight = true;
  PendingStall st{layer, nullptr, nullptr};
  if (in_flight) {
    st.wanted = timing_event();
    CUDA_CHECK(cudaEventRecord(st.wanted, cs));
  }
  for (int e = 0; e < E; ++e) out[e] = ExpertWeights{};
  const ExpertLayout& L = store_.layout();
  for (const AccessResult& r : res_) {
    if (loaded_recorded_[r.slot]) CUDA_CHECK(cudaStreamWaitEvent(cs, loaded_[r.slot], 0));
    const uint8_t* p = slots_ + stride_ * static_cast<uint64_t>(r.slot);
    out[r.key.expert] = ExpertWeights{p + L.matrix_offset(0), p + L.matrix_offset(1), p + L.matrix_offset(2)};
    last_use_layer_[r.slot] = layer;
  }
  if (in_flight) {
    st.got = timing_event();
    CUDA_CHECK(cudaEventRecord(st.got, cs));
    pending_stalls_.push_back(st);
  }
  unreleased_layer_ = layer;
}

void OffloadProvider::prefetch(int step, int layer, const int32_t* ids, int n_ids) {
  if (!cache_.speculative()) return;
  if (layer < 0 || layer >= store_.n_layers()) return;  // nothing after the last layer
  cache_.prefetch(step, layer, std::span<const int32_t>(ids, static_cast<size_t>(n_ids)), pre_);
  for (const AccessResult& r : pre_) issue_load(r.key, r.slot, LoadKind::prefetch);
}

void OffloadProvider::collect_counters(bool wait) {
  while (!pending_loads_.empty()) {
    PendingLoad& p = pending_loads_.front();
    if (wait)
      CUDA_CHECK(cudaEventSynchronize(p.end));
    else if (!event_done(p.end))
      break;  // one stream: later loads are not done either
    const int64_t copy = event_elapsed_ns(p.start, p.end);
    const int64_t bytes = static_cast<int64_t>(store_.expert_bytes());
    stats_.bytes += bytes;
    stats_.copy_ns += copy;
    stats_.read_ns += p.read_ns;
    if (p.kind != LoadKind::warm) counters_->load(p.layer, bytes, copy + p.read_ns);
    timing_pool_.push_back(p.start);
    timing_pool_.push_back(p.end);
    pending_loads_.pop_front();
  }
  while (!pending_stalls_.empty()) {
    PendingStall& s = pending_stalls_.front();
    if (wait)
      CUDA_CHECK(cudaEventSynchronize(s.got));
    else if (!event_done(s.got))
      break;
    const int64_t ns = event_elapsed_ns(s.wanted, s.got);
    stats_.stall_ns += ns;
    ++stats_.stalls;
    counters_->stall(s.layer, ns);
    timing_pool_.push_back(s.wanted);
    timing_pool_.push_back(s.got);
    pending_stalls_.pop_front();
  }
}

void OffloadProvider::finish() {
  cache_.finish();
  collect_counters(true);
}

}  // namespace moebench::cuda
