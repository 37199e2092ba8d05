// cli_flags_test.cpp: flags a subcommand lists in --help are honoured and recorded:
// --version, --threads, --format (csv, jsonl, compare's json), and bench's --stage / --routing (which it once accepted and
// dropped, recording stage "custom" and routing "model").
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <vector>
#include <nlohmann/json.hpp>

#include "engine/build_info.h"
#include "reports/results.h"
#include "test_util.h"

using namespace moebench;
using test::TempDir;

TEST(CliFlags, VersionNamesVersionAndCommit) {
  TempDir d;
  test::CliRun r = test::run_moebench({"--version"}, d);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find(std::string("moebench ") + kVersion), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(build_commit()), std::string::npos) << r.out;
}

TEST(CliFlags, BenchRecordsStageRoutingAndSet) {
  TempDir d;
  test::CliRun r = test::run_moebench({"bench", "--backend", "cpu", "--preset", "tiny", "--stage", "P1", "--routing",
                                       "uniform", "--set", "cache_slots=20", "--threads", "1", "--prompt-tokens",
                                       "8", "--new-tokens", "4", "--out", d.str("b.json")},
                                      d);
  ASSERT_EQ(r.code, 0) << r.err;
  reports::Results b = reports::load_results(d.str("b.json"));
  ASSERT_FALSE(b.cases.empty());
  for (const reports::Case& c : b.cases) {
    EXPECT_EQ(c.settings.stage, "P1");
    EXPECT_EQ(c.settings.knobs.at("routing"), "uniform");
    EXPECT_EQ(c.settings.knobs.at("cache_slots"), "20");
  }
}

TEST(CliFlags, ThreadsIsCheckedAndTakenByRun) {
  TempDir d;
  test::CliRun bad = test::run_moebench({"generate", "--preset", "tiny", "--backend", "cpu", "--threads", "0",
                                         "--prompt", "a", "--max-new-tokens", "1"},
                                        d);
  EXPECT_EQ(bad.code, 2) << bad.err;  // a usage error, before any work
  test::CliRun ok = test::run_moebench({"run", "--suite", test::source_dir() + "/suites/short.json", "--backend", "cpu",
                                        "--model", "tiny", "--threads", "1", "--repetitions", "1", "--out",
                                        d.str("r.json")},
                                       d);
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(reports::load_results(d.str("r.json")).cases.size(), 2u);
}

TEST(CliFlags, FormatsCsvJsonlAndCompareJson) {
  TempDir d;
  test::CliRun run = test::run_moebench({"run", "--suite", test::source_dir() + "/suites/short.json", "--backend", "cpu",
                                         "--model", "tiny", "--repetitions", "2", "--format", "csv", "--out",
                                         d.str("r.json")},
                                        d);
  ASSERT_EQ(run.code, 0) << run.err;
  // A header of stable keys, then one row per case.
  ASSERT_EQ(run.out.rfind("suite,case,stage,status,", 0), 0u) << run.out;
  EXPECT_NE(run.out.find("decode_tok_s"), std::string::npos) << run.out;
  EXPECT_EQ(std::count(run.out.begin(), run.out.end(), '\n'), 3) << run.out;
  std::vector<std::string> keys;  // every key once
  std::stringstream header(run.out.substr(0, run.out.find('\n')));
  for (std::string k; std::getline(header, k, ',');) keys.push_back(k);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(std::adjacent_find(keys.begin(), keys.end()), keys.end()) << run.out;

  test::CliRun jl = test::run_moebench({"report", d.str("r.json"), "--format", "jsonl"}, d);
  ASSERT_EQ(jl.code, 0) << jl.err;
  size_t lines = 0;
  for (size_t at = 0, nl; (nl = jl.out.find('\n', at)) != std::string::npos; at = nl + 1, ++lines) {
    nlohmann::json row = nlohmann::json::parse(jl.out.substr(at, nl - at));
    EXPECT_EQ(row.at("suite"), "short");
    EXPECT_TRUE(row.at("decode_tok_s").is_number()) << row.dump();
  }
  EXPECT_EQ(lines, 2u);

  test::CliRun cmp = test::run_moebench({"compare", d.str("r.json"), d.str("r.json"), "--format", "json"}, d);
  ASSERT_EQ(cmp.code, 0) << cmp.err;
  nlohmann::json j = nlohmann::json::parse(cmp.out);
  EXPECT_TRUE(j.at("pass").get<bool>());
  ASSERT_FALSE(j.at("rows").empty());
  for (const auto& row : j.at("rows")) {
    EXPECT_TRUE(row.contains("metric") && row.contains("verdict") && row.contains("base") && row.contains("new"));
    EXPECT_FALSE(row.at("failure").get<bool>());
  }

  test::CliRun bad = test::run_moebench({"report", d.str("r.json"), "--format", "xml"}, d);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("md|csv|json|jsonl|html"), std::string::npos) << bad.err;
}
