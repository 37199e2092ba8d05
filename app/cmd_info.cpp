// cmd_info.cpp: `moebench info` prints the build, the backends and the devices.
#include <thread>

#include "app/command.h"
#include "engine/build_info.h"
#include "engine/config.h"
#include "engine/device_info.h"

namespace {
int run() {
  using namespace moebench;
  fmt::print("moebench commit {} ({} build)\n", moebench::build_commit(), MOEBENCH_BUILD_TYPE);
  fmt::print("host: {} hardware threads\n", std::thread::hardware_concurrency());
  auto devs = cuda_devices();
  fmt::print("backends: cpu{}\n", cuda_compiled() ? ", cuda (compiled in)" : " (cuda not compiled in)");
  if (cuda_compiled() && devs.empty()) fmt::print("cuda devices: none ({})\n", cuda_unavailable_reason());
  for (auto& d : devs)
    fmt::print("cuda device {}: {}, cc {}.{}, {} SMs, {:.1f} GiB, driver {}\n", d.index, d.name, d.cc_major,
               d.cc_minor, d.sms, d.memory_bytes / 1073741824.0, d.driver);
  std::string p;
  for (auto& n : preset_names()) p += (p.empty() ? "" : ", ") + n;
  fmt::print("presets: {}\n", p);
  return 0;
}
}  // namespace

MOEBENCH_COMMAND(info, "Print the build, backends and devices", [](CLI::App&) { return [] { return run(); }; });
