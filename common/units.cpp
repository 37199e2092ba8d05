// units.cpp: parse_bytes / format_bytes / format_sig3 (see units.h).
#include "common/units.h"

#include <fmt/format.h>

#include <cctype>
#include <cmath>
#include <cstdlib>

#include "common/error.h"

namespace moebench {

uint64_t parse_bytes(const std::string& text) {
  auto bad = [&]() -> uint64_t {
    fail("'{}' is not a byte count; expected a number with an optional unit, e.g. 22GiB, 512MiB, 80GB, 4096",
         text);
  };
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  size_t num_begin = i;
  bool digits = false, dot = false;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || (text[i] == '.' && !dot))) {
    if (text[i] == '.') dot = true; else digits = true;
    ++i;
  }
  if (!digits) return bad();
  const double value = std::strtod(text.substr(num_begin, i - num_begin).c_str(), nullptr);
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  std::string unit;
  for (; i < text.size(); ++i) {
    if (std::isspace(static_cast<unsigned char>(text[i]))) break;
    unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  }
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  if (i != text.size()) return bad();
  double mult = 0;
  if (unit.empty() || unit == "b") mult = 1;
  else if (unit == "kb") mult = 1e3;
  else if (unit == "mb") mult = 1e6;
  else if (unit == "gb") mult = 1e9;
  else if (unit == "tb") mult = 1e12;
  else if (unit == "k" || unit == "kib") mult = 1024.0;
  else if (unit == "m" || unit == "mib") mult = 1024.0 * 1024;
  else if (unit == "g" || unit == "gib") mult = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "tib") mult = 1024.0 * 1024 * 1024 * 1024;
  else return bad();
  const double bytes = std::round(value * mult);
  if (!(bytes >= 0) || bytes > 1.8e19) return bad();
  return static_cast<uint64_t>(bytes);
}

std::string format_sig3(double v) {
  double a = std::fabs(v);
  if (a >= 99.95) return fmt::format("{:.0f}", v);
  if (a >= 9.995) return fmt::format("{:.1f}", v);
  return fmt::format("{:.2f}", v);
}

std::string format_bytes(double bytes) {
  if (!std::isfinite(bytes)) return "n/a";
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double a = std::fabs(bytes);
  if (a < 1024) return fmt::format("{:.0f} B", bytes);
  int u = 0;
  double v = bytes;
  while (std::fabs(v) >= 1023.95 && u < 5) {
    v /= 1024;
    ++u;
  }
  return format_sig3(v) + " " + kUnits[u];
}

}  // namespace moebench
