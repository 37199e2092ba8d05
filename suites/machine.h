// machine.h: what the runner says about the machine a result came from: the
// host (name, CPU model, cores, RAM) and the device the engine computed on, with
// its measured memory bandwidth. On the CPU backend the device is the CPU and
// hbm_gbps is a measured DRAM copy bandwidth; on CUDA, hbm_gbps is a device copy
// kernel's (read + write) and h2d_gbps a pinned host->device copy's, both measured
// in this process (engine/cuda/bandwidth.h) before any model takes the memory.
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

// "auto" -> "cuda" when the CUDA model is compiled in and a device is present,
// else "cpu"; "cpu" stays; "cuda" is checked (built in, device present) and
// throws Error saying what is missing.
std::string resolve_backend(const std::string& requested);

// Device info for a resolved backend ("cpu" | "cuda"). `measure` runs the
// bandwidth measurement (skipped in tests that do not need it).
reports::DeviceInfo device_info(const std::string& backend, bool measure = true);

}  // namespace moebench::suites
