// cmd_dashboard_launch.cpp: `moebench dashboard ARGS` runs `moebench-dashboard
// dashboard ARGS` from the folder moebench lives in. The dashboard (ImGui, GLFW,
// OpenGL) is its own executable so that `moebench` itself links no GL or X11
// library and runs on a headless GPU host; every argument, --help included, is
// handed over unparsed.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "cli/command.h"
#include "common/error.h"

namespace cmd_dashboard_launch {

namespace {

int launch(const std::vector<std::string>& args) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const fs::path exe = (ec ? fs::path(".") : self.parent_path()) / "moebench-dashboard";
  if (!fs::exists(exe))
    moebench::fail("the dashboard is not built: {} is missing (it needs libimgui-dev, libglfw3-dev, libopengl-dev and "
                   "libstb-dev at build time; scripts/lib.sh installs them)",
                   exe.string());
  std::vector<std::string> all = {exe.string(), "dashboard"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(exe.c_str(), argv.data());
  moebench::fail("{}: cannot run it ({})", exe.string(), std::strerror(errno));
}

moebench::app::Runner setup(CLI::App& sub) {
  sub.set_help_flag();  // --help goes to the dashboard itself
  sub.prefix_command();
  return [&sub] { return launch(sub.remaining()); };
}

}  // namespace

MOEBENCH_COMMAND(dashboard, "Interactive ImGui dashboard over results, traces and live runs (runs moebench-dashboard)",
                 setup);

}  // namespace cmd_dashboard_launch
