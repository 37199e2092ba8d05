// progress.h: a byte-count progress bar on stderr for long loads (weights uploaded or
// generated on the GPU, expert stores filled and pinned). Only for loads of at least
// `min_bytes` (default 1 GiB); a redrawn bar when stderr is a terminal, otherwise a
// plain line at every quarter, so logs stay readable. Plain C++, engine thread only.
#pragma once
#include <cstdint>
#include <string>

namespace moebench {

class Progress {
 public:
  static constexpr uint64_t kDefaultMinBytes = 1ull << 30;
  Progress(std::string what, uint64_t total_bytes, uint64_t min_bytes = kDefaultMinBytes);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void add(uint64_t bytes);
  void finish();  // prints the final state (once)
  bool active() const { return active_; }

 private:
  void draw(bool final);
  std::string what_;
  uint64_t total_ = 0, done_ = 0;
  bool active_ = false, tty_ = false, finished_ = false;
  int64_t start_ns_ = 0, last_draw_ns_ = 0;
  int next_quarter_ = 1;
};

}  // namespace moebench
