// arena_test.cpp: the byte-count parser and the arena bookkeeping (no GPU needed).
#include <gtest/gtest.h>

#include "engine/arena_book.h"
#include "common/error.h"
#include "common/units.h"

namespace arena_test {

using namespace moebench;

TEST(Units, ParsesBinaryAndDecimal) {
  EXPECT_EQ(parse_bytes("22GiB"), 22ull << 30);
  EXPECT_EQ(parse_bytes("512MiB"), 512ull << 20);
  EXPECT_EQ(parse_bytes("80GB"), 80'000'000'000ull);
  EXPECT_EQ(parse_bytes("4096"), 4096ull);
  EXPECT_EQ(parse_bytes("1.5GiB"), 3ull << 29);
  EXPECT_EQ(parse_bytes("16 g"), 16ull << 30);
  EXPECT_EQ(parse_bytes("10kb"), 10'000ull);
  EXPECT_EQ(parse_bytes("7B"), 7ull);
}

TEST(Units, RejectsWithASentence) {
  for (const char* bad : {"", "GiB", "12XB", "1.2.3GB", "-5GiB", "5 GiB extra"}) {
    try {
      parse_bytes(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("22GiB"), std::string::npos) << e.what();
    }
  }
}

TEST(Units, Formats) {
  EXPECT_EQ(format_bytes(17), "17 B");
  EXPECT_EQ(format_bytes(22ull << 30), "22.0 GiB");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
}

TEST(ArenaBook, BumpsFreesCoalescesAndCounts) {
  ArenaBook a(4096, 256);
  uint64_t x = a.alloc(100, "x"), y = a.alloc(256, "y"), z = a.alloc(1000, "z");
  EXPECT_EQ(x, 0u);
  EXPECT_EQ(y, 256u);
  EXPECT_EQ(z, 512u);
  EXPECT_EQ(a.stats().used_bytes, 256u + 256u + 1024u);
  a.free(y);
  EXPECT_EQ(a.alloc(200, "y2"), 256u);  // first fit reuses the hole
  a.free(256);
  a.free(x);
  a.free(z);  // everything coalesces back into one block
  ArenaStats s = a.stats();
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.largest_free_bytes, 4096u);
  EXPECT_EQ(s.peak_bytes, 1536u);
  EXPECT_EQ(s.alloc_count, 4u);
  EXPECT_EQ(s.free_count, 4u);
  EXPECT_EQ(a.alloc(4096, "all"), 0u);
}

TEST(ArenaBook, TooBigNamesWhatBudgetAndMinimum) {
  ArenaBook a(1 << 20, 256, "device arena");
  a.alloc(600 << 10, "kv cache");
  try {
    a.alloc(512 << 10, "expert slots");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("expert slots"), std::string::npos) << m;
    EXPECT_NE(m.find("budget 1.00 MiB"), std::string::npos) << m;
    EXPECT_NE(m.find("kv cache"), std::string::npos) << m;
    // 600 KiB in use + 512 KiB requested = 1112 KiB = 1138688 bytes.
    EXPECT_NE(m.find("1138688 bytes) would fit"), std::string::npos) << m;
  }
  EXPECT_THROW(a.free(12345), Error);
  EXPECT_FALSE(a.fits(512 << 10));
  EXPECT_TRUE(a.fits(400 << 10));
}

}  // namespace arena_test
