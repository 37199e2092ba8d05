// command.h: subcommands of the `moebench` CLI register themselves here, one file
// per subcommand (app/cmd_<name>.cpp), so adding a command touches no other file.
//
//   static int run_foo(const FooArgs&);
//   MOEBENCH_COMMAND(foo, "one-line description", [](CLI::App& sub) {
//     auto args = std::make_shared<FooArgs>();
//     sub.add_option("--x", args->x, "...")->required();
//     return [args] { return run_foo(*args); };   // exit code
//   });
//
// Errors: throw moebench::Error for bad input (printed as "error: ...", exit 1);
// CLI11 parse/validation errors exit 2.
#pragma once
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace moebench::app {

using Runner = std::function<int()>;
using Setup = std::function<Runner(CLI::App&)>;

struct Command {
  std::string name;
  std::string description;
  Setup setup;
};

std::vector<Command>& commands();
// Parses argv against the registered commands and runs the chosen one (cli/cli_main.cpp).
int cli_main(int argc, char** argv);

// Number checks for options, in place of CLI11's PositiveNumber and NonNegativeNumber,
// whose message spells their range out to DBL_MAX in over 300 digits: here
// "--new-tokens: expected a number > 0, got 0". The help names them as CLI11's do.
inline CLI::Validator number_check(bool zero_ok) {
  return CLI::Validator(
      [zero_ok](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v)) return "expected a number, got '" + s + "'";
        if (zero_ok ? v < 0 : v <= 0) return std::string("expected a number ") + (zero_ok ? ">= 0" : "> 0") + ", got " + s;
        return std::string();
      },
      zero_ok ? "NONNEGATIVE" : "POSITIVE");
}
inline const CLI::Validator kPositiveNumber = number_check(false);
inline const CLI::Validator kNonNegativeNumber = number_check(true);

inline bool register_command(Command c) {
  commands().push_back(std::move(c));
  return true;
}

}  // namespace moebench::app

#define MB_CAT2(a, b) a##b
#define MB_CAT(a, b) MB_CAT2(a, b)
#define MOEBENCH_COMMAND(name, desc, setup) \
  static const bool MB_CAT(kRegistered_, name) = ::moebench::app::register_command({#name, desc, setup})
