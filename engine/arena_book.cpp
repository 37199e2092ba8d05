// arena_book.cpp: first-fit free list with coalescing (see arena_book.h).
#include "engine/arena_book.h"

#include <algorithm>

#include "common/error.h"
#include "common/units.h"

namespace moebench {

ArenaBook::ArenaBook(uint64_t capacity_bytes, uint64_t alignment, std::string label)
    : capacity_(capacity_bytes), align_(alignment), label_(std::move(label)) {
  if (align_ == 0 || (align_ & (align_ - 1)) != 0) fail("{}: alignment {} is not a power of two", label_, align_);
  capacity_ -= capacity_ % align_;
  if (capacity_ > 0) free_[0] = capacity_;
}

uint64_t ArenaBook::round_up(uint64_t bytes) const {
  if (bytes == 0) bytes = 1;
  return (bytes + align_ - 1) / align_ * align_;
}

bool ArenaBook::fits(uint64_t bytes) const {
  const uint64_t need = round_up(bytes);
  for (auto& [off, sz] : free_)
    if (sz >= need) return true;
  return false;
}

uint64_t ArenaBook::alloc(uint64_t bytes, const std::string& name) {
  const uint64_t need = round_up(bytes);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < need) continue;
    const uint64_t off = it->first, rest = it->second - need;
    free_.erase(it);
    if (rest > 0) free_[off + need] = rest;
    live_[off] = Live{need, name};
    used_ += need;
    peak_ = std::max(peak_, used_);
    high_water_ = std::max(high_water_, off + need);
    ++allocs_;
    return off;
  }
  // Does not fit: say what, against which budget, and what budget would.
  uint64_t largest_free = 0;
  for (auto& [off, sz] : free_) largest_free = std::max(largest_free, sz);
  std::string biggest;
  std::vector<std::pair<uint64_t, const std::string*>> by_size;
  for (auto& [off, b] : live_) by_size.emplace_back(b.bytes, &b.name);
  std::sort(by_size.begin(), by_size.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (size_t i = 0; i < by_size.size() && i < 3; ++i)
    biggest += fmt::format("{}{} ({})", i ? ", " : "", *by_size[i].second, format_bytes(by_size[i].first));
  fail("{}: '{}' needs {} ({} bytes) but does not fit: budget {}, in use {} by {} allocation(s){}{}, largest free "
       "block {}; a budget of at least {} ({} bytes) would fit",
       label_, name, format_bytes(need), need, format_bytes(capacity_), format_bytes(used_), live_.size(),
       biggest.empty() ? "" : ", largest: ", biggest, format_bytes(largest_free), format_bytes(used_ + need),
       used_ + need);
}

void ArenaBook::free(uint64_t offset) {
  auto it = live_.find(offset);
  if (it == live_.end()) fail("{}: free of offset {} which is not a live allocation", label_, offset);
  uint64_t off = offset, sz = it->second.bytes;
  used_ -= sz;
  live_.erase(it);
  ++frees_;
  // Coalesce with the next and the previous free block.
  auto next = free_.lower_bound(off);
  if (next != free_.end() && next->first == off + sz) {
    sz += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == off) {
      prev->second += sz;
      return;
    }
  }
  free_[off] = sz;
}

ArenaStats ArenaBook::stats() const {
  ArenaStats s;
  s.capacity_bytes = capacity_;
  s.used_bytes = used_;
  s.peak_bytes = peak_;
  s.high_water_bytes = high_water_;
  s.alloc_count = allocs_;
  s.free_count = frees_;
  s.live_count = live_.size();
  for (auto& [off, sz] : free_) s.largest_free_bytes = std::max(s.largest_free_bytes, sz);
  return s;
}

std::vector<ArenaBlockInfo> ArenaBook::blocks() const {
  std::vector<ArenaBlockInfo> v;
  for (auto& [off, b] : live_) v.push_back({off, b.bytes, b.name});
  return v;
}

}  // namespace moebench
