// host_memory.cpp: see host_memory.h.
#include "engine/host_memory.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/log.h"
#include "common/units.h"

namespace moebench {

namespace {

// The value of "Key:   N kB" in /proc/meminfo's text, in bytes (0: absent).
uint64_t meminfo_bytes(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size() + 1, key + ":") != 0) continue;
    std::istringstream v(line.substr(key.size() + 1));
    uint64_t n = 0;
    std::string unit;
    if (!(v >> n)) return 0;
    v >> unit;
    return unit == "kB" ? n * 1024 : n;
  }
  return 0;
}

// A cgroup file's one number (0: absent, empty or "max").
uint64_t cgroup_bytes(const std::string& text) {
  std::istringstream in(text);
  uint64_t n = 0;
  return in >> n ? n : 0;
}

// A file's text, empty where it does not exist (no cgroup v2, not Linux).
std::string text_if_present(const char* path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec) ? read_file(path) : std::string();
}

}  // namespace

HostMemory parse_host_memory(const std::string& meminfo, const std::string& cgroup_max) {
  HostMemory m;
  m.total = meminfo_bytes(meminfo, "MemTotal");
  m.available = meminfo_bytes(meminfo, "MemAvailable");
  if (m.total) m.limit = "MemTotal";
  const uint64_t max = cgroup_bytes(cgroup_max);
  if (max && (!m.total || max < m.total)) {
    m.total = max;
    m.limit = "cgroup memory.max";
  }
  if (m.total) m.available = std::min(m.available, m.total);
  return m;
}

HostMemory host_memory() {
  return parse_host_memory(text_if_present("/proc/meminfo"), text_if_present("/sys/fs/cgroup/memory.max"));
}

void check_host_room(uint64_t bytes, const std::string& what, const std::string& advice, const HostMemory& m) {
  if (m.total && bytes > m.total)
    fail("{} need {} of host memory, more than this host's {} ({}): {}", what, format_bytes(static_cast<double>(bytes)),
         format_bytes(static_cast<double>(m.total)), m.limit, advice);
  if (m.available && bytes > m.available)
    log::warn("{} need {} of host memory and {} is available now: the host will reclaim its page cache or swap", what,
              format_bytes(static_cast<double>(bytes)), format_bytes(static_cast<double>(m.available)));
}

}  // namespace moebench
