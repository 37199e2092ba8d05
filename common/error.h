// error.h: the one error type of moebench. Every failure that a user can cause
// (bad file, bad flag, budget too small) is an Error with a one-line message that
// names the file/field/value and what was expected; the CLI prints it and exits 1.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace moebench {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// fail("{}: tensor {} has shape {}, expected {}", file, name, a, b) throws Error.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace moebench
