// cpu_trace.h: the CPU range recorder and ScopedRange.
//
// CpuTrace keeps completed CPU ranges (kind, name, layer, expert, start/end ns,
// thread) while tracing is on; it is off by default and then costs one bool
// test per range. ScopedRange is what the engine writes around its work: it
// always emits an NVTX range (a no-op without CUDA) and, when the trace is on,
// records the range for the Chrome trace.
//
//   ScopedRange r(prof.trace, RangeKind::attention, layer);
//   ScopedRange e(prof.trace, RangeKind::expert_compute, layer, expert);
#pragma once
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "profiler/nvtx.h"

namespace moebench::profiler {

struct CpuRange {
  RangeKind kind = RangeKind::other;
  const char* name = nullptr;  // static string; nullptr means range_kind_name(kind)
  int32_t layer = -1;          // -1: not applicable
  int32_t expert = -1;         // -1: not applicable
  int64_t start_ns = 0;
  int64_t end_ns = 0;
  int32_t thread = 0;          // index into CpuTrace::thread_names()
};

class CpuTrace {
 public:
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
  // Turning tracing on or off is done between repetitions, not inside one.
  void set_enabled(bool on) { enabled_.store(on, std::memory_order_relaxed); }

  // Thread-safe. Threads are numbered in order of their first range.
  void record(const CpuRange& r);
  // Names the calling thread's track ("engine", "loader"); thread-safe.
  void name_this_thread(const std::string& name);

  // Snapshots (copies under the lock).
  std::vector<CpuRange> ranges() const;
  std::vector<std::string> thread_names() const;  // (n_threads)
  void clear();  // drops ranges, keeps thread names

 private:
  int32_t thread_index_locked(std::thread::id id);

  std::atomic<bool> enabled_{false};
  mutable std::mutex mu_;
  std::vector<CpuRange> ranges_;
  std::vector<std::pair<std::thread::id, std::string>> threads_;  // (n_threads)
};

class ScopedRange {
 public:
  ScopedRange(CpuTrace& trace, RangeKind kind, int32_t layer = -1, int32_t expert = -1,
              const char* name = nullptr) noexcept
      : ScopedRange(&trace, kind, layer, expert, name) {}
  // trace may be null (no profiler attached): NVTX only.
  ScopedRange(CpuTrace* trace, RangeKind kind, int32_t layer = -1, int32_t expert = -1,
              const char* name = nullptr) noexcept
      : nvtx_(kind, expert >= 0 ? expert : layer, name),
        trace_(trace != nullptr && trace->enabled() ? trace : nullptr),
        kind_(kind), name_(name), layer_(layer), expert_(expert),
        start_ns_(trace_ != nullptr ? now_ns() : 0) {}
  ~ScopedRange() {
    if (trace_ != nullptr) trace_->record(CpuRange{kind_, name_, layer_, expert_, start_ns_, now_ns(), 0});
  }
  ScopedRange(const ScopedRange&) = delete;
  ScopedRange& operator=(const ScopedRange&) = delete;

 private:
  NvtxRange nvtx_;
  CpuTrace* trace_;
  RangeKind kind_;
  const char* name_;
  int32_t layer_, expert_;
  int64_t start_ns_;
};

}  // namespace moebench::profiler
