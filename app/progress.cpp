// progress.cpp: see progress.h.
#include "app/progress.h"

#include <fmt/format.h>

#include "profiler/stats.h"

namespace moebench::app {

namespace {
constexpr int kBarWidth = 24;
}

void Progress::draw(int index, const std::string& what) {
  if (!tty_) return;
  int fill = total_ > 0 ? (finished_ * kBarWidth) / total_ : 0;
  std::string bar(static_cast<size_t>(fill), '#');
  bar.append(static_cast<size_t>(kBarWidth - fill), '.');
  std::string line = fmt::format("[{}] {}/{} {} {}", bar, index + 1, total_, label_, what);
  if (line.size() > 110) line = line.substr(0, 107) + "...";
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
  ev.on_plan = [this](int n) { total_ = n; };
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
    fmt::print(out_, "[{}/{}] {}: {}\n", i + 1, total_, label_, summary);
    std::fflush(out_);
  };
  return ev;
}

}  // namespace moebench::app
