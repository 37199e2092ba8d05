// machine.h: what the runner says about the machine a result came from: the
// host (name, CPU model, cores, RAM) and the device the engine computed on, with
// its measured memory bandwidth. On the CPU backend the device is the CPU and
// hbm_gbps is a measured DRAM copy bandwidth; on CUDA, hbm_gbps is the best of a
// device read-only stream and a copy kernel (both kept: hbm_read_gbps,
// hbm_copy_gbps) and h2d_gbps a pinned host->device copy's, all measured in this
// process (engine/cuda/bandwidth.h) before any model takes the memory.
#pragma once
#include <string>

#include "reports/results.h"

namespace moebench::suites {

// The CPU model from /proc/cpuinfo ("model name"), or "unknown CPU".
std::string cpu_model_name();
reports::HostInfo host_info();

// Best-of-N memcpy bandwidth over two `bytes` buffers, counting read + write
// (2 x bytes per copy), in GB/s (1e9 B/s). About 0.1 s for the default size.
double measure_copy_gbps(size_t bytes = 64u << 20, int repeats = 5);

// Read bandwidth over a `bytes` buffer with `threads` OpenMP threads, in GB/s of
// bytes read: each thread touches its own slice, then streams it in timed passes
// (native-width vector loads, four chains) and keeps its best pass; the result is
// the sum of the threads' best rates. Timing each thread on its own keeps a loaded
// machine (a thread set aside by the scheduler) from lowering the figure; if
// anything it errs high, which keeps a bound built on it a limit. The buffer is
// capped at 1 GiB (far past any last-level cache: a larger working set reads at
// the same DRAM speed). Passes repeat for ~30 ms per thread (at least 5, at most
// 1000): a few ms at the tiny model's size.
double measure_read_gbps(size_t bytes, int threads);

// The process's peak resident set size (VmHWM of /proc/self/status, else
// getrusage's ru_maxrss), bytes; 0 when neither can be read.
int64_t process_peak_rss_bytes();

// "auto" -> "cuda" when the CUDA model is compiled in and a device is present,
// else "cpu"; "cpu" stays; "cuda" is checked (built in, device present) and
// throws Error saying what is missing.
std::string resolve_backend(const std::string& requested);

// Device info for a resolved backend ("cpu" | "cuda"). `measure` runs the
// bandwidth measurement (skipped in tests that do not need it).
reports::DeviceInfo device_info(const std::string& backend, bool measure = true);

}  // namespace moebench::suites
