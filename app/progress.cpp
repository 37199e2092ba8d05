// progress.cpp: see progress.h.
#include "app/progress.h"

#include <fmt/format.h>

#include <algorithm>

#include "profiler/stats.h"

namespace moebench::app {

namespace {
constexpr int kBarWidth = 24;
}

std::string clock_text(double seconds) {
  const long t = seconds > 0 ? static_cast<long>(seconds + 0.5) : 0;
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
  return fmt::format("{}:{:02}", t / 60, t % 60);
}

std::string Progress::timing() const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string s = "elapsed " + clock_text(elapsed);
  if (finished_ > 0 && finished_ < total_) s += ", left ~" + clock_text(elapsed / finished_ * (total_ - finished_));
  return s;
}

void Progress::draw(int index, const std::string& what) {
  if (!tty_) return;
  int fill = total_ > 0 ? (finished_ * kBarWidth) / total_ : 0;
  std::string bar(static_cast<size_t>(fill), '#');
  bar.append(static_cast<size_t>(kBarWidth - fill), '.');
  std::string line = fmt::format("[{}] {}/{} {} {}", bar, index + 1, total_, label_, what);
  const std::string t = " (" + timing() + ")";
  if (line.size() + t.size() > 110) line = line.substr(0, 107 - std::min<size_t>(t.size(), 60)) + "...";
  line += t;
  fmt::print(out_, "\r\033[K{}", line);
  std::fflush(out_);
  bar_shown_ = true;
}

void Progress::finish() {
  if (tty_ && bar_shown_) {
    fmt::print(out_, "\r\033[K");
    std::fflush(out_);
  }
  bar_shown_ = false;
}

suites::RunEvents Progress::events() {
  suites::RunEvents ev;
  ev.on_plan = [this](int n) {
    total_ = n;
    start_ = std::chrono::steady_clock::now();
  };
  ev.on_instance_start = [this](int i, const suites::Instance& in) {
    label_ = fmt::format("{}/{}@{}", in.suite, in.case_name, in.settings.stage);
    draw(i, "");
  };
  ev.on_step = [this](int i, const char* phase, int done, int total) {
    if (std::string(phase) == "load") {
      if (!tty_ && done == 0) fmt::print(out_, "[{}/{}] loading the model for {}\n", i + 1, total_, label_);
      draw(i, done == 0 ? "loading model" : "");
      return;
    }
    draw(i, fmt::format("{} {}/{}", phase, done, total));
  };
  ev.on_instance_end = [this](int i, const reports::Case& c) {
    ++finished_;
    std::string summary =
        c.status == reports::CaseStatus::failed
            ? "FAILED: " + c.error
            : fmt::format("decode {}, TTFT warm {}", profiler::format_rate(c.aggregates.decode_tok_s, "tok/s"),
                          profiler::format_ns(c.aggregates.ttft_warm_ns));
    finish();
    fmt::print(out_, "[{}/{}] {}: {} ({})\n", i + 1, total_, label_, summary, timing());
    std::fflush(out_);
  };
  return ev;
}

}  // namespace moebench::app
