// json_input_test.cpp: inputs the fuzz targets found mishandled (tests/fuzz/): every JSON
// file moebench reads turns them into an Error naming the file, never a crash or
// undefined behaviour. nlohmann's parser throws out_of_range, not parse_error, for a
// number beyond a double (1e999): that too must be an Error.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"
#include "common/error.h"
#include "engine/tokenizer.h"
#include "profiler/stats.h"
#include "reports/results.h"
#include "suites/suite.h"
#include "test_util.h"
#include "tests/results_fixture.h"
#include "variants/routing_trace.h"

namespace json_input_test {

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

// Latencies near 2^63 ns summed past the int64 range in the results reader's prefill
// time and in summarize() (signed overflow, reported by UBSan when rendering a report).
TEST(JsonInput, LatenciesSummingPast64BitsAreAnError) {
  reports::Results r = moebench::test::make_results();
  nlohmann::json j = reports::to_json(r);
  auto& lat = j["cases"][0]["samples"][0]["latency_ns"];
  ASSERT_GE(lat.size(), 2u);
  lat[0] = std::numeric_limits<int64_t>::max();
  lat[1] = std::numeric_limits<int64_t>::max();
  test::TempDir d;
  const std::string path = d.str("r.json");
  test::write_file(path, j.dump());
  try {
    reports::load_results(path);
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cases[0].samples[0].latency_ns sums to more than 2^63 ns"), std::string::npos)
        << e.what();
  }
}

TEST(JsonInput, SummarizeSaturatesItsSum) {
  const int64_t big = std::numeric_limits<int64_t>::max();
  std::vector<int64_t> v = {big, big, 3};
  profiler::Stats st = profiler::summarize(v);
  EXPECT_EQ(st.sum_ns, big);
  EXPECT_EQ(st.max_ns, big);
  EXPECT_GT(st.mean_ns, 6e18);  // from the long double sum, not the saturated one
}

}  // namespace json_input_test
