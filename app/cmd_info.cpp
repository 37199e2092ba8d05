// cmd_info.cpp: `moebench info` prints the build, the backends, the devices, the
// model presets and every setting with its values and default.
#include <cstdlib>
#include <thread>

#include "cli/command.h"
#include "engine/build_info.h"
#include "model/config.h"
#include "engine/device_info.h"
#include "engine/env_switches.h"
#include "model/settings.h"
#include "variants/cache_policy.h"
#include "variants/routing.h"

namespace cmd_info {

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
  fmt::print("\nsettings (--set key=value; stage presets set several at once):\n");
  for (const SettingDoc& d : setting_docs())
    fmt::print("  {:<24} default {:<10} {}\n", d.key, d.default_value.empty() ? "(empty)" : d.default_value, d.values);
  fmt::print("\ncache policies:\n");
  for (const CachePolicyInfo& c : cache_policies()) fmt::print("  {:<24} {}\n", c.name, c.description);
  fmt::print("\nrouting sources:\n");
  for (const RoutingSourceInfo& r : routing_sources())
    fmt::print("  {:<24} {}\n", r.kind == RoutingKind::trace ? "trace:FILE" : r.name, r.description);
  fmt::print("\nenvironment switches (read where they act; the values list the default first; a value outside them is\n"
             "an error naming the variable; most measure one build several ways, tools/device_run.sh PARTS=ab):\n");
  for (const EnvSwitchDoc& e : env_switch_docs()) {
    const char* v = std::getenv(e.name);
    fmt::print("  {:<30} {}{}\n      {} ({})\n", e.name, e.values, v && *v ? fmt::format("  [set here: {}]", v) : "",
               e.what, e.doc);
  }
  return 0;
}
}  // namespace

MOEBENCH_COMMAND(info, "Print the build, backends and devices", [](CLI::App&) { return [] { return run(); }; });

}  // namespace cmd_info
