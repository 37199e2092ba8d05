// host_memory_test.cpp: the host memory a store is checked against (host_memory.h), read
// from /proc/meminfo's and the cgroup's texts, and the pinned tier refusing, in one line
// that names the bytes, the limit and what would fit, a store the host can never hold.
#include <gtest/gtest.h>

#include <string>

#include "common/error.h"
#include "engine/expert_host_store.h"
#include "engine/host_memory.h"
#include "engine/quant.h"
#include "engine/weight_source.h"

namespace host_memory_test {

using namespace moebench;

namespace {

const char* kMeminfo =
    "MemTotal:       65536000 kB\n"
    "MemFree:         1024000 kB\n"
    "MemAvailable:   40960000 kB\n"
    "Buffers:           12345 kB\n";

std::string error_of(uint64_t bytes, const HostMemory& m) {
  try {
    check_host_room(bytes, "the store's experts", "use fewer", m);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(HostMemory, MeminfoAndTheCgroupLimit) {
  const HostMemory m = parse_host_memory(kMeminfo, "max\n");
  EXPECT_EQ(65536000ull * 1024, m.total);
  EXPECT_EQ(40960000ull * 1024, m.available);
  EXPECT_EQ("MemTotal", m.limit);

  const HostMemory c = parse_host_memory(kMeminfo, "34359738368\n");  // a 32 GiB container
  EXPECT_EQ(34359738368ull, c.total);
  EXPECT_EQ(34359738368ull, c.available);  // never above what the cgroup allows
  EXPECT_EQ("cgroup memory.max", c.limit);

  const HostMemory big = parse_host_memory(kMeminfo, "1099511627776\n");  // a limit above the machine
  EXPECT_EQ(65536000ull * 1024, big.total);
  EXPECT_EQ("MemTotal", big.limit);

  const HostMemory none = parse_host_memory("", "");
  EXPECT_EQ(0u, none.total);
  EXPECT_EQ(0u, none.available);
  EXPECT_EQ("", error_of(uint64_t{1} << 50, none));  // unknown: nothing is checked

  const HostMemory own = host_memory();  // this machine's: Linux has both figures
  EXPECT_GT(own.total, 0u);
  EXPECT_LE(own.available, own.total);
}

TEST(HostMemory, MoreThanTheHostCanHoldIsRefused) {
  HostMemory m;
  m.total = 64ull << 30;
  m.available = 40ull << 30;
  m.limit = "MemTotal";
  EXPECT_EQ("", error_of(64ull << 30, m));        // fits (a warning past what is available)
  EXPECT_EQ("", error_of(10ull << 30, m));
  const std::string e = error_of((64ull << 30) + 1, m);
  EXPECT_NE(std::string::npos, e.find("the store's experts need 64.0 GiB of host memory, more than this host's 64.0 GiB "
                                      "(MemTotal): use fewer"))
      << e;
}

// The pinned tier checks before it allocates: on a host of 1 MiB the tiny model's bf16 store
// is refused, naming the int4 size and the disk tier; its int4 store, naming the disk tier only.
TEST(HostMemory, PinnedTierRefusesAStoreTheHostCannotHold) {
  const WeightSource w = WeightSource::open("synthetic:tiny", 3);
  HostStoreOptions o;
  o.progress = 0;
  o.host_memory = HostMemory{1ull << 20, 1ull << 20, "MemTotal"};
  const ModelConfig& c = w.config();
  const uint64_t n = static_cast<uint64_t>(c.num_hidden_layers) * static_cast<uint64_t>(c.num_local_experts);
  for (const QuantFormat f : {QuantFormat::bf16, QuantFormat::int4}) {
    SCOPED_TRACE(quant_format_name(f));
    std::string e;
    try {
      (void)ExpertHostStore::pinned(w, aligned_host_allocator(), o, f);
    } catch (const Error& err) {
      e = err.what();
    }
    EXPECT_NE(std::string::npos, e.find(std::string("the pinned tier's ") + std::to_string(n) + " " +
                                        quant_format_name(f) + " experts of tiny need "))
        << e;
    EXPECT_NE(std::string::npos, e.find("more than this host's 1.00 MiB (MemTotal)")) << e;
    EXPECT_NE(std::string::npos, e.find("expert_tier=disk reads each expert from the checkpoint")) << e;
    EXPECT_EQ(f == QuantFormat::bf16, e.find("expert_dtype=int4 holds them in ") != std::string::npos) << e;
  }
  o.host_memory = HostMemory{1ull << 40, 1ull << 40, "MemTotal"};
  EXPECT_EQ(n, static_cast<uint64_t>(ExpertHostStore::pinned(w, aligned_host_allocator(), o)->n_layers()) *
                   static_cast<uint64_t>(c.num_local_experts));
}

}  // namespace host_memory_test
