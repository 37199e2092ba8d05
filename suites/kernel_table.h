// kernel_table.h: GPU time per step by kernel, from CUPTI records (profiler/cupti.h):
// the one table `bench --kernel-profile` and `profile-check` write. Device work only
// (kernels, copies, memsets; API records are host time), grouped by name with the
// namespace noise, arguments and template parameters cut, largest first.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "profiler/cupti.h"

namespace moebench::suites {

// "void moebench::cuda::(anonymous namespace)::gemv<bf16>(...)" -> "gemv".
std::string short_kernel_name(const std::string& demangled);

// The device records that start in [t0_ns, t1_ns), per step over `steps` steps:
//   {"decode_steps": steps, "gpu_ns_per_step": x, "span_ns_per_step": s, "idle_ns_per_step": i,
//    "kernels": [{"kernel", "category", "ns_per_step", "exposed_ns_per_step", "launches_per_step",
//    "share"}, ...]}
// ns_per_step sums durations (overlapping records each in full: a kernel that waits for
// the one before, as with programmatic launch, counts its wait). exposed_ns_per_step is
// what a kernel adds to the timeline: each instant where records run belongs to the one
// of them that started first (in a chain of early-started kernels, the one the others
// wait for), so a kernel's exposed time is its time past the end of everything started
// before it. The exposed times of all records plus the idle gaps (no record running) add
// up to the span (first start to last end).
// `top` > 0 keeps only the first `top` rows (the totals still count every record).
nlohmann::json kernel_table(const std::vector<profiler::GpuEvent>& events, int64_t t0_ns, int64_t t1_ns, int steps,
                            size_t top = 0);

}  // namespace moebench::suites
