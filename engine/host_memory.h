// host_memory.h: how much host memory this process may fill, so that an expert store larger
// than the machine is refused in one line before it is allocated (a pinned Mixtral-8x7B in
// bf16 is 87.5 GiB; the desktops its users have often hold 32-64 GiB), instead of failing
// deep inside the allocator or under the kernel's OOM killer.
#pragma once
#include <cstdint>
#include <string>

namespace moebench {

struct HostMemory {
  uint64_t total = 0;      // what the process can ever hold: MemTotal, or the cgroup's memory.max when lower (0: unknown)
  uint64_t available = 0;  // what it can take now without swapping: MemAvailable, at most total (0: unknown)
  std::string limit;       // where `total` comes from ("MemTotal", "cgroup memory.max")
};

// From the texts of /proc/meminfo and of the cgroup v2 file memory.max (empty when absent;
// "max" is no limit).
HostMemory parse_host_memory(const std::string& meminfo, const std::string& cgroup_max);
// This machine's (Linux: /proc/meminfo and /sys/fs/cgroup/memory.max).
HostMemory host_memory();

// Before allocating `bytes` of host memory for `what`: an Error when they exceed m.total (they
// can never fit), naming the bytes, the limit and `advice`; a warning when they exceed
// m.available (the host will swap or reclaim its page cache). Unknown figures check nothing.
void check_host_room(uint64_t bytes, const std::string& what, const std::string& advice, const HostMemory& m);

}  // namespace moebench
