// coverage.h: the edge-coverage map of the sanitizer build (MOEBENCH_SANITIZE).
// The input parsers are compiled with GCC's -fsanitize-coverage=trace-pc, which calls
// __sanitizer_cov_trace_pc() at every basic block; coverage.cpp counts each
// (previous block, block) edge in a fixed-size map. The fuzz driver clears the map
// before an input and reads it after, to keep inputs that reach new edges.
#pragma once
#include <cstddef>
#include <cstdint>

namespace moebench::fuzz {

inline constexpr size_t kCoverageMapSize = size_t{1} << 16;
// Hit counts per edge slot (saturating at 255) since the last clear.
uint8_t* coverage_map();
void clear_coverage();

}  // namespace moebench::fuzz
