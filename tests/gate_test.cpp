// gate_test.cpp: the CI gate on work counts (reports/workcount.h, `moebench gate`,
// scripts/ci_gate.sh): callgrind's text format parsed from small hand-written dumps,
// per-case sums, the verdict (exact tokens and counters, estimated cost within the
// tolerance, the functions that grew named, environments refused across a
// mismatch), the injected extra work leaving results unchanged, and the gate end to
// end under valgrind: unchanged passes, 5% and 20% more work fail.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "engine/ops/ops.h"
#include "reports/workcount.h"
#include "suites/runner.h"
#include "suites/suite.h"
#include "tests/test_util.h"

namespace gate_test {

using namespace moebench;
using namespace moebench::reports;
using moebench::test::TempDir;

namespace {

// A dump as callgrind 3.19 writes it: compressed names (defined once, on fn= or
// cfn=), relative and repeated positions, trailing zero costs left out, and a call
// whose inclusive cost line must not count as the caller's own.
std::string dump_text(const std::string& trigger, int64_t linear_ir, int64_t linear_d1mr) {
  return fmt::format(R"(# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  /x/moebench gate count --suite gate --dir /tmp/d
part: 1


desc: I1 cache: 32768 B, 64 B, 8-way associative
desc: D1 cache: 32768 B, 64 B, 8-way associative
desc: LL cache: 33554432 B, 64 B, 16-way associative

desc: Timerange: Basic block 0 - 28064
desc: Trigger: {}

positions: line
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
summary: 999

ob=(3) /usr/lib/x86_64-linux-gnu/libc.so.6
fl=(1) ./string/memcpy.S
fn=(5) __memcpy_avx_unaligned_erms
120 40 10 10 1 2 1 0 1
+2 10

ob=(5) /x/moebench
fl=(2) engine/ops/linear.cpp
fn=(7) moebench::cpu::linear(float const*, float const*, float*, int, int, int)
20 {} 0 0 0 {}
* 100 5 5
cfn=(9) moebench::cpu::dot(float const*, float const*, int)
calls=3 -4
* 5000 7 7 0 9 0 0 3

fn=(9)
8 5000 7 7 0 9 0 0 3

fn=(5)
-3 1

totals: {} 0 0 1 {} 1 0 4
)",
                     trigger, linear_ir, linear_d1mr, linear_ir + 5151, linear_d1mr + 11);
}

const std::string kLinear = "moebench::cpu::linear(float const*, float const*, float*, int, int, int)";

TEST(Workcount, ParsesCallgrindsTextFormat) {
  CallgrindDump d = parse_callgrind(dump_text("Client Request: moebench-gate fox decode 15", 1000, 30), "a.out");
  EXPECT_EQ(d.creator, "callgrind-3.19.0");
  EXPECT_EQ(d.trigger, "Client Request: moebench-gate fox decode 15");
  EXPECT_EQ(d.cache,
            "I1 cache: 32768 B, 64 B, 8-way associative; D1 cache: 32768 B, 64 B, 8-way associative; LL cache: 33554432 "
            "B, 64 B, 16-way associative");
  ASSERT_EQ(d.self.size(), 3u);
  // memcpy (line, then Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw): Ir 40 + 10 + 1 (the
  // line "+2 10" leaves out its zeros), L1 misses 1 + 2 + 1, LL misses 1.
  EXPECT_EQ(d.self.at("__memcpy_avx_unaligned_erms").ir, 51);
  EXPECT_EQ(d.self.at("__memcpy_avx_unaligned_erms").l1_misses, 4);
  EXPECT_EQ(d.self.at("__memcpy_avx_unaligned_erms").ll_misses, 1);
  // linear: its own lines only (1000 + 100), not the 5000 of the call to dot.
  EXPECT_EQ(d.self.at(kLinear).ir, 1100);
  EXPECT_EQ(d.self.at(kLinear).l1_misses, 30);
  EXPECT_EQ(d.self.at("moebench::cpu::dot(float const*, float const*, int)").ir, 5000);
  EXPECT_EQ(d.self.at("moebench::cpu::dot(float const*, float const*, int)").ll_misses, 3);
  EXPECT_EQ(d.total.ir, 51 + 1100 + 5000);
  EXPECT_EQ(d.total.l1_misses, 4 + 30 + 9);
  EXPECT_EQ(d.total.ll_misses, 1 + 3);
  EXPECT_EQ(d.total.estimated(), d.total.ir + 10 * d.total.l1_misses + 100 * d.total.ll_misses);
}

TEST(Workcount, BadDumpsAreOneLineErrors) {
  auto error_of = [](const std::string& text) {
    try {
      parse_callgrind(text, "x.out");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string no_sim = "events: Ir\nfn=(1) f\n3 10\ntotals: 10\n";
  EXPECT_EQ(error_of(no_sim), "x.out:1: events 'Ir' have no cache misses (run callgrind with --cache-sim=yes)");
  std::string good = dump_text("Program termination", 10, 1);
  std::string cut = good.substr(0, good.find("totals:"));
  EXPECT_EQ(error_of(cut), "x.out: no totals: line (the file is cut short?)");
  std::string off = good;
  off.replace(off.find("totals: ") + 8, 4, "9999");
  EXPECT_NE(error_of(off).find("x.out: the functions' costs add up to Ir 5161"), std::string::npos) << error_of(off);
  std::string letters = good;
  letters.replace(letters.find("+2 10"), 5, "+2 1x");
  EXPECT_EQ(error_of(letters), "x.out:24: cost '1x' is not a non-negative integer");
  EXPECT_EQ(error_of("hello\n"), "x.out:1: 'hello' is not a line of callgrind's format");
  EXPECT_EQ(error_of("events: Ir I1mr D1mr D1mw ILmr DLmr DLmw\nfn=(4)\n"), "x.out:2: name (4) is used before it is defined");
}

Results two_cases() {
  Results r;
  r.run.commit = "abc";
  for (const char* n : {"fox", "p64"}) {
    Case c;
    c.name = n;
    c.output_token_hash = std::string(n) + "0123456789abc";
    c.experts.usage = {{3, 1}, {2, 2}};
    r.cases.push_back(c);
  }
  return r;
}

WorkEnvironment env() {
  WorkEnvironment e;
  e.compiler = "gcc 12.2.0";
  e.build_type = "Release";
  e.cpu = "GenuineIntel sse2 avx2";
  e.libraries = "glibc 2.36";
  e.threads = 1;
  return e;
}

// Work counts of two cases; `linear_ir` sets fox's decode cost.
WorkCounts counts(int64_t linear_ir) {
  std::vector<CallgrindDump> dumps;
  for (const char* c : {"fox", "p64"}) {
    dumps.push_back(parse_callgrind(dump_text(fmt::format("Client Request: moebench-gate {} prefill 1", c), 90000, 10), "p"));
    // Decode in two dumps (two repetitions) of 15 steps each.
    for (int k = 0; k < 2; ++k)
      dumps.push_back(parse_callgrind(
          dump_text(fmt::format("Client Request: moebench-gate {} decode 15", c), c[0] == 'f' ? linear_ir : 1000, 30), "d"));
  }
  return summarise_work(two_cases(), dumps, env());
}

TEST(Workcount, SumsDumpsPerCaseAndPhase) {
  WorkCounts w = counts(1000);
  ASSERT_EQ(w.cases.size(), 2u);
  EXPECT_EQ(w.commit, "abc");
  EXPECT_EQ(w.env.valgrind, "callgrind-3.19.0");
  EXPECT_NE(w.env.cache.find("LL cache: 33554432 B"), std::string::npos);
  const CaseWork& fox = w.cases[0];
  EXPECT_EQ(fox.name, "fox");
  EXPECT_EQ(fox.token_hash, "fox0123456789abc");
  EXPECT_EQ(fox.prefill.steps, 1);
  EXPECT_EQ(fox.decode.steps, 30);
  EXPECT_EQ(fox.decode.total.ir, 2 * (51 + 1100 + 5000));
  EXPECT_EQ(fox.decode.functions.at(kLinear).ir, 2 * 1100);
  EXPECT_DOUBLE_EQ(fox.decode.estimated_per_step(), fox.decode.total.estimated() / 30.0);
  EXPECT_EQ(fox.prefill.functions.at(kLinear).ir, 90100);
  // Round trip through the file format.
  TempDir d;
  save_workcounts(d.str("w.json"), w);
  WorkCounts back = load_workcounts(d.str("w.json"));
  EXPECT_EQ(workcounts_to_json(back), workcounts_to_json(w));
  EXPECT_TRUE(back.env == w.env);
}

TEST(Workcount, SummaryRefusesWhatItCannotAttribute) {
  auto error_of = [](const std::vector<CallgrindDump>& dumps) {
    try {
      summarise_work(two_cases(), dumps, env());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto dump = [](const std::string& trig, int64_t ir) { return parse_callgrind(dump_text(trig, ir, 1), "f"); };
  // Costs outside the counted steps: callgrind collected from the start.
  EXPECT_EQ(error_of({dump("Program termination", 10)}),
            "dump 'Program termination' holds 5161 instructions collected outside the timed steps (run callgrind with "
            "--collect-atstart=no)");
  EXPECT_EQ(error_of({dump("Client Request: moebench-gate zebra prefill 1", 10)}),
            "dump 'Client Request: moebench-gate zebra prefill 1' names case zebra, which is not in the results");
  EXPECT_EQ(error_of({dump("Client Request: moebench-gate fox prefill x", 10)}),
            "dump trigger 'Client Request: moebench-gate fox prefill x': expected 'moebench-gate CASE prefill|decode STEPS'");
  EXPECT_EQ(error_of({dump("Client Request: moebench-gate fox prefill 1", 10)}),
            "case fox has no counted decode steps (was the run under callgrind, through `moebench gate count`?)");
}

std::string joined(const GateVerdict& v) {
  std::string s;
  for (const std::string& l : v.lines) s += l + "\n";
  return s;
}

TEST(Workcount, UnchangedCountsPass) {
  GateVerdict v = compare_work(counts(1000), counts(1000), 0.015);
  EXPECT_TRUE(v.pass) << joined(v);
  ASSERT_EQ(v.lines.size(), 4u);  // two cases x (prefill, decode)
  EXPECT_EQ(v.lines[1].rfind("ok    fox: estimated cost per decode token", 0), 0u) << v.lines[1];
  EXPECT_NE(v.lines[1].find("+0.00% vs baseline"), std::string::npos) << v.lines[1];
}

TEST(Workcount, MoreWorkThanTheToleranceFailsNamingCaseMetricChangeAndFunction) {
  // fox decode, per dump: Ir 6151, L1 misses 43, LL misses 4: 6981, over 15 steps 465 per step;
  // 500 more Ir in linear per dump make it 499.
  WorkCounts base = counts(1000), now = counts(1000 + 500);
  const double change = now.cases[0].decode.estimated_per_step() / base.cases[0].decode.estimated_per_step() - 1;
  ASSERT_NEAR(change, 0.0716, 0.0001);
  GateVerdict v = compare_work(base, now, 0.015);
  EXPECT_FALSE(v.pass);
  const std::string s = joined(v);
  EXPECT_NE(s.find(fmt::format("FAIL  fox: estimated cost per decode token 499 ({:+.2f}% vs baseline 465;", 100 * change)),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("above the 1.50% tolerance; grew most: " + kLinear + " +33/step (+7.16% of the phase)"), std::string::npos) << s;
  EXPECT_NE(s.find("ok    p64: estimated cost per decode token"), std::string::npos) << s;  // only fox grew
  // The same change inside a wider tolerance passes.
  EXPECT_TRUE(compare_work(base, now, 0.10).pass);
  // Less work passes, with a note to re-record.
  GateVerdict faster = compare_work(now, base, 0.015);
  EXPECT_TRUE(faster.pass);
  EXPECT_NE(joined(faster).find("faster than the tolerance"), std::string::npos);
}

TEST(Workcount, TokensAndExpertCountersMustBeExact) {
  WorkCounts base = counts(1000), now = counts(1000);
  now.cases[1].token_hash = "ffff";
  now.cases[0].experts.usage[1][0] = 3;
  now.cases[0].experts.hits = 7;
  GateVerdict v = compare_work(base, now, 0.015);
  EXPECT_FALSE(v.pass);
  const std::string s = joined(v);
  EXPECT_NE(s.find("FAIL  p64: output tokens changed (hash ffff, baseline p640123456789abc)"), std::string::npos) << s;
  EXPECT_NE(s.find("FAIL  fox: expert hits 7 (baseline 0)"), std::string::npos) << s;
  EXPECT_NE(s.find("FAIL  fox: the experts each token was routed to changed"), std::string::npos) << s;
}

TEST(Workcount, CountsFromAnotherSetupAreRefusedWithOneLine) {
  WorkCounts base = counts(1000), now = counts(1000);
  now.env.cpu = "AuthenticAMD sse2";
  try {
    compare_work(base, now, 0.015);
    FAIL() << "another CPU's counts were compared";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "the baseline's counts were made with CPU (as valgrind presents it) 'GenuineIntel sse2 avx2' but this run "
              "has 'AuthenticAMD sse2': counts are not comparable across them; re-record the baseline on this setup "
              "with `bash scripts/ci_gate.sh --update-baseline` (and commit reports/ci-baseline/ if it is the CI setup)");
  }
  now = counts(1000);
  now.cases.pop_back();
  EXPECT_THROW(compare_work(base, now, 0.015), Error);
}

TEST(Workcount, BadWorkCountsFileIsAOneLineError) {
  TempDir d;
  nlohmann::json j = workcounts_to_json(counts(1000));
  j["cases"][1]["decode"]["total"] = {1, 2};
  test::write_file(d.str("w.json"), j.dump());
  try {
    load_workcounts(d.str("w.json"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), d.str("w.json") + ": cases[1].decode.total is [1,2], expected [Ir, L1 misses, LL misses]");
  }
}

// The gate's test switch adds work but never changes what linear() computes.
TEST(Workcount, ExtraWorkLeavesLinearsResultsUnchanged) {
  const int n = 3, in = 40, out = 7;
  std::vector<float> x(n * in), w(out * in), y0(n * out), y1(n * out);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.1f * i);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(0.07f * i);
  cpu::linear(x.data(), w.data(), y0.data(), n, in, out);
  cpu::set_extra_work(2.5);  // wraps round the rows
  EXPECT_DOUBLE_EQ(cpu::extra_work(), 2.5);
  cpu::linear(x.data(), w.data(), y1.data(), n, in, out);
  cpu::set_extra_work(1.0);
  EXPECT_EQ(y0, y1);
  EXPECT_DOUBLE_EQ(cpu::extra_work(), 1.0);
}

// ---- end to end: scripts/ci_gate.sh under valgrind

std::string moebench_exe() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path().string() + "/moebench";
}

// Runs the gate script (through the shell, with extra environment); returns its
// exit code, its output (stdout and stderr) in out.
int run_gate(const std::vector<std::string>& args, const std::vector<std::string>& env, std::string& out) {
  TempDir d;
  std::string cmd = "env";
  for (const std::string& e : env) cmd += " '" + e + "'";
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " > '" + d.str("o") + "' 2>&1";
  const int status = std::system(cmd.c_str());
  out = test::read_file(d.str("o"));
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool have_valgrind() { return std::system("valgrind --version >/dev/null 2>&1") == 0; }

}  // namespace

// Records a baseline with this build, then: the unchanged build passes, and 5% and
// 20% more work in the linear ops (MOEBENCH_INJECT_SLOWDOWN) fail, naming the
// linear op. Counts do not depend on the machine's speed or load, so each verdict
// is decided by one run.
TEST(CiGate, UnchangedPassesAndFiveAndTwentyPercentMoreWorkFail) {
  if (!have_valgrind()) GTEST_SKIP() << "valgrind is not installed (scripts/lib.sh installs it in CI)";
  TempDir d;
  const std::string script = test::source_dir() + "/scripts/ci_gate.sh";
  // The gate suite's settings with fewer tokens, so that four runs under valgrind
  // stay short: a case with a text prompt and one with a synthetic prompt.
  test::write_file(d.str("small.json"), R"({"name": "gate-small", "description": "the gate's test",
    "defaults": {"model": "tiny", "backend": "cpu", "cpu_threads": 1, "warmup_runs": 1, "repetitions": 1,
                 "new_tokens": 4, "settings": {"warmup": true}},
    "cases": [{"name": "fox", "prompt": "The quick brown fox"}, {"name": "p16", "prompt_tokens": 16}]})");
  const std::vector<std::string> env = {"MOEBENCH_BIN=" + moebench_exe(), "MOEBENCH_GATE_DIR=" + d.str("run"),
                                        "MOEBENCH_GATE_BASELINE=" + d.str("base/workcounts.json"),
                                        "MOEBENCH_GATE_SUITE=" + d.str("small.json")};
  std::string out;
  ASSERT_EQ(run_gate({"/bin/bash", script, "--update-baseline"}, env, out), 0) << out;
  WorkCounts base = load_workcounts(d.str("base/workcounts.json"));
  ASSERT_EQ(base.cases.size(), 2u);
  EXPECT_EQ(base.env.threads, 1);
  EXPECT_EQ(base.cases[1].decode.steps, 3);
  EXPECT_GT(base.cases[1].decode.total.ir, 1000000);

  EXPECT_EQ(run_gate({"/bin/bash", script}, env, out), 0) << out;
  EXPECT_NE(out.find("gate: PASS"), std::string::npos) << out;
  EXPECT_NE(out.find("+0.00% vs baseline"), std::string::npos) << out;
  for (const char* f : {"1.05", "1.2"}) {
    SCOPED_TRACE(f);
    std::vector<std::string> slow = env;
    slow.push_back(std::string("MOEBENCH_INJECT_SLOWDOWN=") + f);
    EXPECT_EQ(run_gate({"/bin/bash", script}, slow, out), 1) << out;
    EXPECT_NE(out.find("gate: FAIL"), std::string::npos) << out;
    EXPECT_NE(out.find("FAIL  fox: estimated cost per decode token"), std::string::npos) << out;
    EXPECT_NE(out.find("FAIL  p16: estimated cost per prefill"), std::string::npos) << out;
    EXPECT_NE(out.find("grew most: moebench::cpu::"), std::string::npos) << out;
    EXPECT_EQ(out.find("output tokens changed"), std::string::npos) << out;  // same tokens, more work
  }
}

// The committed baseline is a valid work-counts file of the gate suite, and its
// tokens are this build's: a change of what is computed must re-record it.
TEST(CiGate, CommittedBaselineLoadsAndMatchesTheSuite) {
  WorkCounts b = load_workcounts(test::source_dir() + "/reports/ci-baseline/workcounts.json");
  setenv("MOEBENCH_SUITES_DIR", (test::source_dir() + "/suites").c_str(), 1);
  static suites::Suite s = suites::load_suite("gate");  // instances point into it
  auto cpu = [](const std::string&) { return std::string("cpu"); };
  std::vector<suites::Instance> in = suites::expand(s, {}, +cpu);
  ASSERT_EQ(b.cases.size(), in.size());
  EXPECT_EQ(b.env.threads, in[0].cpu_threads);
  EXPECT_EQ(b.env.valgrind.rfind("callgrind-", 0), 0u);
  suites::RunOptions opt;
  opt.measure_bandwidth = false;
  suites::RunOutcome r = suites::run_suite(in, opt);
  for (size_t i = 0; i < in.size(); ++i) {
    SCOPED_TRACE(in[i].case_name);
    EXPECT_EQ(b.cases[i].name, in[i].case_name);
    EXPECT_EQ(b.cases[i].token_hash, r.results.cases[i].output_token_hash)
        << "the generated tokens changed: re-record with bash scripts/ci_gate.sh --update-baseline";
    EXPECT_EQ(b.cases[i].decode.steps, in[i].new_tokens - 1);
  }
}

}  // namespace gate_test
