// run_header.cpp: see run_header.h.
#include "suites/run_header.h"

#include <ctime>
#include <fstream>

#include "engine/build_info.h"
#include "suites/machine.h"

namespace moebench::suites {

std::string utc_now(const char* format) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

std::vector<std::string> own_command_line(std::vector<std::string> fallback) {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> out;
  for (std::string arg; std::getline(f, arg, '\0');) out.push_back(arg);
  return out.empty() ? fallback : out;
}

reports::Results run_header(const std::vector<std::string>& command_line, const std::string& backend,
                            bool measure_bandwidth) {
  reports::Results r;
  r.run.tool_version = kVersion;
  r.run.commit = build_commit();
  r.run.build_type = MOEBENCH_BUILD_TYPE;
  r.run.start_time = utc_now();
  r.run.command_line = command_line;
  r.host = host_info();
  r.device = device_info(backend, measure_bandwidth);
  return r;
}

nlohmann::json knob_json(const std::string& v) {
  if (v == "true") return true;
  if (v == "false") return false;
  if (!v.empty() && v.find_first_not_of("0123456789") == std::string::npos && v.size() < 18) return std::stoll(v);
  return v;
}

}  // namespace moebench::suites
