// fuzz_suite.cpp: fuzz target for suite files: parse_suite, then expansion into run
// instances as `moebench run` does (settings resolved and validated). cases_from may
// name the shipped suites only, so the target never reads other files.
#include <cctype>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "suites/suite.h"
#include "tests/fuzz/fuzz_util.h"

using namespace moebench;
using namespace moebench::suites;

namespace {
Suite shipped_only(const std::string& name) {
  for (char c : name)
    if (!std::islower(static_cast<unsigned char>(c)) && c != '-') fail("fuzz: only shipped suites may be named");
  return load_suite(name);
}
std::string cpu(const std::string&) { return "cpu"; }
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool dir_set = [] {  // the shipped suites of this source tree, as the tests find them
    const char* src = std::getenv("MOEBENCH_SOURCE_DIR");
    setenv("MOEBENCH_SUITES_DIR", ((src && *src ? std::string(src) : MOEBENCH_SOURCE_DIR) + "/suites").c_str(), 1);
    return true;
  }();
  (void)dir_set;
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    Suite s = parse_suite(text, "fuzz.json", shipped_only);
    fuzz::check(!s.cases.empty(), "a suite without cases was accepted");
    std::vector<Instance> v = expand(s, Overrides{}, cpu);
    for (const Instance& i : v) {
      fuzz::check(i.spec != nullptr && i.spec >= s.cases.data() && i.spec < s.cases.data() + s.cases.size(),
                  "instance " + i.case_name + " does not point at a case of its suite");
      fuzz::check(i.repetitions > 0 && i.new_tokens > 0, "instance " + i.case_name + " runs nothing");
      i.reload_key();
    }
    count_reloads(v);
  } catch (const Error&) {
  }
  return 0;
}
