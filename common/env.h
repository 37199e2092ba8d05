// env.h: reading environment variables (empty when unset).
#pragma once
#include <cstdlib>
#include <string>

namespace moebench {

inline std::string env_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

}  // namespace moebench
