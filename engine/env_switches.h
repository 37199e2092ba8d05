// env_switches.h: every MOEBENCH_* environment variable the engine and the tools read, with
// its values (the default first), what it does and where it is written up. Most are
// switches for measuring one build several ways (A/B runs, tools/device_run.sh PARTS=ab):
// each is read where it acts (once per process unless stated), and a value outside its list
// is an error naming the variable there. `moebench info` prints this table with the values
// set in the environment. A ctest holds the table to the source: every "MOEBENCH_..."
// string the engine, the app or the suites read is listed here, and every name listed here
// is read somewhere.
#pragma once
#include <vector>

namespace moebench {

struct EnvSwitchDoc {
  const char* name;
  const char* values;  // the default first
  const char* what;
  const char* doc;     // where it is written up
};

const std::vector<EnvSwitchDoc>& env_switch_docs();

}  // namespace moebench
