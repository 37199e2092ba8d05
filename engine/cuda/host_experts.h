// host_experts.h: the host link of expert_exec cpu | hybrid and cpu_moe_layers on the
// CUDA model — experts computed on the host from the pinned host store with the CPU
// expert kernels (engine/ops/cpu_expert.h), beside the copies of the offload provider.
//
// Per layer the MoE layer (moe_layer_host.cpp) asks plan() which of the forward's
// experts the host computes: the misses (experts not resident in the provider's
// cache), split by host_count_for() (variants/hybrid_split.h, the simulator's code)
// with the rates measured so far in this run — the copy link's from the provider's
// finished copies (OffloadStats), the host's from its own finished expert work (before
// that, the best cold rate measured for the store: engine/host_kernel_rate.h) — and the copy link's
// backlog (loads still in flight x the copy time of one). With a split scratch the
// model also measures both links at once at load (the copies alone, then copies and
// the host kernel together over the same time); with those rates (and
// MOEBENCH_HYBRID_JOINT not 0) the split uses the joint model of hybrid_split.h instead:
// each link's solo rate at load and both links' joint rates. Decode only: a forward whose
// device part would exceed kHostMixMaxGpuPairs (expert, token) pairs keeps every miss on
// the copy path, except in the layers below cpu_moe_layers, where the host computes
// every pair (nothing of those layers is cached).
//
// Split experts (hybrid, with a scratch slot from the arena): the plan may share
// one miss between the links (hybrid_plan_for): the host computes its first rows
// [0, split_host_rows) with the CPU kernel (cpu_expert_rows), the rest — rows of w1 and
// w3, the matching columns of w2 (a pitched copy) — goes over the link into the scratch
// slot as a dense expert of inter - split_host_rows rows (issue_split_copy), which the
// GPU computes into split_y(); the MoE layer adds that to the host's partial rows before
// the combine. Every expert format splits: bf16 as three matrices, the quantised ones
// with their scales and zero points (engine/expert_part.h: the scratch holds the whole
// expert's layout, each part packed at its offset there; the quantised decode kernels run
// it as a one-expert table), int4 and fp8 only where a part is a multiple of their
// 128-row scale groups (whole experts per link otherwise). MOEBENCH_SPLIT_QUANT=0 keeps
// whole experts per link for the quantised formats (for measuring one build both ways). The scratch is not cached: the split expert stays a miss. The slot
// budget gives up split_scratch_bytes() for it (the setting hybrid_split: host: only host
// experts give parts to the link; all: copies may give way to parts too; balance, the
// default: cpu mode's schedule, nothing copied ahead, the link's share of each layer's parts set by
// feedback (BalanceShare, variants/hybrid_split.h): compute() tells it whether the layer's
// copies were still in flight when the host's work ended; off: no split, no scratch, whole
// experts per link as before. MOEBENCH_HYBRID_SPLIT, when set, wins: 1, 0, all, balance, or
// half for tests: every decode layer with a miss splits its last miss in half and copies the
// others).
//
// compute() runs the host's share on a worker thread of its own (named "host experts":
// its own track in the trace, one range per expert) with the kernels' OpenMP team and
// returns when it is done; the caller overlaps it with the device work and the copies
// it enqueued before. The team's threads are pinned, one per CPU the process may use
// (MOEBENCH_HOST_PIN=0: not), so they keep their cores between layers. Values: fp32 sums over bf16 (or quantised) weights, the
// activations rounded to bf16 on avx512_bf16 — the same expert as the device's, summed
// in another order (docs/HYBRID.md states the tolerance).
#pragma once
#include <cuda_runtime_api.h>

#include <condition_variable>
#include <exception>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "engine/expert_host_store.h"
#include "engine/ops/cpu_expert.h"
#include "profiler/counters.h"
#include "variants/hybrid_split.h"

namespace moebench::profiler {
class CpuTrace;
}  // namespace moebench::profiler

namespace moebench::cuda {

class OffloadProvider;
class DeviceArena;

// The device part of a forward with host experts runs its pairs as single-expert rows
// through the decode kernels: at most this many.
constexpr int kHostMixMaxGpuPairs = 8;

class HostExperts {
 public:
  // Bytes of the split experts' scratch slot for this mode and store (0: no split —
  // not hybrid, an intermediate size split_units_for cannot cut (int4 and fp8: parts not
  // a multiple of 128 rows), MOEBENCH_HYBRID_SPLIT=0, or a quantised store with
  // MOEBENCH_SPLIT_QUANT=0). Throws Error on a bad MOEBENCH_HYBRID_SPLIT or MOEBENCH_SPLIT_QUANT.
  // split: the setting hybrid_split (balance | host | all | off; MOEBENCH_HYBRID_SPLIT, when set, wins).
  static uint64_t split_scratch_bytes(ExpertExec exec, const ExpertHostStore& store, const std::string& split);

  // The store must be the pinned tier and outlive this; counters may be null. arena:
  // where the split scratch comes from (split_scratch_bytes of it must be free), or null
  // for no split.
  HostExperts(const ExpertHostStore& store, OffloadProvider& provider, ExpertExec exec, int cpu_moe_layers,
              profiler::ExpertCounters* counters, profiler::CpuTrace& trace, DeviceArena* arena = nullptr,
              const std::string& split = "balance");
  ~HostExperts();
  HostExperts(const HostExperts&) = delete;
  HostExperts& operator=(const HostExperts&) = delete;

  ExpertExec exec() const { return exec_; }
  int cpu_moe_layers() const { return cpu_layers_; }
  // Whether prefetches may load experts of `layer` (not in cpu layers, not in cpu mode, not
  // with hybrid_split=balance: it starts from cpu mode's schedule).
  bool prefetch_allowed(int layer) const {
    return !balance_ && moebench::prefetch_allowed(exec_, cpu_layers_, layer);
  }

  // Which experts of this forward (ids (pairs), m tokens) the host computes: returns
  // their count; mask() flags them. 0: the forward takes the device path alone.
  int plan(int step, int layer, const int32_t* ids, int pairs, int m);
  // hybrid_rates=decode: the joint model's rates learned from the decode steps
  // (DecodeLinkRates, variants/hybrid_split.h) replace the load-time ones as they come in;
  // false (hybrid_rates=load): the load-time ones throughout.
  void learn_rates_in_decode(bool on) { learn_ = on; }
  std::span<const char> mask() const { return mask_; }
  // The plan's split expert (flagged in mask() too; the host computes rows
  // [0, split_host_rows()) of it), or -1.
  int split_expert() const { return split_expert_; }
  int64_t split_host_rows() const { return split_rows_; }
  int64_t split_device_rows() const { return store_.inter() - split_rows_; }
  // Enqueues the split expert's copied part on the provider's copy stream (after the
  // scratch's previous reader); wait_split_copy makes `compute` wait for it (just before
  // the GPU's part, so the device experts need not wait).
  void issue_split_copy(int layer);
  void wait_split_copy(cudaStream_t compute);
  // The scratch as a one-expert pointer table (bf16: w1s, w3s, w2s, one device pointer
  // each; quantised: MoeLayer::tables()'s nine rows, values / scales / zero points of each
  // matrix; rows split_device_rows()) and the device rows (kHostMixMaxGpuPairs, hidden) fp32
  // the GPU's part goes to.
  const void* const* split_table() const { return split_table_; }
  float* split_y() const { return split_y_; }
  // The GPU's reads of the scratch are enqueued on `compute`: the next copy waits for them.
  void split_done(cudaStream_t compute);

  // hybrid: drops from `ids` (the next layer's predictions) the not resident experts the
  // link should not copy ahead (hybrid_prefetch_count, with this layer's plan); other
  // modes leave them.
  void filter_prefetch(int next_layer, std::vector<int32_t>& ids);

  // The host's share: for every pair p (ids (pairs) with top_k k) whose expert is
  // flagged, y[row[p]] (hidden floats) = expert(x[p / k]) unweighted. x (m, hidden)
  // bf16. Blocks until done; records the host work in the counters.
  void compute(int layer, const uint16_t* x, int m, const int32_t* ids, int pairs, int k, const int32_t* row,
               float* y);
  // The fixed cost of a layer with host work as the caller measured it (the whole host
  // section's wall time less the kernels').
  void note_overhead(int layer, int64_t ns);
  int64_t last_kernel_ns() const { return last_kernel_ns_; }
  // Blocks until the split copies issued so far finished and adds them to the counters
  // (the provider's sync_counters does the same for its loads).
  void sync_counters();

  HybridRates rates() const;
  // The host kernel's rate measured for the store (engine/host_kernel_rate.h).
  const profiler::HostKernelRate& host_kernel() const { return measured_; }
  int pinned_threads() const { return pinned_threads_; }
  std::string describe() const;  // "expert_exec hybrid, 0 cpu layer(s), host kernel avx512_bf16 (16 threads, pinned) ..."

 private:
  void run_on_worker(const std::function<void()>& job);
  void stop_worker();
  void destroy_split() noexcept;
  // With a split scratch: the copy link's rate alone, and both links' rates while both
  // read host memory at once (in describe(), the results and the joint model).
  void measure_both_links();
  // With the joint rates measured (and MOEBENCH_HYBRID_JOINT not 0) rates() gives the
  // joint model: copies alone, the host's best cold rate, both at once.
  double both_copy_gbps_ = 0, both_host_gbps_ = 0, solo_copy_gbps_ = 0;
  std::vector<double> solo_copy_samples_gbps_;  // each solo copy's rate (the best is solo_copy_gbps_)
  // hybrid_rates=decode
  bool learn_ = false;
  DecodeLinkRates learned_;
  int64_t seen_copy_bytes_ = 0, seen_copy_ns_ = 0;  // the copy totals at the previous plan()
  bool prev_decode_ = false, prev_host_work_ = false;
  int plan_layer(int step, int layer, const int32_t* ids, int pairs, int m);
  // Whether a load or a split copy is still running on the copy stream.
  bool copies_in_flight() const;
  int both_samples_ = 0;
  bool both_overlapped_ = false, joint_ = false;
  // On the worker: pins thread i of its OpenMP team to the i-th CPU it may run on.
  void pin_team();

  const ExpertHostStore& store_;
  OffloadProvider& provider_;
  ExpertExec exec_;
  int cpu_layers_ = 0;
  profiler::ExpertCounters* counters_ = nullptr;
  profiler::CpuTrace& trace_;
  cpu::CpuIsa isa_;
  std::vector<char> mask_;
  std::vector<int32_t> misses_, kept_;
  HybridPlan plan_;  // the plan of the current layer
  // split experts
  int split_units_ = 1;
  bool split_half_ = false;    // MOEBENCH_HYBRID_SPLIT=half
  bool split_copies_ = false;  // MOEBENCH_HYBRID_SPLIT=all
  std::optional<BalanceShare> balance_;  // hybrid_split=balance
  int balance_misses_ = 0;               // the current layer's misses when balance_ planned it
  double balance_start_ = 0;             // its starting share
  int split_expert_ = -1;
  int64_t split_rows_ = 0;
  uint8_t* split_scratch_ = nullptr;                 // device: w1' | w3' | w2' of a dense part, each at its whole size (quantised: in the expert's layout)
  const void** split_table_ = nullptr;         // device: the three pointers
  float* split_y_ = nullptr;                   // device (kHostMixMaxGpuPairs, hidden)
  cudaEvent_t scratch_free_ = nullptr;
  struct SplitCopy {
    int layer;
    int64_t bytes;
    cudaEvent_t start, end;
  };
  std::vector<SplitCopy> split_pending_;
  MeasuredRate split_rate_;                    // the split copies that finished
  std::vector<cudaEvent_t> split_events_;      // free timing events
  // Adds finished split copies to the counters (wait: block for all).
  void collect_split_copies(bool wait);
  MeasuredRate host_rate_;
  profiler::HostKernelRate measured_;
  bool pin_ = true;  // MOEBENCH_HOST_PIN=0 leaves the team unpinned
  int pinned_threads_ = 0;
  int64_t overhead_sum_ns_ = 0, overhead_n_ = 0, last_kernel_ns_ = 0;
  // scratch of compute(): activations in fp32, the rows of one expert, its outputs, the kernel's scratch
  std::vector<float> xf_, xin_, yout_, scratch_;
  std::vector<int32_t> pairs_of_;
  // the worker
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool has_job_ = false, job_done_ = false, stop_ = false;
  std::exception_ptr job_error_;
};

}  // namespace moebench::cuda
