// progress.cpp: see progress.h.
#include "engine/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "common/clock.h"
#include "common/units.h"

namespace moebench {

using profiler::now_ns;

Progress::Progress(std::string what, uint64_t total_bytes, uint64_t min_bytes)
    : what_(std::move(what)), total_(total_bytes), active_(total_bytes >= min_bytes && total_bytes > 0),
      tty_(isatty(STDERR_FILENO) != 0), start_ns_(now_ns()) {
  if (active_ && !tty_) fmt::print(stderr, "{}: {} ...\n", what_, format_bytes(total_));
}

Progress::~Progress() { finish(); }

void Progress::add(uint64_t bytes) {
  done_ += bytes;
  if (!active_ || finished_) return;
  const int64_t t = now_ns();
  if (tty_) {
    if (t - last_draw_ns_ >= 100'000'000) {
      last_draw_ns_ = t;
      draw(false);
    }
  } else {
    while (next_quarter_ < 4 && done_ * 4 >= total_ * static_cast<uint64_t>(next_quarter_)) {
      draw(false);
      ++next_quarter_;
    }
  }
}

void Progress::finish() {
  if (!active_ || finished_) return;
  finished_ = true;
  draw(true);
}

void Progress::draw(bool final) {
  const double frac = total_ ? std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_)) : 1.0;
  const double s = static_cast<double>(now_ns() - start_ns_) / 1e9;
  const double gbps = s > 0 ? static_cast<double>(done_) / s / 1e9 : 0.0;
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(frac * kWidth);
    fmt::print(stderr, "\r{} [{}{}] {:3.0f}% {} / {} {:.1f} GB/s{}", what_, std::string(filled, '#'),
               std::string(kWidth - filled, '.'), frac * 100, format_bytes(done_), format_bytes(total_), gbps,
               final ? fmt::format(" in {:.1f} s\n", s) : "");
  } else {
    fmt::print(stderr, "{}: {:3.0f}% {} / {} {:.1f} GB/s{}\n", what_, frac * 100, format_bytes(done_),
               format_bytes(total_), gbps, final ? fmt::format(", done in {:.1f} s", s) : "");
  }
  std::fflush(stderr);
}

}  // namespace moebench
