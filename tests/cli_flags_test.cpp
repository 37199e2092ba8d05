// cli_flags_test.cpp: flags a subcommand lists in --help are honoured and recorded:
// --version, --threads, and bench's --stage / --routing (which it once accepted and
// dropped, recording stage "custom" and routing "model").
#include <gtest/gtest.h>

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
