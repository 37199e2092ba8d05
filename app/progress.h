// progress.h: what `moebench run` shows on stderr while it works. On a terminal
// a one-line bar redrawn in place (instance i/n, case, phase, repetition, time
// elapsed and, once an instance has finished, the estimated time left: elapsed /
// finished x remaining); when stderr is not a terminal, plain lines: one per model
// load and one per finished instance, with the time elapsed. The data layer (suites/runner.h) only calls RunEvents; this file is
// the only one that knows about terminals.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

#include "suites/runner.h"

namespace moebench::app {

class Progress {
 public:
  explicit Progress(bool tty, std::FILE* out = stderr) : tty_(tty), out_(out) {}
  // Callbacks bound to this object (which must outlive the run).
  suites::RunEvents events();
  // Clears the bar (call before printing anything else to the terminal).
  void finish();

 private:
  void draw(int index, const std::string& what);
  // "elapsed 1:05, left ~3:10" (the estimate once an instance has finished).
  std::string timing() const;

  bool tty_;
  std::FILE* out_;
  int total_ = 0;
  int finished_ = 0;
  std::string label_;  // suite/case@stage of the current instance
  bool bar_shown_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Seconds as m:ss, or h:mm:ss from an hour on.
std::string clock_text(double seconds);

}  // namespace moebench::app
