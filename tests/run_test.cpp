// run_test.cpp: `moebench run` end to end on the tiny model: the ci suite writes a
// results file that loads back; outputs are deterministic; SIGINT during a case
// keeps the finished cases in the progress file, the outputs as they were, and
// exits 130; a malformed suite is a one-line error; --trace records one more generation,
// not a measured one. (The CI gate's tests are in gate_test.cpp.)
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "common/error.h"
#include "engine/build_info.h"
#include "reports/compare.h"
#include "reports/results.h"
#include "suites/runner.h"
#include "suites/suite.h"
#include "tests/test_util.h"

namespace run_test {

using namespace moebench;
using namespace moebench::suites;
using moebench::test::TempDir;

namespace {

std::string cpu(const std::string&) { return "cpu"; }

using test::moebench_exe;
using test::spawn;
using test::wait_exit;

RunOutcome run_ci(const std::string& out, int repetitions, double slowdown = 1.0) {
  setenv("MOEBENCH_SUITES_DIR", (test::source_dir() + "/suites").c_str(), 1);
  static Suite s = load_suite("ci");  // instances point into it
  Overrides o;
  o.repetitions = repetitions;
  RunOptions opt;
  opt.out_path = out;
  opt.measure_bandwidth = false;
  opt.inject_slowdown = slowdown;
  return run_suite(expand(s, o, cpu), opt);
}

}  // namespace

TEST(Run, CiSuiteWritesAResultsFileThatLoadsBack) {
  TempDir d;
  RunOutcome r = run_ci(d.str("ci.json"), 2);
  EXPECT_FALSE(r.interrupted);
  EXPECT_EQ(r.failed, 0);
  reports::Results back = reports::load_results(d.str("ci.json"));
  ASSERT_EQ(back.cases.size(), 3u);
  EXPECT_EQ(back.device.kind, reports::DeviceKind::cpu);
  EXPECT_FALSE(back.device.name.empty());
  EXPECT_EQ(back.run.commit, moebench::build_commit());
  EXPECT_EQ(back.model.name, "tiny");
  EXPECT_EQ(back.model.config.at("num_hidden_layers"), 4);
  const reports::Case& ref = back.cases[0];
  EXPECT_EQ(ref.name, "reference");
  EXPECT_EQ(ref.settings.stage, "none");
  EXPECT_EQ(ref.samples.size(), 2u);
  for (size_t i = 1; i < 3; ++i) {
    const reports::Case& c = back.cases[i];
    SCOPED_TRACE(c.name);
    EXPECT_EQ(c.status, reports::CaseStatus::ok) << c.error;
    EXPECT_EQ(c.suite, "ci");
    ASSERT_EQ(c.samples.size(), 2u);
    EXPECT_EQ(c.output_token_hash.size(), 16u);
    EXPECT_EQ(c.new_tokens, 24);
    // One prefill step and new_tokens - 1 decode steps per repetition.
    EXPECT_EQ(c.samples[0].latency_ns.size(), 24u);
    EXPECT_EQ(c.samples[0].phase[0], reports::Phase::prefill);
    EXPECT_EQ(c.samples[0].phase[1], reports::Phase::decode);
    EXPECT_GT(c.aggregates.decode_tok_s, 0);
    EXPECT_EQ(c.settings.knobs.at("cpu_threads"), 1);
    EXPECT_EQ(c.settings.knobs.at("warmup"), true);
    EXPECT_EQ(c.routing_source, "model");
    EXPECT_TRUE(c.bound.has_value() == false);  // bandwidth not measured in this test
    EXPECT_TRUE(c.other_tokens_repetitions.empty());  // both repetitions gave the same tokens
  }
  EXPECT_EQ(back.cases[2].prompt_tokens, 64);
  // Only the first instance after the model load has a cold TTFT, and it includes the load.
  ASSERT_TRUE(back.cases[1].samples[0].ttft_cold_ns.has_value());
  EXPECT_GT(*back.cases[1].samples[0].ttft_cold_ns, back.cases[1].samples[0].ttft_warm_ns);
  EXPECT_FALSE(back.cases[2].samples[0].ttft_cold_ns.has_value());
  // Deterministic: a second run generates the same tokens.
  RunOutcome again = run_ci(d.str("ci2.json"), 1);
  for (size_t i = 1; i < 3; ++i)
    EXPECT_EQ(again.results.cases[i].output_token_hash, back.cases[i].output_token_hash);
}

// A repetition is held to the first's tokens: where they differ (in one token or in length) it
// is recorded in the case, where they agree nothing is.
TEST(Run, RepetitionsWithOtherTokensAreRecorded) {
  reports::Case c;
  c.suite = "s";
  c.name = "c";
  const std::vector<int32_t> first{5, 6, 7};
  check_repetition_tokens(c, 1, first, {5, 6, 7});
  EXPECT_TRUE(c.other_tokens_repetitions.empty());
  check_repetition_tokens(c, 2, first, {5, 6, 8});
  check_repetition_tokens(c, 3, first, {5, 6});
  check_repetition_tokens(c, 4, first, first);
  EXPECT_EQ(c.other_tokens_repetitions, (std::vector<int>{2, 3}));
}

TEST(Run, InjectedSlowdownIsRecordedInTheSettings) {
  TempDir d;
  RunOutcome r = run_ci(d.str("slow.json"), 1, 1.5);
  const reports::Case& c = r.results.cases[1];
  EXPECT_EQ(c.settings.knobs.at("inject_slowdown"), 1.5);
  EXPECT_EQ(r.results.cases[0].settings.knobs.count("inject_slowdown"), 0u);  // the reference is not the engine
}

TEST(Run, UnsupportedBatchSizeIsSaidInTheCaseStatus) {
  Suite s = parse_suite(R"({"name": "b", "defaults": {"model": "micro", "repetitions": 1},
    "cases": [{"name": "a", "prompt_tokens": 4, "new_tokens": 2}], "sweep": {"batch_size": [1, 4]}})",
                        "b.json");
  RunOptions opt;
  opt.measure_bandwidth = false;
  RunOutcome r = run_suite(expand(s, {}, cpu), opt);
  ASSERT_EQ(r.results.cases.size(), 2u);
  EXPECT_EQ(r.results.cases[0].status, reports::CaseStatus::ok);
  EXPECT_EQ(r.results.cases[1].status, reports::CaseStatus::failed);
  EXPECT_NE(r.results.cases[1].error.find("batch_size 4 is not supported"), std::string::npos);
  EXPECT_EQ(r.failed, 1);
}

// A text prompt's length is known once tokenised, when its case runs: a case too long then
// fails with a sentence and the run goes on. (A prompt_tokens case too long is refused
// before any case: Suite.CasesLongerThanTheModelTakesFailBeforeAnyCase.)
TEST(Run, TooLongCaseFailsWithASentenceAndTheRunGoesOn) {
  Suite s = parse_suite(R"({"name": "l", "defaults": {"model": "tiny", "repetitions": 1, "settings": {"max_model_len": "24"}},
    "cases": [{"name": "big", "prompt": "a text prompt of more than twenty tokens once it has been tokenised by the model's tokenizer", "new_tokens": 8},
              {"name": "ok", "prompt_tokens": 4, "new_tokens": 2}]})",
                        "l.json");
  const Suite counted = parse_suite(R"({"name": "l", "defaults": {"model": "micro", "settings": {"max_model_len": "24"}},
    "cases": [{"name": "big", "prompt_tokens": 20, "new_tokens": 8}]})",
                                    "l.json");
  ASSERT_THROW(expand(counted, {}, cpu), Error);
  RunOptions opt;
  opt.measure_bandwidth = false;
  RunOutcome r = run_suite(expand(s, {}, cpu), opt);
  ASSERT_EQ(r.results.cases.size(), 2u);
  EXPECT_EQ(r.results.cases[0].status, reports::CaseStatus::failed);
  EXPECT_NE(r.results.cases[0].error.find("exceeds max_model_len"), std::string::npos) << r.results.cases[0].error;
  EXPECT_EQ(r.results.cases[1].status, reports::CaseStatus::ok);
}

TEST(RunCli, MalformedSuiteIsAOneLineErrorAndExit1) {
  TempDir d;
  test::write_file(d.str("bad.json"), R"({"name": "bad", "cases": [{"name": "a", "prompt": "x", "new_tokens": "a"}]})");
  pid_t pid = spawn({moebench_exe(), "run", "--suite", d.str("bad.json"), "--out", d.str("r.json")}, d.str("out"),
                    d.str("err"));
  EXPECT_EQ(wait_exit(pid), 1);
  std::string err = test::read_file(d.str("err"));
  EXPECT_EQ(err, "error: " + d.str("bad.json") + ": cases[0].new_tokens is \"a\", expected a positive integer\n");
  EXPECT_FALSE(std::filesystem::exists(d.str("r.json")));
}

TEST(RunCli, SigintKeepsTheFinishedCasesInTheProgressFileAndExits130) {
  TempDir d;
  // A quick first case, then one that runs for minutes.
  test::write_file(d.str("two.json"), R"({"name": "two", "defaults": {"model": "tiny", "backend": "cpu", "repetitions": 1},
    "cases": [{"name": "quick", "prompt_tokens": 8, "new_tokens": 4},
              {"name": "slow", "prompt_tokens": 16, "new_tokens": 900}]})");
  std::string out = d.str("two-results.json"), progress = d.str("two-results.partial.json");
  test::write_file(out, "previous results");
  test::write_file(d.str("r.html"), "previous report");
  pid_t pid = spawn({moebench_exe(), "run", "--suite", d.str("two.json"), "--out", out, "--repetitions", "200",
                     "--html", d.str("r.html")},
                    d.str("out"), d.str("err"));
  // Poll the progress file until the first case is in it.
  bool first_done = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!first_done && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    try {
      first_done = reports::load_results(progress).cases.size() >= 1;
    } catch (const Error&) {  // not written yet
    }
  }
  ASSERT_TRUE(first_done) << test::read_file(d.str("err"));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // well inside the slow case
  kill(pid, SIGINT);
  EXPECT_EQ(wait_exit(pid), 130) << test::read_file(d.str("err"));
  reports::Results r = reports::load_results(progress);
  ASSERT_EQ(r.cases.size(), 1u);
  EXPECT_EQ(r.cases[0].name, "quick");
  EXPECT_EQ(r.cases[0].status, reports::CaseStatus::ok);
  EXPECT_NE(test::read_file(d.str("err")).find("interrupted: 1 of 2 case(s) finished and kept in " + progress),
            std::string::npos);
  EXPECT_NE(test::read_file(d.str("out")).find("| quick"), std::string::npos);  // the summary still prints
  // The outputs of an interrupted run are left as they were.
  EXPECT_EQ(test::read_file(out), "previous results");
  EXPECT_EQ(test::read_file(d.str("r.html")), "previous report");
  for (const auto& e : std::filesystem::directory_iterator(d.path))  // no temporary files left behind
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
}

// --trace records one more generation after the measured repetitions: the measured ones run
// exactly as without it (same count, same tokens), the traced one is reported as a
// repetition -1 (like a warm-up), and the trace says which it is.
TEST(Run, TheTraceIsOneMoreGenerationAfterTheMeasuredOnes) {
  Suite s = parse_suite(R"({"name": "t", "defaults": {"model": "micro", "repetitions": 2},
    "cases": [{"name": "a", "prompt_tokens": 4, "new_tokens": 3}]})",
                        "t.json");
  TempDir d;
  auto run = [&](bool traced, std::map<int, int>& tokens_by_rep) {
    RunOptions opt;
    opt.measure_bandwidth = false;
    opt.out_path = d.str(traced ? "traced.json" : "plain.json");
    if (traced) opt.trace_path = d.str("trace.json");
    RunEvents ev;
    ev.on_token = [&](int, int rep, int64_t, reports::Phase) { ++tokens_by_rep[rep]; };
    return run_suite(expand(s, {}, cpu), opt, ev);
  };
  std::map<int, int> plain, traced;
  const RunOutcome a = run(false, plain), b = run(true, traced);
  ASSERT_EQ(a.results.cases.size(), 1u);
  ASSERT_EQ(b.results.cases.size(), 1u);
  EXPECT_EQ(b.results.cases[0].samples.size(), 2u);
  EXPECT_EQ(b.results.cases[0].output_token_hash, a.results.cases[0].output_token_hash);
  EXPECT_EQ(traced[0], plain[0]);
  EXPECT_EQ(traced[1], plain[1]);
  EXPECT_EQ(traced[0], 3);
  EXPECT_EQ(traced[-1], plain[-1] + 3) << "the traced generation is one more, not a measured one";
  ASSERT_TRUE(b.trace_error.empty()) << b.trace_error;
  const std::string trace = test::read_file(d.str("trace.json"));
  EXPECT_NE(trace.find("one more generation after measured repetition 1, not measured"), std::string::npos);
}

// Of several instances only the run's last is traced: the traced generation (CUPTI attached
// for it on CUDA) comes after every measured repetition of the run, so no instance's figures
// carry what tracing costs; every instance generates exactly as without --trace.
TEST(Run, OnlyTheRunsLastInstanceIsTraced) {
  Suite s = parse_suite(R"({"name": "t", "defaults": {"model": "micro", "repetitions": 2},
    "cases": [{"name": "a", "prompt_tokens": 4, "new_tokens": 3}, {"name": "b", "prompt_tokens": 5, "new_tokens": 2}]})",
                        "t.json");
  TempDir d;
  auto run = [&](bool traced, std::map<std::pair<int, int>, int>& tokens) {
    RunOptions opt;
    opt.measure_bandwidth = false;
    opt.out_path = d.str(traced ? "traced.json" : "plain.json");
    if (traced) opt.trace_path = d.str("trace.json");
    RunEvents ev;
    ev.on_token = [&](int index, int rep, int64_t, reports::Phase) { ++tokens[{index, rep}]; };
    return run_suite(expand(s, {}, cpu), opt, ev);
  };
  std::map<std::pair<int, int>, int> plain, traced;
  const RunOutcome a = run(false, plain), b = run(true, traced);
  ASSERT_EQ(b.results.cases.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(b.results.cases[i].output_token_hash, a.results.cases[i].output_token_hash);
    EXPECT_EQ((traced[{i, 0}]), (plain[{i, 0}]));
    EXPECT_EQ((traced[{i, 1}]), (plain[{i, 1}]));
  }
  EXPECT_EQ((traced[{0, -1}]), (plain[{0, -1}])) << "the first instance was traced";
  EXPECT_EQ((traced[{1, -1}]), (plain[{1, -1}]) + 2) << "the last instance's traced generation";
  ASSERT_TRUE(b.trace_error.empty()) << b.trace_error;
  EXPECT_NE(test::read_file(d.str("trace.json")).find(R"("case":"b")"), std::string::npos) << "the trace is case b's";
}

}  // namespace run_test
