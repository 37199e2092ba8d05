// counters.h: the always-on counters the engine bumps, and the Profiler that
// owns them. Plain structs and int64 ns/bytes; no UI, no results schema.
//
// Cost: every bump is a few integer adds and one bounds check; a token record
// appends to a reserved vector. Counters are bumped from the engine thread only
// (copies finish on the copy stream, but the engine thread reports them), so
// there are no atomics or locks on this path. Derived statistics (percentiles,
// TTFT, tokens/s) are computed elsewhere (profiler/stats) from these samples.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "profiler/cpu_trace.h"

namespace moebench::profiler {

enum class Phase : uint8_t { prefill, decode };
const char* phase_name(Phase p);

// One engine step: a prefill chunk (n_tokens = its prompt tokens) or one
// decode token (n_tokens = 1 per sequence in the batch).
struct TokenSample {
  Phase phase = Phase::decode;
  int32_t n_tokens = 1;
  int64_t start_ns = 0;    // profiler clock (clock.h)
  int64_t latency_ns = 0;  // end - start
};

struct TokenCounters {
  std::vector<TokenSample> samples;  // (n_steps) in order

  int64_t steps(Phase p) const;
  int64_t tokens(Phase p) const;      // sum of n_tokens
  int64_t total_ns(Phase p) const;    // sum of latency_ns
  std::vector<int64_t> latencies_ns(Phase p) const;  // (steps(p))
};

// Expert cache counters of one layer (or summed over layers).
struct ExpertStats {
  int64_t hits = 0;         // routed expert was resident
  int64_t misses = 0;       // routed expert was not resident: loaded first, or computed on the host
  int64_t loads = 0;        // expert loads completed (misses + prefetches)
  int64_t bytes_moved = 0;  // bytes copied into expert slots
  int64_t load_ns = 0;      // summed duration of those loads
  int64_t stall_ns = 0;     // compute stream waited on a load this long
  int64_t host_experts = 0; // routed expert computed on the host (expert_exec cpu | hybrid)
  int64_t host_bytes = 0;   // expert bytes the host kernel read for them
  int64_t host_ns = 0;      // the host kernel's busy time on those experts
  int64_t host_layers = 0;  // layer forwards with host work
  int64_t host_overhead_ns = 0;  // their fixed cost: host section wall time less the kernels'
  // Both links at once in decode (hybrid): copies that ran beside the host's work and host
  // work that ran beside copies, their bytes and busy times (HostExperts' samples).
  int64_t joint_copy_bytes = 0, joint_copy_ns = 0, joint_host_bytes = 0, joint_host_ns = 0;

  double hit_rate() const;  // hits / (hits + misses); 1 when nothing routed
  ExpertStats& operator+=(const ExpertStats& o);
  friend ExpertStats operator-(ExpertStats a, const ExpertStats& b);
  friend bool operator==(const ExpertStats&, const ExpertStats&) = default;
};

// The host expert kernel's weight-read rate as measured for a model
// (engine/host_kernel_rate.h): best, median and worst of `samples` experts, GB/s, with
// `threads` OpenMP threads; cold when the experts read exceeded the last-level cache
// (cache_bytes, 0 = unknown) several times over.
struct HostKernelRate {
  double best_gbps = 0, median_gbps = 0, worst_gbps = 0;
  int samples = 0, threads = 0;
  bool cold = false;
  int64_t cache_bytes = 0;
  // Both links at once (a model with a device buffer to copy into measures it): the
  // host->device copies' rate and the host kernel's over the same time, GB/s, and the
  // copies' rate alone just before; 0: not measured.
  double joint_copy_gbps = 0, joint_host_gbps = 0, solo_copy_gbps = 0;
};

class ExpertCounters {
 public:
  // Sizes the per-layer counters and the usage matrix; clears everything.
  void configure(int32_t n_layers, int32_t n_experts);
  int32_t n_layers() const { return n_layers_; }
  int32_t n_experts() const { return n_experts_; }

  // A token was routed to (layer, expert): usage + 1 and a hit or a miss.
  void route(int32_t layer, int32_t expert, bool hit);
  // An expert load finished: bytes copied and how long the copy took.
  void load(int32_t layer, int64_t bytes, int64_t load_ns);
  // Part of an expert was copied (a split expert's share, into a scratch slot): bytes
  // and copy time as load() counts them, but no load (nothing lands in the cache).
  void part_load(int32_t layer, int64_t bytes, int64_t load_ns);
  // The compute stream waited this long for a load in this layer.
  void stall(int32_t layer, int64_t stall_ns);
  // An expert routed to (and counted as a miss by route()) is computed on the host.
  void host_route(int32_t layer, int32_t expert);
  // The host computed experts of this layer: the weight bytes it read and its busy time.
  void host_work(int32_t layer, int64_t bytes, int64_t host_ns);
  // One layer forward with host work cost this much beyond its kernels (activations
  // down, waits, conversion).
  void host_overhead(int32_t layer, int64_t ns);
  // Decode's samples of both links at once: copies that finished beside host work, or
  // host work that ran beside copies (either pair may be 0).
  void both_links(int32_t layer, int64_t copy_bytes, int64_t copy_ns, int64_t host_bytes, int64_t host_ns);
  // The host expert kernel's read rate measured for the model (GB/s; best: the host
  // link of the hybrid bound). Kept across configure() and reset(); 0 = none.
  void note_host_kernel(const HostKernelRate& r) { host_kernel_ = r; }
  void note_host_kernel_gbps(double gbps) { host_kernel_ = HostKernelRate{}, host_kernel_.best_gbps = gbps; }
  double host_kernel_gbps() const { return host_kernel_.best_gbps; }
  const HostKernelRate& host_kernel() const { return host_kernel_; }
  // The expert slots of an offloaded model's cache (0: none), kept like the rate.
  void note_slots(int slots) { slots_ = slots; }
  int slots() const { return slots_; }

  const ExpertStats& layer(int32_t l) const;
  const ExpertStats& total() const { return total_; }
  int64_t usage(int32_t layer, int32_t expert) const;
  const std::vector<int64_t>& usage_matrix() const { return usage_; }  // (n_layers, n_experts) row-major
  const std::vector<ExpertStats>& per_token() const { return per_token_; }  // (n_steps) deltas
  // Hit rate of each step alone, or cumulative up to and including it. (n_steps)
  std::vector<double> hit_rate_series(bool cumulative) const;

  // Closes a step: appends what happened since the previous call to per_token().
  void end_token();
  void reset();  // zeroes counters, keeps the shape

 private:
  HostKernelRate host_kernel_;
  int slots_ = 0;
  void check(int32_t layer, int32_t expert, const char* what) const;

  int32_t n_layers_ = 0, n_experts_ = 0;
  std::vector<ExpertStats> layers_;      // (n_layers)
  ExpertStats total_;                    // sum over layers
  ExpertStats total_at_last_token_;
  std::vector<int64_t> usage_;           // (n_layers, n_experts)
  std::vector<ExpertStats> per_token_;   // (n_steps)
};

// One point of the memory timeline, taken at a token boundary.
struct MemorySample {
  int64_t t_ns = 0;
  int64_t step = 0;                   // index into TokenCounters::samples
  int64_t arena_used_bytes = 0;
  int64_t device_used_bytes = -1;     // cudaMemGetInfo total - free; -1: not sampled
  int64_t host_pinned_bytes = 0;
};

struct MemoryCounters {
  int64_t arena_used_bytes = 0;       // current, as the engine last reported
  int64_t arena_peak_bytes = 0;
  int64_t device_used_peak_bytes = -1;  // -1: never sampled
  int64_t host_pinned_bytes = 0;      // current
  int64_t host_pinned_peak_bytes = 0;
  std::vector<MemorySample> timeline;  // (n_samples)

  // The arena reports its use and, optionally, its own peak since the last
  // repetition (it sees every allocation between two reports).
  void note_arena(int64_t used_bytes, int64_t peak_bytes = -1);
  void note_host_pinned(int64_t bytes);
  // Appends a timeline point; device_used_bytes < 0 means not sampled.
  void sample(int64_t t_ns, int64_t step, int64_t device_used_bytes);
  void reset();  // keeps the current arena/pinned levels as the new peaks
};

// Device memory in use (cudaMemGetInfo total - free) on the current device, or
// nullopt without CUDA or without a device. Tens of microseconds: call it at
// token boundaries, not inside kernels' launch loops.
std::optional<int64_t> query_device_used_bytes();

struct ProfilerOptions {
  bool sample_device_memory = false;   // cudaMemGetInfo at each token end (CUDA backend)
  int32_t memory_sample_every = 1;     // steps between memory timeline points
};

// Everything the engine reports for one run, passed explicitly (no globals).
struct Profiler {
  ProfilerOptions options;
  int64_t model_load_ns = -1;  // set once by the loader; survives reset_repetition
  TokenCounters tokens;
  ExpertCounters experts;
  MemoryCounters memory;
  CpuTrace trace;              // opt-in (trace.set_enabled)

  // Closes one step: token sample, per-token expert deltas, memory point.
  void record_token(Phase phase, int32_t n_tokens, int64_t start_ns, int64_t end_ns);
  // Before each repetition: clears samples and counters (not model_load_ns,
  // not the expert shape, not the options or the trace's enabled flag).
  void reset_repetition();
};

}  // namespace moebench::profiler
