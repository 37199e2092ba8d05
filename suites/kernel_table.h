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
//   {"decode_steps": steps, "gpu_ns_per_step": x, "kernels": [{"kernel", "category",
//    "ns_per_step", "launches_per_step", "share"}, ...]}
// `top` > 0 keeps only the first `top` rows (the totals still count every record).
nlohmann::json kernel_table(const std::vector<profiler::GpuEvent>& events, int64_t t0_ns, int64_t t1_ns, int steps,
                            size_t top = 0);

}  // namespace moebench::suites
