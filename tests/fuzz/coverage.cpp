// coverage.cpp: see coverage.h. Linked into moebench_core in the sanitizer build only;
// outside the fuzz driver nobody reads the map, so it costs the tests a few stores.
#include "tests/fuzz/coverage.h"

#include <cstring>

namespace moebench::fuzz {
namespace {
uint8_t g_map[kCoverageMapSize];
thread_local uintptr_t g_prev = 0;
}  // namespace

uint8_t* coverage_map() { return g_map; }
void clear_coverage() {
  std::memset(g_map, 0, sizeof g_map);
  g_prev = 0;
}

}  // namespace moebench::fuzz

// Parsers may run on OpenMP threads inside the tests: relaxed atomics keep the
// counting free of data races (the counts are a heuristic, exactness is not needed).
extern "C" void __sanitizer_cov_trace_pc();
extern "C" void __sanitizer_cov_trace_pc() {
  using moebench::fuzz::g_map;
  using moebench::fuzz::g_prev;
  // Relative to this function, so the map is the same from run to run under ASLR.
  const uintptr_t pc = reinterpret_cast<uintptr_t>(__builtin_return_address(0)) -
                       reinterpret_cast<uintptr_t>(&__sanitizer_cov_trace_pc);
  const size_t slot = static_cast<size_t>(((pc ^ g_prev) * 0x9E3779B97F4A7C15ull) >> 48);
  uint8_t n = __atomic_load_n(&g_map[slot], __ATOMIC_RELAXED);
  if (n != 255) __atomic_store_n(&g_map[slot], static_cast<uint8_t>(n + 1), __ATOMIC_RELAXED);
  g_prev = pc >> 1;
}
