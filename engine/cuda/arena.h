// arena.h: DeviceArena — every device allocation of the engine (weights, KV cache,
// workspace, expert slots, cuBLAS workspace) comes from one cudaMalloc'd region of
// exactly the budget (--gpu-mem-budget). Bookkeeping (first-fit, named blocks, peak,
// allocation counter, the "does not fit" sentence) is ArenaBook (engine/arena_book.h),
// testable without a GPU. Host C++; no kernels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/arena_book.h"

namespace moebench::cuda {

// The bytes `bytes` takes in the memory plan: rounded up to the arena's 256-byte alignment.
inline uint64_t round256(uint64_t bytes) {
  constexpr uint64_t a = ArenaBook::kDefaultAlignment;
  return (bytes + a - 1) / a * a;
}

class DeviceArena {
 public:
  // Reserves `budget_bytes` of device memory with one cudaMalloc. Throws Error naming the
  // budget and the device's free memory when the reservation itself fails.
  explicit DeviceArena(uint64_t budget_bytes, std::string label = "device arena");
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  // A block of at least `bytes` (256-byte aligned), named for errors and listings.
  void* alloc(uint64_t bytes, const std::string& name);
  template <typename T>
  T* alloc_n(uint64_t count, const std::string& name) {
    return static_cast<T*>(alloc(count * sizeof(T), name));
  }
  void free(void* p);
  bool fits(uint64_t bytes) const { return book_.fits(bytes); }

  ArenaStats stats() const { return book_.stats(); }
  std::vector<ArenaBlockInfo> blocks() const { return book_.blocks(); }
  uint64_t capacity() const { return book_.capacity(); }
  uint64_t alloc_count() const { return book_.stats().alloc_count; }
  void reset_peak() { book_.reset_peak(); }
  void* base() const { return base_; }

 private:
  ArenaBook book_;
  char* base_ = nullptr;
};

}  // namespace moebench::cuda
