// arena_book.h: the bookkeeping of a device arena, without the device. Offsets into
// one region of `capacity` bytes are handed out first-fit from the lowest address
// (a bump allocator while nothing is freed), freed blocks are coalesced, and every
// live block carries a name. It records the peak, counts allocations (so "zero
// device allocations in steady-state decode" can be checked) and throws a sentence
// naming what did not fit, the budget, what is in use and the minimum budget that
// would fit. DeviceArena (engine/cuda/arena.h) puts a cudaMalloc'd base under it.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moebench {

struct ArenaStats {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;        // live, after alignment
  uint64_t peak_bytes = 0;        // max of used_bytes since construction / reset_peak
  uint64_t high_water_bytes = 0;  // max end offset ever handed out (fragmentation shows here)
  uint64_t alloc_count = 0;       // allocations ever made (monotonic)
  uint64_t free_count = 0;
  uint64_t live_count = 0;
  uint64_t largest_free_bytes = 0;
};

struct ArenaBlockInfo {
  uint64_t offset = 0;
  uint64_t bytes = 0;
  std::string name;
};

class ArenaBook {
 public:
  static constexpr uint64_t kDefaultAlignment = 256;
  // `label` names the arena in errors ("device arena").
  explicit ArenaBook(uint64_t capacity_bytes, uint64_t alignment = kDefaultAlignment,
                     std::string label = "device arena");

  // Returns the offset of a new block of at least `bytes` (rounded up to the alignment;
  // 0 bytes gives one aligned unit). Throws Error when it does not fit.
  uint64_t alloc(uint64_t bytes, const std::string& name);
  // Frees the block at `offset` (throws Error if no live block starts there).
  void free(uint64_t offset);
  // Would `bytes` fit now (in one free block)?
  bool fits(uint64_t bytes) const;

  ArenaStats stats() const;
  // Live blocks, by offset.
  std::vector<ArenaBlockInfo> blocks() const;
  void reset_peak() { peak_ = used_; }
  uint64_t capacity() const { return capacity_; }
  uint64_t alignment() const { return align_; }
  uint64_t round_up(uint64_t bytes) const;

 private:
  struct Live {
    uint64_t bytes;
    std::string name;
  };
  uint64_t capacity_, align_;
  std::string label_;
  std::map<uint64_t, uint64_t> free_;  // offset -> bytes
  std::map<uint64_t, Live> live_;      // offset -> block
  uint64_t used_ = 0, peak_ = 0, high_water_ = 0, allocs_ = 0, frees_ = 0;
};

}  // namespace moebench
