// clock.h: the profiler's one clock. Every CPU timestamp (token samples, CPU
// ranges, memory timeline) and, through CUPTI's timestamp callback, every GPU
// activity timestamp is int64 nanoseconds of std::chrono::steady_clock
// (CLOCK_MONOTONIC on Linux), so CPU and GPU events share one time axis.
#pragma once
#include <chrono>
#include <cstdint>

namespace moebench::profiler {

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace moebench::profiler
