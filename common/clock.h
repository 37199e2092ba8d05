// clock.h: the profiler's one clock. Every CPU timestamp (token samples, CPU
// ranges, memory timeline) and, through CUPTI's timestamp callback, every GPU
// activity timestamp is int64 nanoseconds of std::chrono::steady_clock
// (CLOCK_MONOTONIC on Linux), so CPU and GPU events share one time axis.
#pragma once
#include <chrono>
#include <cstdint>
#include <ctime>

namespace moebench::profiler {

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), int64 ns. Not the
// profiler's time axis: the CI gate's suite times its steps with it because time
// spent descheduled on a busy machine does not count.
inline int64_t thread_cpu_now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace moebench::profiler
