// host_kernel_rate.h: the host expert kernel's weight-read rate (GB/s), the host link of
// expert_exec cpu | hybrid — what the hybrid split starts from and what the hybrid bound
// divides the host's expert bytes by. Plain C++ (the CPU kernels of engine/ops).
//
// How it is measured, once per run and expert store (host_kernel_rate(): every case on
// the same store gets the same numbers; a store of another format is measured again):
//   - on the calling thread with its OpenMP team — the caller runs it on the thread
//     that runs the host experts, so with the threads the engine uses — after the caller
//     has waited for the device (no copy reads host memory meanwhile);
//   - one token through whole experts of the store with the decode kernel
//     (cpu_expert_forward), as a decode step runs them; the rate of a sample is the
//     expert's bytes over its time;
//   - cold weights: first at least kHostRateFlushFactor x the last-level cache of other
//     experts, unmeasured (they evict what the store's fill or earlier work left in the
//     cache and wake the OpenMP team), then at least kHostRateSamples samples and at least
//     kHostRateColdFactor x the cache in all; no expert is read twice, and consecutive
//     reads are in different layers.
// The bound takes the best sample: the fastest rate reached on cold data, which a decode
// step's host work cannot beat on average. Median and worst give the spread.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/expert_host_store.h"
#include "engine/ops/cpu_expert.h"
#include "profiler/counters.h"
#include "variants/cache_policy.h"

namespace moebench {

constexpr int kHostRateSamples = 8;
constexpr int kHostRateFlushFactor = 2;
constexpr int kHostRateColdFactor = 4;

// Bytes of the last-level cache of CPU 0 (sysconf, then sysfs); 0 when neither says.
int64_t last_level_cache_bytes();

// The experts a measurement reads, in order: the first `flush` of them unmeasured, the
// rest the samples (see above; with cache_bytes 0, 512 MiB is assumed). Distinct while
// the store has enough experts (then `cold` is true); otherwise `cold` is false (the
// weights fit in the cache: the rate is not a memory rate), at most every expert is
// read to warm the cache and the samples (at least kHostRateSamples, at most one per
// expert unless fewer) wrap around.
struct HostRatePlan {
  std::vector<ExpertKey> experts;
  int flush = 0;
  bool cold = false;
};
HostRatePlan host_rate_plan(int n_layers, int n_experts, int64_t expert_bytes, int64_t cache_bytes);

// The experts a measurement of both links at once copies (`count` of them): from the
// last layer's last expert down, then the layer before, wrapping around a store with
// fewer experts than `count` — every key within the store. Throws Error on
// non-positive sizes.
std::vector<ExpertKey> both_links_copy_experts(int n_layers, int n_experts, int count);
// The host kernel's reads while something else runs (both links at once): cold experts of
// the store in host_rate_plan's order, the ones in `skip` left out, the first unmeasured
// (it wakes the team), then one sample after another while `running()` holds; a sample
// counts when running() still holds after it. Bytes and kernel time summed over the
// counted samples (samples 0: none finished in time).
struct HostReadSum {
  int64_t bytes = 0, ns = 0;
  int samples = 0;
  double gbps() const { return ns > 0 ? static_cast<double>(bytes) / static_cast<double>(ns) : 0.0; }
};
HostReadSum measure_host_kernel_while(const ExpertHostStore& store, cpu::CpuIsa isa, const std::vector<ExpertKey>& skip,
                                      const std::function<bool()>& running);
// The experts measure_host_kernel_while reads, in order (the first is the unmeasured one).
std::vector<ExpertKey> host_read_order(int n_layers, int n_experts, const std::vector<ExpertKey>& skip);

// Best, median and worst of the per-sample rates (GB/s); throws Error on an empty or
// non-positive list.
profiler::HostKernelRate summarize_host_rates(std::vector<double> gbps);

// Measures the pinned store's experts now, as above.
profiler::HostKernelRate measure_host_kernel_rate(const ExpertHostStore& store, cpu::CpuIsa isa);

// The rate of `store` with `isa`: measured by the first call for that store (its
// description, the ISA and the OpenMP thread count of the calling thread as the key) and
// returned unchanged by every later call in the process.
profiler::HostKernelRate host_kernel_rate(const ExpertHostStore& store, cpu::CpuIsa isa);

// The CpuExpert view of one expert of the pinned store.
cpu::CpuExpert host_store_expert(const ExpertHostStore& store, int layer, int expert);

}  // namespace moebench
