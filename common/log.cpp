// log.cpp: see log.h.
#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "common/error.h"

namespace moebench::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::warn)};
std::mutex g_mu;
const char* kNames[] = {"error", "warn", "info", "debug"};
}  // namespace

Level level() { return static_cast<Level>(g_level.load(std::memory_order_relaxed)); }
void set_level(Level l) { g_level.store(static_cast<int>(l)); }

Level parse_level(const std::string& s) {
  for (int i = 0; i < 4; ++i)
    if (s == kNames[i]) return static_cast<Level>(i);
  fail("log level '{}' is not one of error|warn|info|debug", s);
}

void init_from_env() {
  if (const char* e = std::getenv("MOEBENCH_LOG_LEVEL"); e && *e) {
    try {
      set_level(parse_level(e));
    } catch (const Error& err) {
      std::fprintf(stderr, "[warn] MOEBENCH_LOG_LEVEL: %s\n", err.what());
    }
  }
}

void write(Level l, const std::string& msg) {
  std::lock_guard<std::mutex> lock(g_mu);
  std::fprintf(stderr, "[%s] %s\n", kNames[static_cast<int>(l)], msg.c_str());
}

}  // namespace moebench::log
