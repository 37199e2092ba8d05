// host_experts.cpp: see host_experts.h. Host C++ (no kernels).
#include "engine/cuda/host_experts.h"

#include <fmt/format.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>

#include "common/clock.h"
#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/offload_provider.h"
#include "engine/host_kernel_rate.h"
#include "engine/dtype.h"
#include "engine/expert_part.h"
#include "profiler/counters.h"
#include "profiler/cpu_trace.h"

namespace moebench::cuda {

namespace {
// Until a copy has finished in this run, the copy link's rate is taken as this (GB/s);
// prefill's copies and the warm-up replace it before the first decode step.
constexpr double kUnmeasuredCopyGbps = 25.0;

// The split scratch: the dense part's three matrices (bf16: each at its whole size,
// 256-byte aligned; quantised formats: the whole expert's layout, each part at its
// offset there: expert_part.h), then the pointer table (bf16: w1, w3, w2; quantised: the
// nine rows of quant_decode's table, one expert each), then the GPU part's output rows.
uint64_t matrix_bytes(const ExpertHostStore& s) {
  return round256(static_cast<uint64_t>(s.hidden()) * static_cast<uint64_t>(s.inter()) * 2);
}
uint64_t part_region_bytes(const ExpertHostStore& s) {
  return s.format() == QuantFormat::bf16 ? 3 * matrix_bytes(s) : round256(s.layout().total_bytes);
}

// A 0/1 switch in the environment, on when unset; any other value fails naming both.
bool env_switch(const char* name, const char* on, const char* off) {
  const std::string v = env_str(name);
  if (v.empty() || v == "1") return true;
  if (v == "0") return false;
  fail("{}={}: expected 1 ({}, the default) or 0 ({})", name, v, on, off);
}

// MOEBENCH_SPLIT_QUANT: 1 (default) quantised experts split their rows between the links
// like bf16 ones; 0: whole experts per link for the quantised formats (as before), for
// measuring one build both ways.
bool split_quantised() {
  return env_switch("MOEBENCH_SPLIT_QUANT", "quantised experts split their rows between the links",
                    "whole experts per link for the quantised formats");
}

// The setting hybrid_split (host, all, balance, off), unless MOEBENCH_HYBRID_SPLIT is set: 1 a
// host expert may give parts to the link; all: copies may give way to parts too
// (hybrid_split.h split_copies); balance: the link's share of each layer's misses set by
// feedback (hybrid_split.h BalanceShare), nothing copied ahead; 0 never (whole experts per
// link); half (tests) every decode layer with a miss splits its last one in half and copies
// the others, whatever the rates.
enum class SplitMode { off, model, all, balance, half };
SplitMode split_mode(const std::string& setting) {
  const std::string v = env_str("MOEBENCH_HYBRID_SPLIT");
  if (v.empty()) {
    if (setting == "all") return SplitMode::all;
    if (setting == "host") return SplitMode::model;
    if (setting == "balance") return SplitMode::balance;
    if (setting == "off") return SplitMode::off;
    fail("setting hybrid_split={}: expected host, all, balance or off", setting);
  }
  if (v == "1") return SplitMode::model;
  if (v == "0") return SplitMode::off;
  if (v == "all") return SplitMode::all;
  if (v == "half") return SplitMode::half;
  if (v == "balance") return SplitMode::balance;
  fail("MOEBENCH_HYBRID_SPLIT={}: expected 1 (a host expert may give parts of its rows to the link, the default), "
       "all (copies may give way to parts too), balance (the link's share set by feedback), 0 (whole experts per "
       "link) or half (tests: split the last miss of every layer in half)",
       v);
}

// MOEBENCH_HYBRID_JOINT: 1 (default) the split and the copies ahead use the joint model
// (each link alone and both at once, measured at load) where it was measured; 0: each
// link at the rate measured in the run, whatever the other does (as before).
bool joint_model() {
  return env_switch("MOEBENCH_HYBRID_JOINT", "the split uses both links' joint rates measured at load",
                    "each link's rate measured in the run");
}

}  // namespace

uint64_t HostExperts::split_scratch_bytes(ExpertExec exec, const ExpertHostStore& store, const std::string& split) {
  if (split_mode(split) == SplitMode::off || exec != ExpertExec::hybrid || split_units_for(store.inter()) <= 1)
    return 0;
  // int4 and fp8 cut only at their 128-row scale groups (expert_part.h)
  if (store.format() != QuantFormat::bf16 &&
      (!split_quantised() || !expert_part_cuts_at(store.format(), store.inter() / split_units_for(store.inter()))))
    return 0;
  return part_region_bytes(store) + 256 +
         round256(static_cast<uint64_t>(kHostMixMaxGpuPairs) * static_cast<uint64_t>(store.hidden()) * sizeof(float));
}

HostExperts::HostExperts(const ExpertHostStore& store, OffloadProvider& provider, ExpertExec exec, int cpu_moe_layers,
                         profiler::ExpertCounters* counters, profiler::CpuTrace& trace, DeviceArena* arena,
                         const std::string& split)
    : store_(store),
      provider_(provider),
      exec_(exec),
      cpu_layers_(std::min(cpu_moe_layers, store.n_layers())),
      counters_(counters),
      trace_(trace),
      isa_(cpu::cpu_isa_from_env()) {
  if (const std::string pin = env_str("MOEBENCH_HOST_PIN"); !pin.empty()) {
    if (pin != "0" && pin != "1") fail("MOEBENCH_HOST_PIN={}: expected 0 (host expert threads unpinned) or 1", pin);
    pin_ = pin == "1";
  }
  if (store.tier() != HostTier::pinned)
    fail("expert_exec={} / cpu_moe_layers={}: the host computes experts from the pinned tier (expert_tier=pinned), "
         "not {}",
         expert_exec_name(exec), cpu_moe_layers, host_tier_name(store.tier()));
  mask_.assign(static_cast<size_t>(store.n_experts()), 0);
  worker_ = std::thread([this] {
    trace_.name_this_thread("host experts");
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return has_job_ || stop_; });
      if (stop_) return;
      has_job_ = false;
      lock.unlock();
      try {
        job_();
      } catch (...) {
        job_error_ = std::current_exception();
      }
      lock.lock();
      job_done_ = true;
      cv_.notify_all();
    }
  });
  // The host link's rate: measured once per run and store on this worker's team, with
  // the device idle (the provider's warm-up copies read host memory too).
  try {
    CUDA_CHECK(cudaDeviceSynchronize());
    run_on_worker([this] {
      if (pin_) pin_team();
      measured_ = host_kernel_rate(store_, isa_);
    });
  } catch (...) {
    stop_worker();  // no destructor runs for a constructor that throws
    throw;
  }
  host_rate_ = MeasuredRate(measured_.best_gbps);
  if (const uint64_t bytes = split_scratch_bytes(exec, store, split); bytes > 0 && arena) {
    try {
      split_scratch_ = static_cast<uint8_t*>(arena->alloc(bytes, "split expert scratch"));
      const uint64_t mb = matrix_bytes(store), region = part_region_bytes(store);
      split_table_ = reinterpret_cast<const void**>(split_scratch_ + region);
      split_y_ = reinterpret_cast<float*>(split_scratch_ + region + 256);
      if (store.format() == QuantFormat::bf16) {
        const void* table[3] = {split_scratch_, split_scratch_ + mb, split_scratch_ + 2 * mb};
        CUDA_CHECK(cudaMemcpy(split_table_, table, sizeof table, cudaMemcpyHostToDevice));
      } else {  // [3 m + p]: matrix m's part p (values, scales, zero points; null where the format has none)
        const ExpertLayout& L = store.layout();
        const void* table[9] = {};
        for (int m = 0; m < 3; ++m)
          for (int p = 0; p < L.n_parts; ++p) table[3 * m + p] = split_scratch_ + L.offset[m][p];
        CUDA_CHECK(cudaMemcpy(split_table_, table, sizeof table, cudaMemcpyHostToDevice));
      }
      CUDA_CHECK(cudaEventCreateWithFlags(&scratch_free_, cudaEventDisableTiming));
      split_units_ = split_units_for(store.inter());
      split_half_ = split_mode(split) == SplitMode::half;
      split_copies_ = split_mode(split) == SplitMode::all;
      joint_ = joint_model();
      measure_both_links();
      if (split_mode(split) == SplitMode::balance) {
        balance_start_ = balance_initial_share(rates());
        balance_.emplace(split_units_, balance_start_);
      }
    } catch (...) {
      destroy_split();
      stop_worker();
      throw;
    }
  }
}

void HostExperts::measure_both_links() {
  // Into the scratch (it holds one expert): first kWakeCopies copies untimed (the link and
  // the copy engine have been idle through the host kernel's measurement), then enough
  // copies back to back to outlast a few dozen host experts, with the host kernel
  // measuring cold experts beside them until the last copy lands: both read host memory at
  // once over the same time, as in decode; then kSoloCopies copies alone, each timed (the
  // link's solo rate: the best of them).
  cudaStream_t cs = provider_.copy_stream();
  constexpr int kWakeCopies = 2, kSoloCopies = 4;
  std::vector<cudaEvent_t> ev(kSoloCopies + 3, nullptr);  // solo: kSoloCopies + 1; both: 2
  for (cudaEvent_t& e : ev) CUDA_CHECK(cudaEventCreate(&e));
  try {
    constexpr int64_t kJointCopyBytes = 4ll << 30;
    const size_t bytes = std::min<size_t>(store_.expert_bytes(), part_region_bytes(store_));  // what the scratch holds
    const int total = store_.n_layers() * store_.n_experts();
    const int n_joint = std::clamp(static_cast<int>((kJointCopyBytes + static_cast<int64_t>(bytes) - 1) /
                                                    static_cast<int64_t>(bytes)),
                                   8, std::max(8, total / 2));
    const std::vector<ExpertKey> copied =
        both_links_copy_experts(store_.n_layers(), store_.n_experts(), std::max(n_joint, kWakeCopies + kSoloCopies));
    auto copy_one = [&](int i) {
      CUDA_CHECK(cudaMemcpyAsync(split_scratch_, store_.expert(copied[i].layer, copied[i].expert), bytes,
                                 cudaMemcpyHostToDevice, cs));
    };
    for (int i = 0; i < kWakeCopies; ++i) copy_one(i);
    cudaEvent_t both_start = ev[kSoloCopies + 1], both_end = ev[kSoloCopies + 2];
    CUDA_CHECK(cudaEventRecord(both_start, cs));
    for (int i = 0; i < n_joint; ++i) copy_one(i);
    CUDA_CHECK(cudaEventRecord(both_end, cs));
    HostReadSum host;
    run_on_worker([&] {
      host = measure_host_kernel_while(store_, isa_, copied, [&] { return cudaEventQuery(both_end) == cudaErrorNotReady; });
    });
    CUDA_CHECK(cudaEventSynchronize(both_end));
    both_copy_gbps_ = static_cast<double>(static_cast<int64_t>(n_joint) * static_cast<int64_t>(bytes)) /
                      static_cast<double>(std::max<int64_t>(1, event_elapsed_ns(both_start, both_end)));
    both_host_gbps_ = host.gbps();
    both_samples_ = host.samples;
    both_overlapped_ = host.samples > 0;
    // The solo copies right after the joint ones, the link still busy: after an idle spell
    // the first copies ran at half the rate (27.7 GB/s, three in a row, on the 16-core
    // H200 host), which is the link waking, not its rate alone.
    CUDA_CHECK(cudaEventRecord(ev[0], cs));
    for (int i = 0; i < kSoloCopies; ++i) {
      copy_one(kWakeCopies + i);
      CUDA_CHECK(cudaEventRecord(ev[i + 1], cs));
    }
    CUDA_CHECK(cudaEventSynchronize(ev[kSoloCopies]));
    solo_copy_samples_gbps_.clear();
    for (int i = 0; i < kSoloCopies; ++i)
      solo_copy_samples_gbps_.push_back(static_cast<double>(bytes) /
                                        static_cast<double>(std::max<int64_t>(1, event_elapsed_ns(ev[i], ev[i + 1]))));
    solo_copy_gbps_ = *std::max_element(solo_copy_samples_gbps_.begin(), solo_copy_samples_gbps_.end());
  } catch (...) {
    for (cudaEvent_t e : ev) cudaEventDestroy(e);
    throw;
  }
  for (cudaEvent_t e : ev) cudaEventDestroy(e);
  if (both_overlapped_) {
    measured_.joint_copy_gbps = both_copy_gbps_;
    measured_.joint_host_gbps = both_host_gbps_;
    measured_.solo_copy_gbps = solo_copy_gbps_;
  }
}

HostExperts::~HostExperts() {
  if (split_rate_.ns() > 0) try {  // the link's parts alone (pitched copies: their own rate)
      log::info("host experts: the split experts' copied parts: {:.1f} MiB at {:.1f} GB/s",
                static_cast<double>(split_rate_.bytes()) / (1 << 20), split_rate_.gbps());
    } catch (...) {
    }
  if (balance_) try {  // where the feedback left the link's share (the simulator's is comparable)
      log::info("host experts: hybrid_split=balance left the link {} of 1 miss's {} parts, {} of 2 misses' {}",
                balance_->link_units(1), split_units_, balance_->link_units(2), 2 * split_units_);
    } catch (...) {
    }
  destroy_split();
  stop_worker();
}

void HostExperts::destroy_split() noexcept {
  // No stream sync: the model may have destroyed the provider (and its copy stream)
  // first; an event destroyed with work pending is released once that work completes.
  for (auto& c : split_pending_) split_events_.push_back(c.start), split_events_.push_back(c.end);
  split_pending_.clear();
  for (cudaEvent_t e : split_events_) cudaEventDestroy(e);
  split_events_.clear();
  if (scratch_free_) cudaEventDestroy(scratch_free_);
  scratch_free_ = nullptr;
}

void HostExperts::stop_worker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void HostExperts::run_on_worker(const std::function<void()>& job) {
  std::unique_lock<std::mutex> lock(mu_);
  job_ = job;
  job_error_ = nullptr;
  job_done_ = false;
  has_job_ = true;
  cv_.notify_all();
  cv_.wait(lock, [this] { return job_done_; });
  job_ = nullptr;
  if (job_error_) std::rethrow_exception(job_error_);
}

void HostExperts::pin_team() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  if (cpus.empty()) return;
  int pinned = 0;
#pragma omp parallel reduction(+ : pinned)
  {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpus[static_cast<size_t>(omp_get_thread_num()) % cpus.size()], &one);
    pinned += pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0;
  }
  pinned_threads_ = pinned;
}

HybridRates HostExperts::rates() const {
  const OffloadStats& s = provider_.stats();
  HybridRates r;
  if (joint_ && both_overlapped_) {
    // The joint model: each link's rate alone and both at once, as measured at load (the
    // rates seen in decode mix the two); the fixed cost as measured in the run.
    r.copy_gbps = solo_rate_for_joint(solo_copy_gbps_, both_copy_gbps_);
    // The host alone: its best cold expert (the bound's rate; decode's cpu mode read 95.5
    // GB/s where the median at load was 84.6 and the best 98.8: below it, the model saw
    // almost no slowdown beside copies and copied too much).
    r.host_gbps = measured_.best_gbps;
    r.joint_copy_gbps = both_copy_gbps_;
    r.joint_host_gbps = both_host_gbps_;
    r.expert_bytes = static_cast<int64_t>(store_.expert_bytes());
    r.host_overhead_ns = overhead_n_ > 0 ? overhead_sum_ns_ / overhead_n_ : 0;
    r.split_units = split_units_;
    r.split_copies = split_copies_;
    return learn_ ? learned_.apply(r) : r;
  }
  // whole loads and split parts (pitched copies) together: the rate the link gave this run
  const int64_t copy_bytes = s.bytes + split_rate_.bytes(), copy_ns = s.copy_ns + split_rate_.ns();
  r.copy_gbps = copy_ns > 0 && copy_bytes > 0 ? static_cast<double>(copy_bytes) / static_cast<double>(copy_ns)
                                              : kUnmeasuredCopyGbps;
  r.host_gbps = host_rate_.gbps();
  r.expert_bytes = static_cast<int64_t>(store_.expert_bytes());
  r.host_overhead_ns = overhead_n_ > 0 ? overhead_sum_ns_ / overhead_n_ : 0;
  r.split_units = split_units_;
  r.split_copies = split_copies_;
  return r;
}

int HostExperts::plan(int step, int layer, const int32_t* ids, int pairs, int m) {
  const bool decode = m <= kHostMixMaxGpuPairs;
  collect_split_copies(false);
  provider_.collect_counters(false);
  // The copies that finished since the previous decode layer: beside that layer's host
  // work if it had any (hybrid_rates=decode learns the joint copy rate from them).
  const OffloadStats& st = provider_.stats();
  const int64_t copy_bytes = st.bytes + split_rate_.bytes(), copy_ns = st.copy_ns + split_rate_.ns();
  if (decode && prev_decode_) {
    learned_.copies(copy_bytes - seen_copy_bytes_, copy_ns - seen_copy_ns_, prev_host_work_);
    if (prev_host_work_ && counters_ && copy_ns > seen_copy_ns_)
      counters_->both_links(layer, copy_bytes - seen_copy_bytes_, copy_ns - seen_copy_ns_, 0, 0);
  }
  seen_copy_bytes_ = copy_bytes;
  seen_copy_ns_ = copy_ns;
  const int n = plan_layer(step, layer, ids, pairs, m);
  prev_decode_ = decode;
  prev_host_work_ = n > 0;
  return n;
}

bool HostExperts::copies_in_flight() const {
  if (provider_.loads_in_flight() > 0) return true;
  return !split_pending_.empty() && cudaEventQuery(split_pending_.back().end) == cudaErrorNotReady;
}

int HostExperts::plan_layer(int step, int layer, const int32_t* ids, int pairs, int m) {
  (void)step;
  plan_ = HybridPlan{};
  balance_misses_ = 0;
  split_expert_ = -1;
  split_rows_ = 0;
  std::fill(mask_.begin(), mask_.end(), 0);
  const std::span<const int32_t> id_span(ids, static_cast<size_t>(pairs));
  distinct_misses(provider_.cache(), layer, id_span, misses_);
  if (misses_.empty()) return 0;
  const bool cpu_layer = layer < cpu_layers_;
  const bool decode = m <= kHostMixMaxGpuPairs;
  if (!cpu_layer && (!decode || exec_ == ExpertExec::gpu)) return 0;
  const HybridRates r = rates();
  provider_.collect_counters(false);
  const int64_t backlog = static_cast<int64_t>(provider_.loads_in_flight()) * copy_ns_per_expert(r);
  const int n_miss = static_cast<int>(misses_.size());
  HybridPlan p = hybrid_plan_for(exec_, cpu_layers_, layer, n_miss, backlog, r);
  if (split_half_ && !cpu_layer) p = HybridPlan{0, r.split_units / 2, r.split_units};
  const bool balanced = balance_ && !cpu_layer && exec_ == ExpertExec::hybrid;
  if (balanced) p = balance_->plan(n_miss);
  if (p.flagged() == 0) return 0;
  mark_host_experts(misses_, p.flagged(), store_.n_experts(), mask_);
  int gpu_pairs = 0;
  for (int q = 0; q < pairs; ++q) gpu_pairs += !mask_[ids[q]];
  if (gpu_pairs > kHostMixMaxGpuPairs) {  // a wide forward of a cpu layer with some experts resident
    std::fill(mask_.begin(), mask_.end(), 0);
    return 0;
  }
  plan_ = p;
  balance_misses_ = balanced ? n_miss : 0;
  if (p.split_parts > 0) {
    split_expert_ = misses_[static_cast<size_t>(n_miss - p.flagged())];
    split_rows_ = static_cast<int64_t>(p.split_parts) * (store_.inter() / p.split_units);
  }
  return p.flagged();
}

void HostExperts::filter_prefetch(int next_layer, std::vector<int32_t>& ids) {
  if (exec_ != ExpertExec::hybrid) return;
  distinct_misses(provider_.cache(), next_layer, ids, misses_);
  if (misses_.empty()) return;
  const HybridRates r = rates();
  const int64_t backlog = static_cast<int64_t>(provider_.loads_in_flight()) * copy_ns_per_expert(r);
  const int k = hybrid_prefetch_count(static_cast<int>(misses_.size()), backlog, plan_, r);
  keep_prefetches(provider_.cache(), next_layer, ids, k, kept_);
  ids.swap(kept_);
}

void HostExperts::issue_split_copy(int layer) {
  if (split_expert_ < 0 || !split_scratch_) fail("host experts: a split copy without a split expert or scratch");
  const cpu::CpuExpert e = host_store_expert(store_, layer, split_expert_);
  const int64_t H = store_.hidden(), I = store_.inter(), a = split_rows_, rows = I - a;
  const uint64_t mb = matrix_bytes(store_);
  cudaStream_t cs = provider_.copy_stream();
  while (split_events_.size() < 2) {  // a start and an end
    cudaEvent_t ev = nullptr;
    CUDA_CHECK(cudaEventCreate(&ev));
    split_events_.push_back(ev);
  }
  const bool quant = store_.format() != QuantFormat::bf16;
  const ExpertPartPlan plan = quant ? expert_part_plan(store_.layout(), H, I, a, I) : ExpertPartPlan{};
  SplitCopy c{layer, quant ? static_cast<int64_t>(plan.bytes) : 3 * rows * H * 2, split_events_.back(), nullptr};
  split_events_.pop_back();
  c.end = split_events_.back();
  split_events_.pop_back();
  CUDA_CHECK(cudaStreamWaitEvent(cs, scratch_free_, 0));  // the previous split's GPU part has read the scratch
  CUDA_CHECK(cudaEventRecord(c.start, cs));
  if (quant) {  // each part of w1 and w3 one run of rows; w2's a block of columns of every row (pitched)
    const auto* src = reinterpret_cast<const uint8_t*>(store_.expert(layer, split_expert_));
    for (const PartCopy& p : plan.copies) {
      if (p.height == 1)
        CUDA_CHECK(cudaMemcpyAsync(split_scratch_ + p.dst, src + p.src, p.width, cudaMemcpyHostToDevice, cs));
      else
        CUDA_CHECK(cudaMemcpy2DAsync(split_scratch_ + p.dst, p.width, src + p.src, p.src_pitch, p.width, p.height,
                                     cudaMemcpyHostToDevice, cs));
    }
    CUDA_CHECK(cudaEventRecord(c.end, cs));
    split_pending_.push_back(c);
    return;
  }
  const size_t rows_bytes = static_cast<size_t>(rows * H * 2);
  CUDA_CHECK(cudaMemcpyAsync(split_scratch_, e.w1.q + 2 * a * H, rows_bytes, cudaMemcpyHostToDevice, cs));
  CUDA_CHECK(cudaMemcpyAsync(split_scratch_ + mb, e.w3.q + 2 * a * H, rows_bytes, cudaMemcpyHostToDevice, cs));
  // w2 (hidden, inter): columns [a, inter) of every row, packed to rows columns
  CUDA_CHECK(cudaMemcpy2DAsync(split_scratch_ + 2 * mb, static_cast<size_t>(rows * 2), e.w2.q + 2 * a,
                               static_cast<size_t>(I * 2), static_cast<size_t>(rows * 2), static_cast<size_t>(H),
                               cudaMemcpyHostToDevice, cs));
  CUDA_CHECK(cudaEventRecord(c.end, cs));
  split_pending_.push_back(c);
}

void HostExperts::wait_split_copy(cudaStream_t compute) {
  if (split_pending_.empty()) fail("host experts: no split copy to wait for");
  CUDA_CHECK(cudaStreamWaitEvent(compute, split_pending_.back().end, 0));
}

void HostExperts::split_done(cudaStream_t compute) { CUDA_CHECK(cudaEventRecord(scratch_free_, compute)); }

void HostExperts::collect_split_copies(bool wait) {
  size_t done = 0;
  for (; done < split_pending_.size(); ++done) {
    SplitCopy& c = split_pending_[done];
    if (wait) CUDA_CHECK(cudaEventSynchronize(c.end));
    const cudaError_t q = cudaEventQuery(c.end);
    if (q == cudaErrorNotReady) break;
    CUDA_CHECK(q);
    const int64_t ns = event_elapsed_ns(c.start, c.end);
    split_rate_.add(c.bytes, ns);
    if (counters_) counters_->part_load(c.layer, c.bytes, ns);
    split_events_.push_back(c.start);
    split_events_.push_back(c.end);
  }
  split_pending_.erase(split_pending_.begin(), split_pending_.begin() + static_cast<std::ptrdiff_t>(done));
}

void HostExperts::sync_counters() { collect_split_copies(true); }

void HostExperts::compute(int layer, const uint16_t* x, int m, const int32_t* ids, int pairs, int k, const int32_t* row,
                          float* y) {
  const int64_t H = store_.hidden(), I = store_.inter();
  xf_.resize(static_cast<size_t>(m) * H);
  for (size_t i = 0; i < xf_.size(); ++i) xf_[i] = bf16_to_f32(x[i]);
  int64_t kernel_ns = 0, bytes = 0;
  const bool copies_at_start = copies_in_flight();
  run_on_worker([&] {
    for (int e = 0; e < store_.n_experts(); ++e) {
      if (!mask_[e]) continue;
      pairs_of_.clear();
      for (int p = 0; p < pairs; ++p)
        if (ids[p] == e) pairs_of_.push_back(p);
      if (pairs_of_.empty()) continue;
      const int n = static_cast<int>(pairs_of_.size());
      profiler::ScopedRange range(trace_, profiler::RangeKind::expert_compute, layer, e,
                                  e == split_expert_ ? "host part of a split expert" : "host expert");
      xin_.resize(static_cast<size_t>(n) * H);
      yout_.resize(static_cast<size_t>(n) * H);
      scratch_.resize(cpu::cpu_expert_scratch_floats(n, I));
      for (int i = 0; i < n; ++i)
        std::copy_n(xf_.data() + static_cast<int64_t>(pairs_of_[i] / k) * H, H, xin_.data() + static_cast<int64_t>(i) * H);
      const bool split = e == split_expert_;
      const cpu::CpuExpert whole = host_store_expert(store_, layer, e);
      const int64_t t0 = profiler::now_ns();
      cpu::cpu_expert_forward(split ? cpu::cpu_expert_rows(whole, 0, split_rows_) : whole, xin_.data(), yout_.data(),
                              scratch_.data(), n, isa_);
      kernel_ns += profiler::now_ns() - t0;
      // a split expert's part: its share of the expert's bytes (rows of w1, w3, columns of w2,
      // with their scales and zero points)
      bytes += !split ? static_cast<int64_t>(store_.expert_bytes())
               : store_.format() == QuantFormat::bf16
                   ? static_cast<int64_t>(store_.expert_bytes()) / I * split_rows_
                   : static_cast<int64_t>(expert_part_plan(store_.layout(), H, I, 0, split_rows_).bytes);
      for (int i = 0; i < n; ++i)
        std::copy_n(yout_.data() + static_cast<int64_t>(i) * H, H, y + static_cast<int64_t>(row[pairs_of_[i]]) * H);
      if (counters_) counters_->host_route(layer, e);
    }
  });
  last_kernel_ns_ = kernel_ns;
  host_rate_.add(bytes, kernel_ns);
  if (m <= kHostMixMaxGpuPairs) {
    const bool copies_at_end = copies_in_flight();
    // balance: with nothing copied ahead, what is in flight now is this layer's share
    if (balance_ && balance_misses_ > 0) balance_->observe(balance_misses_, copies_at_end);
    learned_.host(bytes, kernel_ns, copies_at_start, copies_at_end);
    if (copies_at_start && copies_at_end && counters_) counters_->both_links(layer, 0, 0, bytes, kernel_ns);
  }
  if (counters_) counters_->host_work(layer, bytes, kernel_ns);
}

void HostExperts::note_overhead(int layer, int64_t ns) {
  ns = std::max<int64_t>(0, ns);
  overhead_sum_ns_ += ns;
  ++overhead_n_;
  if (counters_) counters_->host_overhead(layer, ns);
}

std::string HostExperts::describe() const {
  const HybridRates r = rates();
  const profiler::HostKernelRate& k = measured_;
  const bool copied = provider_.stats().copy_ns > 0 || split_rate_.ns() > 0;
  return fmt::format("expert_exec {}, {} cpu layer(s), host kernel {} ({} threads, {} pinned): best {:.1f} GB/s of {} "
                     "{} experts (median {:.1f}, worst {:.1f}), {} {:.1f} GB/s; copies {:.1f} GB/s{}; {}",
                     expert_exec_name(exec_), cpu_layers_, cpu::cpu_isa_name(isa_), k.threads, pinned_threads_,
                     k.best_gbps, k.samples, k.cold ? "cold" : "cache-resident", k.median_gbps, k.worst_gbps,
                     host_rate_.ns() > 0 ? "measured in decode" : "the split's rate until the host computes:",
                     r.host_gbps, r.copy_gbps, copied ? "" : " (assumed until a copy has finished)",
                     split_units_ > 1
                         ? fmt::format("a miss may split its rows between the links ({} parts of {} rows{}); copies "
                                       "alone {:.1f} GB/s (best of {:.1f}); both links at once: copies {:.1f} GB/s beside the host "
                                       "kernel's {:.1f} GB/s ({} experts){}; the split's model: {}{}",
                                       split_units_, store_.inter() / split_units_,
                                       balance_ ? fmt::format(", the link's share by feedback from {:.2f} of a layer's "
                                                              "parts, nothing copied ahead (hybrid_split=balance)",
                                                              balance_start_)
                                       : split_copies_ ? ", copies too"
                                                       : ", host experts only",
                                       solo_copy_gbps_,
                                       fmt::join(solo_copy_samples_gbps_, " "),
                                       both_copy_gbps_, both_host_gbps_, both_samples_,
                                       both_overlapped_ ? "" : " (no host expert finished before the copies)",
                                       joint_ && both_overlapped_ ? "joint (MOEBENCH_HYBRID_JOINT=1)"
                                                                  : "each link alone (MOEBENCH_HYBRID_JOINT=0 or not measured)",
                                       joint_ && both_overlapped_
                                           ? (learn_ ? ", rates learned in decode (hybrid_rates=decode)"
                                                     : ", rates from the load (hybrid_rates=load)")
                                           : "")
                         : std::string("whole experts per link"));
}

}  // namespace moebench::cuda
