// units.h: byte counts as people write them ("22GiB", "512MiB", "80GB", "1.5GiB",
// "4096") and back. One parser for the CLI (--gpu-mem-budget) and the arena; one
// formatter for every printed byte count. Plain C++ (no CUDA).
#pragma once
#include <cstdint>
#include <limits>
#include <string>

namespace moebench {

// Parses a byte count: a number (integer or decimal) followed by an optional unit,
// case-insensitive: B, KB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB (powers of 1024),
// K/M/G/T (treated as binary: KiB..TiB). Spaces between number and unit are allowed.
// Throws Error naming the text and the accepted forms when it is not one.
uint64_t parse_bytes(const std::string& text);

// Binary units with three significant digits: "512 B", "1.50 KiB", "22.0 GiB", "512 MiB";
// "n/a" when not finite. The one byte formatter (messages, reports, dashboard).
std::string format_bytes(double bytes);

// A value in [0, 1000) with three significant digits: "1.50", "22.0", "512". The
// number part of format_bytes and of the rate/duration formatters (profiler/stats.h).
std::string format_sig3(double v);

// NaN: the value of a quantity that was not measured.
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// `x` rounded up to a multiple of `a` (a > 0): offsets and sizes aligned for arenas and slots.
constexpr uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace moebench
