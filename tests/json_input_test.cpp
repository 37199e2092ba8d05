// json_input_test.cpp: every JSON input file moebench reads turns malformed JSON into
// an Error naming the file. nlohmann's parser throws out_of_range, not parse_error, for
// a number beyond a double (1e999): that too must be an Error, not a crash.
#include <gtest/gtest.h>

#include <string>

#include "engine/config.h"
#include "engine/error.h"
#include "engine/tokenizer.h"
#include "reports/results.h"
#include "suites/suite.h"
#include "test_util.h"
#include "variants/routing_trace.h"

using namespace moebench;

namespace {
// Runs f, expecting an Error whose message names `source`.
template <typename F>
void expect_error_naming(const std::string& source, F f) {
  try {
    f();
    ADD_FAILURE() << "expected an Error for " << source;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(source), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(JsonInput, NumberBeyondDoubleIsAnErrorNamingTheFile) {
  const std::string text = R"({"name": "x", "version": 1e999, "cases": [{"name": "a", "new_tokens": -1e309}]})";
  expect_error_naming("s.json", [&] { suites::parse_suite(text, "s.json"); });
  expect_error_naming("tok.json", [&] { Tokenizer::from_json_text(text, "tok.json"); });
  expect_error_naming("trace.json", [&] { trace_from_json_text(text, "trace.json"); });
  test::TempDir d;
  const std::string results = d.str("r.json"), config = d.str("config.json");
  test::write_file(results, text);
  test::write_file(config, text);
  expect_error_naming(results, [&] { reports::load_results(results); });
  expect_error_naming(config, [&] { load_config(config); });
}
