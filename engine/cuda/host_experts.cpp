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
#include "engine/cuda/check.cuh"
#include "engine/cuda/offload_provider.h"
#include "engine/host_kernel_rate.h"
#include "engine/dtype.h"
#include "profiler/counters.h"
#include "profiler/cpu_trace.h"

namespace moebench::cuda {

namespace {
// Until a copy has finished in this run, the copy link's rate is taken as this (GB/s);
// prefill's copies and the warm-up replace it before the first decode step.
constexpr double kUnmeasuredCopyGbps = 25.0;
}  // namespace

HostExperts::HostExperts(const ExpertHostStore& store, OffloadProvider& provider, ExpertExec exec, int cpu_moe_layers,
                         profiler::ExpertCounters* counters, profiler::CpuTrace& trace)
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
}

HostExperts::~HostExperts() { stop_worker(); }

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
  r.copy_gbps = s.copy_ns > 0 ? s.h2d_gbps() : kUnmeasuredCopyGbps;
  r.host_gbps = host_rate_.gbps();
  r.expert_bytes = static_cast<int64_t>(store_.expert_bytes());
  r.host_overhead_ns = overhead_n_ > 0 ? overhead_sum_ns_ / overhead_n_ : 0;
  return r;
}

int HostExperts::plan(int step, int layer, const int32_t* ids, int pairs, int m) {
  (void)step;
  last_n_host_ = 0;
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
  const int n_host = host_count_for(exec_, cpu_layers_, layer, static_cast<int>(misses_.size()), backlog, r);
  if (n_host == 0) return 0;
  mark_host_experts(misses_, n_host, store_.n_experts(), mask_);
  int gpu_pairs = 0;
  for (int p = 0; p < pairs; ++p) gpu_pairs += !mask_[ids[p]];
  if (gpu_pairs > kHostMixMaxGpuPairs) {  // a wide forward of a cpu layer with some experts resident
    std::fill(mask_.begin(), mask_.end(), 0);
    return 0;
  }
  last_n_host_ = n_host;
  return n_host;
}

void HostExperts::filter_prefetch(int next_layer, std::vector<int32_t>& ids) {
  if (exec_ != ExpertExec::hybrid) return;
  distinct_misses(provider_.cache(), next_layer, ids, misses_);
  if (misses_.empty()) return;
  const HybridRates r = rates();
  const int64_t backlog = static_cast<int64_t>(provider_.loads_in_flight()) * copy_ns_per_expert(r);
  const int k = hybrid_prefetch_count(static_cast<int>(misses_.size()), backlog,
                                      hybrid_layer_left_ns(backlog, last_n_host_, r), r);
  keep_prefetches(provider_.cache(), next_layer, ids, k, kept_);
  ids.swap(kept_);
}

void HostExperts::compute(int layer, const uint16_t* x, int m, const int32_t* ids, int pairs, int k, const int32_t* row,
                          float* y) {
  const int64_t H = store_.hidden(), I = store_.inter();
  xf_.resize(static_cast<size_t>(m) * H);
  for (size_t i = 0; i < xf_.size(); ++i) xf_[i] = bf16_to_f32(x[i]);
  int64_t kernel_ns = 0, bytes = 0;
  run_on_worker([&] {
    for (int e = 0; e < store_.n_experts(); ++e) {
      if (!mask_[e]) continue;
      pairs_of_.clear();
      for (int p = 0; p < pairs; ++p)
        if (ids[p] == e) pairs_of_.push_back(p);
      if (pairs_of_.empty()) continue;
      const int n = static_cast<int>(pairs_of_.size());
      profiler::ScopedRange range(trace_, profiler::RangeKind::expert_compute, layer, e, "host expert");
      xin_.resize(static_cast<size_t>(n) * H);
      yout_.resize(static_cast<size_t>(n) * H);
      scratch_.resize(cpu::cpu_expert_scratch_floats(n, I));
      for (int i = 0; i < n; ++i)
        std::copy_n(xf_.data() + static_cast<int64_t>(pairs_of_[i] / k) * H, H, xin_.data() + static_cast<int64_t>(i) * H);
      const int64_t t0 = profiler::now_ns();
      cpu::cpu_expert_forward(host_store_expert(store_, layer, e), xin_.data(), yout_.data(), scratch_.data(), n, isa_);
      kernel_ns += profiler::now_ns() - t0;
      bytes += static_cast<int64_t>(store_.expert_bytes());
      for (int i = 0; i < n; ++i)
        std::copy_n(yout_.data() + static_cast<int64_t>(i) * H, H, y + static_cast<int64_t>(row[pairs_of_[i]]) * H);
      if (counters_) counters_->host_route(layer, e);
    }
  });
  last_kernel_ns_ = kernel_ns;
  host_rate_.add(bytes, kernel_ns);
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
  const bool copied = provider_.stats().copy_ns > 0;
  return fmt::format("expert_exec {}, {} cpu layer(s), host kernel {} ({} threads, {} pinned): best {:.1f} GB/s of {} "
                     "{} experts (median {:.1f}, worst {:.1f}), {} {:.1f} GB/s; copies {:.1f} GB/s{}",
                     expert_exec_name(exec_), cpu_layers_, cpu::cpu_isa_name(isa_), k.threads, pinned_threads_,
                     k.best_gbps, k.samples, k.cold ? "cold" : "cache-resident", k.median_gbps, k.worst_gbps,
                     host_rate_.ns() > 0 ? "measured in decode" : "the split's rate until the host computes:",
                     r.host_gbps, r.copy_gbps, copied ? "" : " (assumed until a copy has finished)");
}

}  // namespace moebench::cuda
