// launch_env.cpp: see launch_env.h.
#include "engine/cuda/launch_env.h"

#include <string>

#include "common/env.h"
#include "common/error.h"

namespace moebench::cuda {

int env_choice(const char* name, std::initializer_list<int> allowed, int unset) {
  const std::string v = env_str(name);
  if (v.empty()) return unset;
  std::string list;
  for (int a : allowed) {
    if (v == std::to_string(a)) return a;
    list += (list.empty() ? "" : ", ") + std::to_string(a);
  }
  fail("{}={}: expected one of {}", name, v, list);
}

int gemv_prefetch_from_env() {
  static const int pf = env_choice("MOEBENCH_GEMV_PREFETCH", {0, 2, 4}, 0);
  return pf;
}

}  // namespace moebench::cuda
