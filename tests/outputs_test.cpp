// outputs_test.cpp: nothing is lost. Commands check every output path before they
// work (missing or unwritable folder, a folder named as a file, two arguments naming
// the same file) and every input path (missing, or a folder), and a run replaces its results, HTML and trace only when it is
// complete and not every case failed: a failed, interrupted or mis-pathed run leaves
// the files of an earlier run as they were. Failed cases give exit status 3.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/atomic_file.h"
#include "model/config.h"
#include "suites/bound.h"
#include "reports/results.h"
#include "suites/runner.h"
#include "suites/suite.h"
#include "tests/test_util.h"

namespace outputs_test {

using namespace moebench;
using moebench::test::TempDir;
using test::run_moebench;

namespace {

std::string error_of(const std::vector<PathArg>& in, const std::vector<PathArg>& out) {
  try {
    check_paths(in, out);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A suite of one quick case on the micro model.
std::string micro_suite(const TempDir& d) {
  std::string p = d.str("s.json");
  test::write_file(p, R"({"name": "s", "defaults": {"model": "micro", "backend": "cpu", "repetitions": 1},
    "cases": [{"name": "a", "prompt_tokens": 4, "new_tokens": 2}]})");
  return p;
}

bool one_line(const std::string& err) { return !err.empty() && err.find('\n') == err.size() - 1; }

}  // namespace

TEST(OutputPaths, SameFileUnderAnotherSpellingIsRefused) {
  TempDir d;
  std::filesystem::create_directories(d.str("sub"));
  test::write_file(d.str("in.json"), "{}");
  std::filesystem::create_symlink(d.str("in.json"), d.str("link.json"));
  EXPECT_EQ(error_of({}, {{"--out", d.str("r.json")}, {"--html", d.str("r.html")}}), "");
  std::string e = error_of({}, {{"--out", d.str("r.json")}, {"--html", d.str("sub/../r.json")}});
  EXPECT_NE(e.find("--out " + d.str("r.json") + " and --html " + d.str("sub/../r.json") + " are the same file"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("one output would replace the other"), std::string::npos) << e;
  e = error_of({{"--suite", d.str("in.json")}}, {{"--out", d.str("link.json")}});
  EXPECT_NE(e.find("the output would replace the input"), std::string::npos) << e;
  std::filesystem::create_hard_link(d.str("in.json"), d.str("hard.json"));
  EXPECT_NE(error_of({{"RESULTS", d.str("in.json")}}, {{"--html", d.str("hard.json")}}), "");
  EXPECT_EQ(error_of({{"--suite", d.str("in.json")}, {"--tokenizer", d.str("in.json")}}, {}), "");  // inputs may repeat
}

// An input that does not exist or is a folder is refused in one line before any work,
// also by a command that would not read it (bench's --tokenizer with token-count prompts
// used to ignore a missing file).
TEST(OutputPaths, MissingOrFolderInputsAreRefused) {
  TempDir d;
  test::write_file(d.str("tok.json"), "{}");
  EXPECT_EQ(error_of({{"--tokenizer", d.str("tok.json")}}, {}), "");
  EXPECT_EQ(error_of({{"--tokenizer", d.str("none.json")}}, {}),
            "--tokenizer " + d.str("none.json") + ": cannot open it (No such file or directory)");
  EXPECT_EQ(error_of({{"--ids-file", d.str()}}, {}), "--ids-file " + d.str() + ": is a folder, expected a file");
  test::CliRun r = run_moebench({"bench", "--preset", "tiny", "--backend", "cpu", "--tokenizer", d.str("none.json"),
                                 "--out", d.str("b.json")},
                                d);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: --tokenizer " + d.str("none.json") + ": cannot open it (No such file or directory)\n");
  EXPECT_FALSE(std::filesystem::exists(d.str("b.json")));
}

TEST(OutputPaths, MissingFolderFolderAsFileAndFileAsFolderAreRefused) {
  TempDir d;
  test::write_file(d.str("file"), "x");
  EXPECT_EQ(error_of({}, {{"--out", d.str("no/r.json")}}),
            "--out " + d.str("no/r.json") + ": folder " + d.str("no") + " does not exist");
  EXPECT_EQ(error_of({}, {{"--out", d.str("file/r.json")}}),
            "--out " + d.str("file/r.json") + ": " + d.str("file") + " is not a folder");
  EXPECT_EQ(error_of({}, {{"--trace", d.str()}}), "--trace " + d.str() + ": is a folder, expected a file name");
  EXPECT_EQ(error_of({}, {{"--out", "/dev/null"}}), "--out /dev/null: exists and is not a regular file");
  EXPECT_EQ(error_of({}, {{"--out", ""}, {"--html", ""}}), "");  // not given
}

TEST(RunCli, CollidingPathsAreRefusedAndNothingIsTouched) {
  TempDir d;
  const std::string suite = micro_suite(d), text = test::read_file(suite);
  struct Case {
    std::vector<std::string> args;
    std::string said;
  };
  const std::string r = d.str("r.json"), t = d.str("t.json");
  test::write_file(r, "previous results");
  test::write_file(t, "previous trace");
  for (const Case& c : std::vector<Case>{
           {{"--out", suite}, "--out " + suite + " and --suite " + suite + " are the same file"},
           {{"--out", r, "--html", r}, "--out " + r + " and --html " + r + " are the same file"},
           {{"--out", r, "--trace", t, "--html", d.str("./t.json")},
            "--html " + d.str("./t.json") + " and --trace " + t + " are the same file"},
           {{"--trace", t, "--out", t}, "--out " + t + " and --trace " + t + " are the same file"},
       }) {
    std::vector<std::string> args = {"run", "--suite", suite};
    args.insert(args.end(), c.args.begin(), c.args.end());
    test::CliRun run = run_moebench(args, d);
    SCOPED_TRACE(run.err);
    EXPECT_EQ(run.code, 1);
    EXPECT_TRUE(one_line(run.err));
    EXPECT_NE(run.err.find(c.said), std::string::npos);
    EXPECT_EQ(test::read_file(suite), text);
    EXPECT_EQ(test::read_file(r), "previous results");
    EXPECT_EQ(test::read_file(t), "previous trace");
  }
}

TEST(RunCli, UnwritableTraceIsRefusedBeforeTheRunAndKeepsThePreviousResults) {
  TempDir d;
  const std::string suite = micro_suite(d), r = d.str("r.json");
  test::write_file(r, "previous results");
  test::write_file(d.str("file"), "x");
  test::CliRun run = run_moebench({"run", "--suite", suite, "--out", r, "--trace", d.str("file/t.json")}, d);
  EXPECT_EQ(run.code, 1);
  EXPECT_EQ(run.err, "error: --trace " + d.str("file/t.json") + ": " + d.str("file") + " is not a folder\n");
  EXPECT_EQ(run.out, "");  // no case ran
  EXPECT_EQ(test::read_file(r), "previous results");
}

TEST(RunCli, AllFailedRunExits3AndKeepsThePreviousResults) {
  TempDir d;
  const std::string suite = d.str("s.json"), r = d.str("r.json"), h = d.str("r.html");
  test::write_file(suite, R"({"name": "s", "defaults": {"model": "micro", "backend": "cpu", "repetitions": 1},
    "cases": [{"name": "a", "prompt_tokens": 4, "new_tokens": 2}], "sweep": {"batch_size": [4]}})");
  test::write_file(r, "previous results");
  test::write_file(h, "previous report");
  test::CliRun run = run_moebench({"run", "--suite", suite, "--out", r, "--html", h}, d);
  EXPECT_EQ(run.code, 3) << run.err;
  EXPECT_NE(run.err.find("all 1 case(s) failed"), std::string::npos) << run.err;
  EXPECT_NE(run.out.find("batch_size 4 is not supported"), std::string::npos) << run.out;  // in the summary
  EXPECT_EQ(test::read_file(r), "previous results");
  EXPECT_EQ(test::read_file(h), "previous report");
  // The failed case is kept in the progress file.
  EXPECT_EQ(reports::load_results(d.str("r.partial.json")).cases.at(0).status, reports::CaseStatus::failed);
}

TEST(RunCli, SomeFailedRunWritesTheResultsAndExits3) {
  TempDir d;
  std::string suite = d.str("s.json"), r = d.str("r.json");
  test::write_file(suite, R"({"name": "s", "defaults": {"model": "micro", "backend": "cpu", "repetitions": 1},
    "cases": [{"name": "a", "prompt_tokens": 4, "new_tokens": 2}], "sweep": {"batch_size": [1, 4]}})");
  test::write_file(r, "previous results");
  test::CliRun run = run_moebench({"run", "--suite", suite, "--out", r}, d);
  EXPECT_EQ(run.code, 3) << run.err;
  EXPECT_NE(run.err.find("1 of 2 case(s) failed"), std::string::npos) << run.err;
  reports::Results back = reports::load_results(r);
  ASSERT_EQ(back.cases.size(), 2u);
  EXPECT_EQ(back.cases[0].status, reports::CaseStatus::ok);
  EXPECT_EQ(back.cases[1].status, reports::CaseStatus::failed);
  EXPECT_FALSE(std::filesystem::exists(d.str("r.partial.json")));  // removed once the results are written
}

TEST(RunCli, SigtermInTheFirstCaseLeavesThePreviousResults) {
  TempDir d;
  test::write_file(d.str("slow.json"), R"({"name": "slow", "defaults": {"model": "tiny", "backend": "cpu", "repetitions": 200},
    "cases": [{"name": "slow", "prompt_tokens": 16, "new_tokens": 900}]})");
  const std::string r = d.str("r.json");
  test::write_file(r, "previous results");
  pid_t pid = test::spawn({test::moebench_exe(), "run", "--log-level", "info", "--suite", d.str("slow.json"), "--out", r},
                          d.str("out"), d.str("err"));
  // Wait until the run has started (the runner logs the loaded model's experts), then stop it.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (test::read_file(d.str("err")).find("experts: ") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(pid, SIGTERM);
  EXPECT_EQ(test::wait_exit(pid), 128 + SIGTERM) << test::read_file(d.str("err"));
  EXPECT_EQ(test::read_file(r), "previous results");
  EXPECT_NE(test::read_file(d.str("err")).find("interrupted: 0 of 1 case(s) finished"), std::string::npos);
}

TEST(Run, TraceThatCannotBeWrittenKeepsTheResults) {
  TempDir d;
  suites::Suite s = suites::parse_suite(R"({"name": "t", "defaults": {"model": "micro", "repetitions": 1},
    "cases": [{"name": "a", "prompt_tokens": 4, "new_tokens": 2}]})",
                                        "t.json");
  suites::RunOptions opt;
  opt.measure_bandwidth = false;
  opt.out_path = d.str("r.json");
  opt.progress_path = d.str("r.partial.json");
  opt.trace_path = d.str("gone/t.json");  // the folder is missing by the time the run ends
  suites::RunOutcome out = suites::run_suite(suites::expand(s, {}, [](const std::string&) { return std::string("cpu"); }), opt);
  EXPECT_TRUE(out.saved);
  EXPECT_NE(out.trace_error.find(d.str("gone/t.json")), std::string::npos) << out.trace_error;
  reports::Results back = reports::load_results(d.str("r.json"));
  ASSERT_EQ(back.cases.size(), 1u);
  EXPECT_EQ(back.cases[0].status, reports::CaseStatus::ok);
  EXPECT_EQ(back.run.trace_file, "");  // the results do not name a trace that is not there
}

TEST(ReportCli, HtmlOverItsOwnResultsIsRefused) {
  TempDir d;
  const std::string g = d.str("g.json");
  test::write_file(g, "previous results");
  test::CliRun run = run_moebench({"report", g, "--html", g}, d);
  EXPECT_EQ(run.code, 1);
  EXPECT_EQ(run.err, "error: --html " + g + " and RESULTS " + g + " are the same file (" + g +
                         "): the output would replace the input\n");
  EXPECT_EQ(test::read_file(g), "previous results");
}

TEST(BenchCli, OutIntoAMissingFolderFailsBeforeTheBenchmark) {
  TempDir d;
  test::CliRun run = run_moebench({"bench", "--preset", "micro", "--backend", "cpu", "--prompt-tokens", "4",
                                   "--new-tokens", "2", "--repetitions", "1", "--out", d.str("no/r.json")},
                                  d);
  EXPECT_EQ(run.code, 1);
  EXPECT_EQ(run.err, "error: --out " + d.str("no/r.json") + ": folder " + d.str("no") + " does not exist\n");
  EXPECT_EQ(run.out, "");  // no case ran, no table
}

// bench's table names how many (layer, expert)s a decode step ran: one token's top_k a layer
// (micro: 2 layers, top-2) where nothing was counted.
TEST(BenchCli, TableShowsTheExpertsADecodeStepRan) {
  TempDir d;
  test::CliRun run = run_moebench({"bench", "--preset", "micro", "--backend", "cpu", "--prompt-tokens", "4",
                                   "--new-tokens", "3", "--repetitions", "1"},
                                  d);
  ASSERT_EQ(run.code, 0) << run.err;
  // The cells of the header and of the case's row, trimmed.
  auto cells = [&](const std::string& starts) {
    std::vector<std::string> out;
    const size_t at = run.out.find(starts);
    if (at == std::string::npos) return out;
    std::stringstream line(run.out.substr(at + 1, run.out.find('\n', at) - at - 1));
    for (std::string cell; std::getline(line, cell, '|');) {
      const size_t b = cell.find_first_not_of(' '), e = cell.find_last_not_of(' ');
      out.push_back(b == std::string::npos ? "" : cell.substr(b, e - b + 1));
    }
    return out;
  };
  const std::vector<std::string> head = cells("| case"), row = cells("| b1_p4_n3");
  ASSERT_EQ(head.size(), row.size()) << run.out;
  const auto col = std::find(head.begin(), head.end(), "experts/step");
  ASSERT_NE(col, head.end()) << run.out;
  EXPECT_EQ(row[static_cast<size_t>(col - head.begin())], "4") << run.out;
  // The bytes a token reads as the CPU bound counts them: every weight in fp32.
  const auto gb = std::find(head.begin(), head.end(), "GB/token");
  ASSERT_NE(gb, head.end()) << run.out;
  EXPECT_EQ(row[static_cast<size_t>(gb - head.begin())],
            fmt::format("{:.4g}", static_cast<double>(suites::bytes_per_decode_token(preset_config("micro"), 4)) / 1e9))
      << run.out;
}

// The CPU backend runs batched cases too (the CPU model's paged forward): 3 sequences of
// micro decode together, each step's distinct experts counted by the model, and the bound
// is over the CPU read stream with that count.
TEST(BenchCli, CpuBatchedCasesCountTheExpertsOfEachStep) {
  TempDir d;
  test::CliRun run = run_moebench({"bench", "--preset", "micro", "--backend", "cpu", "--prompt-tokens", "4",
                                   "--new-tokens", "4", "--repetitions", "1", "--batch", "1,3", "--out",
                                   d.str("r.json")},
                                  d);
  ASSERT_EQ(run.code, 0) << run.err;
  const reports::Results r = reports::load_results(d.str("r.json"));
  ASSERT_EQ(r.cases.size(), 3u);  // b1 (single sequence), batch1, batch3
  const reports::Case& k = r.cases[2];
  EXPECT_EQ(k.name, "batch3_p4_n4");
  ASSERT_EQ(k.status, reports::CaseStatus::ok) << k.error;
  // micro: 2 layers, top-2 of 4 experts: 3 tokens run 2 to 4 experts a layer.
  EXPECT_GE(k.experts.decode_experts_per_step, 4.0);
  EXPECT_LE(k.experts.decode_experts_per_step, 8.0);
  ASSERT_TRUE(k.bound.has_value());
  EXPECT_EQ(k.bound->bandwidth_gbps.count("cpu_read"), 1u);
  EXPECT_NE(k.bound->description.find("counted by the CPU model"), std::string::npos) << k.bound->description;
  EXPECT_EQ(r.cases[1].output_token_hash.empty(), false);
  EXPECT_NE(run.out.find(" counted |"), std::string::npos) << run.out;
}

}  // namespace outputs_test
