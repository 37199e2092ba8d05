// fuzz_results.cpp: fuzz target for results files (load_results, as report, compare
// and the dashboard read them). An accepted file must be written back by
// results_to_string into text that loads to the same JSON, and must render as
// Markdown and HTML (what `moebench report` does with it).
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "reports/html.h"
#include "reports/markdown.h"
#include "reports/results.h"
#include "tests/fuzz/fuzz_util.h"

using namespace moebench;
using namespace moebench::reports;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input("results.json", data, size);
  try {
    Results r = load_results(path);
    const std::string text = results_to_string(r);
    Results back;
    try {
      back = results_from_json(nlohmann::json::parse(text), "rewritten");
    } catch (const std::exception& e) {
      fuzz::check(false, std::string("results_to_string wrote a file that does not load back: ") + e.what());
    }
    fuzz::check(to_json(back) == to_json(r), "results change in a round trip");
    render_markdown(r);
    render_html(r);
  } catch (const Error&) {
  }
  return 0;
}
