// cli_main.cpp: the CLI front shared by `moebench` and `moebench-dashboard`. Subcommands
// live in app/cmd_*.cpp (and ui/glue/cmd_dashboard.cpp) and register themselves
// (cli/command.h); cli_main() parses, dispatches and maps errors to exit codes:
// 0 ok, 1 runtime error (bad file, budget), 2 usage error. Both executables' main()
// call it (app/main.cpp, ui/glue/dashboard_main.cpp).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "cli/command.h"
#include "engine/build_info.h"
#include "engine/device_info.h"
#include "common/error.h"
#include "common/log.h"

namespace moebench::app {
std::vector<Command>& commands() {
  static std::vector<Command> c;
  return c;
}
}  // namespace moebench::app

int moebench::app::cli_main(int argc, char** argv) {
  using namespace moebench;
  log::init_from_env();
  CLI::App app{"moebench: run, profile and compare Mixtral-class MoE inference"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for all subcommands");
  app.set_version_flag("--version", std::string("moebench ") + kVersion + " (commit " + build_commit() + ", " +
                                        MOEBENCH_BUILD_TYPE + ", CUDA " + (cuda_compiled() ? "on" : "off") + ")");
  std::string level;
  app.add_option("--log-level", level, "error|warn|info|debug (default: warn, or MOEBENCH_LOG_LEVEL)")
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));

  auto& cmds = app::commands();
  std::sort(cmds.begin(), cmds.end(), [](const app::Command& a, const app::Command& b) { return a.name < b.name; });
  std::map<CLI::App*, app::Runner> runners;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.description);
    // Allow --log-level after the subcommand too.
    sub->add_option("--log-level", level, "error|warn|info|debug")
        ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
    runners[sub] = c.setup(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  try {
    if (!level.empty()) log::set_level(log::parse_level(level));
    for (auto* sub : app.get_subcommands()) return runners.at(sub)();
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of host memory\n");
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {  // a path the system refuses, e.g. a name too long
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
