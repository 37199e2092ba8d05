// chrome_trace.h: the Chrome trace-event JSON writer (loads in Perfetto and
// chrome://tracing). Layout of the trace:
//   pid 1 "moebench (CPU)": tid 0 "steps" (one slice per prefill/decode step),
//     tid 1.. the engine's threads (ScopedRange slices), tid 1000.. "CUDA API"
//     (CUPTI runtime/driver records), and the "memory" counter track;
//   pid 100+d "GPU d": per CUDA stream N a track "stream N" (tid N) with its kernels
//     and a track "stream N copies" (tid 1000000+N) with its memcpys and memsets;
//   flow arrows ("s" on the API call → "f" on the GPU work) keyed by CUPTI's
//   correlation id.
// Timestamps are microseconds (doubles, ns precision) from an origin (by
// default the earliest event). Files are written atomically.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "profiler/counters.h"
#include "profiler/cpu_trace.h"
#include "profiler/cupti.h"

namespace moebench::profiler {

// One point of a counter track: name "memory", values {("arena_used_bytes", ...)}.
struct CounterSample {
  std::string name;
  int64_t t_ns = 0;
  std::vector<std::pair<std::string, double>> values;
};

struct TraceInput {
  std::vector<TokenSample> steps;             // (n_steps)
  std::vector<CpuRange> cpu_ranges;           // (n_ranges)
  std::vector<std::string> cpu_thread_names;  // (n_threads), CpuRange::thread indexes it
  std::vector<GpuEvent> gpu_events;           // (n_events) CUPTI, any order
  std::vector<CounterSample> counters;        // (n_points)
  std::optional<int64_t> origin_ns;           // profiler clock; default: earliest event
  nlohmann::json metadata = nlohmann::json::object();  // written as "otherData"
};

// The memory timeline as counter points (bytes; device only where sampled).
std::vector<CounterSample> memory_counter_samples(const MemoryCounters& m);

// Gathers the profiler's steps, CPU ranges and memory timeline, plus GPU events
// (from CuptiCollector::take_events, or none).
TraceInput make_trace_input(const Profiler& p, std::vector<GpuEvent> gpu_events = {});

nlohmann::json chrome_trace_json(const TraceInput& in);

// Writes chrome_trace_json(in) to `path` atomically (PATH.tmp, fsync, rename);
// throws Error naming the path on failure.
void write_chrome_trace(const std::string& path, const TraceInput& in);

}  // namespace moebench::profiler
