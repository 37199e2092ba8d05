// compare_test.cpp: the regression gate: exact deterministic metrics, timing
// thresholds, normalisation by a reference case, device refusal, and the exit
// codes of `moebench compare`.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/error.h"
#include "reports/compare.h"
#include "reports/significance.h"
#include "tests/results_fixture.h"

namespace compare_test {

using namespace moebench;
using namespace moebench::reports;
using moebench::test::make_results;
using moebench::test::scale_case;
using moebench::test::TempDir;

namespace {

const CompareRow* find_row(const CompareReport& rep, const std::string& c, const std::string& metric) {
  for (const CompareRow& r : rep.rows)
    if (r.case_name == c && r.metric == metric) return &r;
  return nullptr;
}

Verdict verdict(const CompareReport& rep, const std::string& c, const std::string& metric) {
  const CompareRow* r = find_row(rep, c, metric);
  EXPECT_NE(r, nullptr) << c << " " << metric;
  return r ? r->verdict : Verdict::skipped;
}

}  // namespace

TEST(Compare, IdenticalFilesPass) {
  Results r = make_results();
  CompareReport rep = compare_results(r, r, {});
  EXPECT_TRUE(rep.pass) << format_compare(rep);
  EXPECT_EQ(rep.failures(), 0);
  for (const char* m : {"output_token_hash", "hit_rate", "bytes_moved", "allocation_count", "decode_step_ns",
                        "prefill_ns", "ttft_warm_ns", "ttft_cold_ns"}) {
    const CompareRow* row = find_row(rep, "c0", m);
    ASSERT_NE(row, nullptr) << m;
    // Prefill and TTFT have one sample per repetition (3, and 1 cold): too few to
    // tell anything from noise.
    const bool few = std::string(m) == "prefill_ns" || std::string(m) == "ttft_warm_ns" || std::string(m) == "ttft_cold_ns";
    EXPECT_EQ(row->verdict, few ? Verdict::inconclusive : Verdict::ok) << m;
  }
  EXPECT_DOUBLE_EQ(find_row(rep, "c1", "decode_step_ns")->ratio, 1.0);
}

TEST(Compare, TwentyPercentDecodeSlowdownFails) {
  Results base = make_results(), cur = make_results();
  scale_case(cur.cases[0], 1.20, 1.0);
  CompareReport rep = compare_results(base, cur, {});
  EXPECT_FALSE(rep.pass);
  EXPECT_EQ(verdict(rep, "c0", "decode_step_ns"), Verdict::regression);
  EXPECT_NEAR(find_row(rep, "c0", "decode_step_ns")->ratio, 1.20, 0.001);
  EXPECT_EQ(verdict(rep, "c0", "prefill_ns"), Verdict::inconclusive);  // 3 repetitions against 3
  EXPECT_EQ(verdict(rep, "c1", "decode_step_ns"), Verdict::ok);
  // The same slowdown, seen against the bound: 20% further from it.
  EXPECT_EQ(verdict(rep, "c0", "decode_vs_bound"), Verdict::regression);
  EXPECT_EQ(rep.failures(), 2);
  std::string text = format_compare(rep);
  EXPECT_NE(text.find("REGRESSION"), std::string::npos);
  EXPECT_NE(text.find("+20.0%"), std::string::npos);
  EXPECT_NE(text.find("FAIL: "), std::string::npos);
}

TEST(Compare, TwoPercentSlowdownPassesAtFivePercent) {
  Results base = make_results(), cur = make_results();
  for (Case& c : cur.cases) scale_case(c, 1.02, 1.02);
  CompareReport rep = compare_results(base, cur, {});
  EXPECT_TRUE(rep.pass) << format_compare(rep);
  // ... and fails at a 1% threshold.
  CompareOptions strict;
  strict.max_slowdown = 0.01;
  EXPECT_FALSE(compare_results(base, cur, strict).pass);
}

TEST(Compare, FasterIsNotAFailure) {
  Results base = make_results(), cur = make_results();
  scale_case(cur.cases[1], 0.5, 0.5);
  CompareReport rep = compare_results(base, cur, {});
  EXPECT_TRUE(rep.pass);
  EXPECT_EQ(verdict(rep, "c1", "decode_step_ns"), Verdict::faster);
}

TEST(Compare, ChangedDeterministicMetricsFail) {
  Results base = make_results();
  Results cur = make_results();
  cur.cases[2].output_token_hash = "0000000000000000";
  CompareReport rep = compare_results(base, cur, {});
  EXPECT_FALSE(rep.pass);
  EXPECT_EQ(verdict(rep, "ref", "output_token_hash"), Verdict::changed);

  cur = make_results();
  cur.cases[0].experts.hits -= 1;
  cur.cases[0].experts.misses += 1;
  rep = compare_results(base, cur, {});
  EXPECT_FALSE(rep.pass);
  EXPECT_EQ(verdict(rep, "c0", "hit_rate"), Verdict::changed);

  cur = make_results();
  cur.cases[1].experts.bytes_moved += 1;
  EXPECT_EQ(verdict(compare_results(base, cur, {}), "c1", "bytes_moved"), Verdict::changed);

  // A NEW case whose repetitions disagree fails, naming them; none of BASE's rows is about it.
  cur = make_results();
  cur.cases[1].other_tokens_repetitions = {2};
  rep = compare_results(base, cur, {});
  EXPECT_FALSE(rep.pass);
  ASSERT_NE(find_row(rep, "c1", "repetition_tokens"), nullptr);
  EXPECT_EQ(find_row(rep, "c1", "repetition_tokens")->verdict, Verdict::changed);
  EXPECT_NE(find_row(rep, "c1", "repetition_tokens")->note.find("(repetitions 2;"), std::string::npos);
  EXPECT_EQ(find_row(compare_results(cur, base, {}), "c1", "repetition_tokens"), nullptr);

  cur = make_results();
  cur.cases[1].memory.allocation_count = 13;
  EXPECT_EQ(verdict(compare_results(base, cur, {}), "c1", "allocation_count"), Verdict::changed);
  // Absent in one file: not compared.
  cur.cases[1].memory.allocation_count.reset();
  rep = compare_results(base, cur, {});
  EXPECT_TRUE(rep.pass);
  EXPECT_EQ(find_row(rep, "c1", "allocation_count"), nullptr);
}

TEST(Compare, NormalisationCancelsUniformMachineSlowdown) {
  Results base = make_results(), cur = make_results();
  // A uniformly slower machine: every timing 30% longer, and the bandwidths its run
  // measured (so its bounds) 30% lower.
  for (Case& c : cur.cases) {
    scale_case(c, 1.30, 1.30);
    c.bound->value /= 1.30;
  }
  EXPECT_FALSE(compare_results(base, cur, {}).pass);
  CompareOptions opt;
  opt.normalize_by = "ref";
  CompareReport rep = compare_results(base, cur, opt);
  EXPECT_TRUE(rep.pass) << format_compare(rep);
  EXPECT_NEAR(find_row(rep, "c0", "decode_step_ns")->ratio, 1.0, 0.002);
  EXPECT_EQ(verdict(rep, "ref", "decode_step_ns"), Verdict::skipped);  // the reference itself
  // The same machine slowdown plus a real 20% decode regression in c1 still fails.
  scale_case(cur.cases[1], 1.20, 1.0);
  rep = compare_results(base, cur, opt);
  EXPECT_FALSE(rep.pass);
  EXPECT_EQ(verdict(rep, "c1", "decode_step_ns"), Verdict::regression);
  EXPECT_EQ(verdict(rep, "c0", "decode_step_ns"), Verdict::ok);
}

TEST(Compare, ReferenceSelectors) {
  Results r = make_results();
  for (const char* sel : {"ref", "short/ref", "short/ref@P0"}) {
    CompareOptions opt;
    opt.normalize_by = sel;
    EXPECT_TRUE(compare_results(r, r, opt).pass) << sel;
  }
  CompareOptions opt;
  opt.normalize_by = "nope";
  EXPECT_THROW(compare_results(r, r, opt), Error);
  Results two = r;
  two.cases.push_back(moebench::test::make_case("short", "ref", "P1"));
  opt.normalize_by = "short/ref";
  try {
    compare_results(two, two, opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("SUITE/CASE@STAGE"), std::string::npos);
  }
}

TEST(Compare, DifferentDevicesRefusedUnlessForced) {
  Results base = make_results(), cur = make_results();
  cur.device.name = "Other GPU";
  try {
    compare_results(base, cur, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("devices differ"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("--force"), std::string::npos);
  }
  CompareOptions opt;
  opt.force = true;
  CompareReport rep = compare_results(base, cur, opt);
  EXPECT_TRUE(rep.pass);
  ASSERT_FALSE(rep.notes.empty());
  EXPECT_NE(rep.notes[0].find("devices differ (forced)"), std::string::npos);
}

TEST(Compare, MissingAddedAndFailedCases) {
  Results base = make_results(), cur = make_results();
  cur.cases.erase(cur.cases.begin() + 1);
  CompareReport rep = compare_results(base, cur, {});
  EXPECT_FALSE(rep.pass);
  EXPECT_EQ(verdict(rep, "c1", "case"), Verdict::missing);

  rep = compare_results(cur, base, {});  // c1 only in NEW
  EXPECT_TRUE(rep.pass);
  EXPECT_EQ(verdict(rep, "c1", "case"), Verdict::added);

  cur = make_results();
  cur.cases[0].status = CaseStatus::failed;
  cur.cases[0].error = "out of memory";
  rep = compare_results(base, cur, {});
  EXPECT_FALSE(rep.pass);
  EXPECT_EQ(verdict(rep, "c0", "status"), Verdict::failed);

  // Same case under another stage is a different case.
  cur = make_results();
  cur.cases[0].settings.stage = "P1";
  rep = compare_results(base, cur, {});
  EXPECT_FALSE(rep.pass);
  EXPECT_EQ(verdict(rep, "c0", "case"), Verdict::missing);
}

TEST(Compare, SettingsDifferencesAreNoted) {
  Results base = make_results(), cur = make_results();
  cur.cases[0].settings.knobs["gpu_slots"] = 64;
  CompareReport rep = compare_results(base, cur, {});
  EXPECT_TRUE(rep.pass);
  bool found = false;
  for (const auto& n : rep.notes) found |= n.find("gpu_slots: 42 -> 64") != std::string::npos;
  EXPECT_TRUE(found) << format_compare(rep);
}

// --normalize-by a case whose timings are all zero: an error, not every row skipped and PASS.
TEST(Compare, NormalisingByAnAllZeroReferenceIsAnError) {
  Results base = make_results(), cur = make_results();
  for (Results* r : {&base, &cur})
    for (Repetition& rep : r->cases[2].samples) {
      for (int64_t& x : rep.latency_ns) x = 0;
      rep.ttft_warm_ns = 0;
      rep.ttft_cold_ns.reset();
    }
  CompareOptions opt;
  opt.normalize_by = "ref";
  try {
    compare_results(base, cur, opt);
    FAIL() << "accepted a reference whose timings are zero";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--normalize-by ref"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("BASE"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- the statistics

namespace {

// n samples around `center` with +-`spread` relative noise from a seeded generator.
std::vector<double> noisy(int n, double center, double spread, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(center * (1 + spread * (static_cast<double>(g() % 2001) / 1000 - 1)));
  return v;
}

// A case whose decode steps are exactly `steps` (one repetition).
Case case_with_steps(const std::string& name, const std::vector<double>& steps) {
  Case c = moebench::test::make_case("short", name, "P0", 1, 0);
  Repetition& r = c.samples[0];
  for (double x : steps) {
    r.latency_ns.push_back(static_cast<int64_t>(x));
    r.phase.push_back(Phase::decode);
  }
  c.aggregates = compute_aggregates(c);
  return c;
}

}  // namespace

TEST(Significance, MannWhitneyMatchesKnownValues) {
  UTest t = mann_whitney_u({1, 2, 3}, {4, 5, 6});
  EXPECT_DOUBLE_EQ(t.u, 9);
  EXPECT_NEAR(t.p, 0.1, 1e-12);  // exact: 2 of the 20 orderings are that extreme
  EXPECT_NEAR(t.min_p, 0.1, 1e-12);
  t = mann_whitney_u({1.1, 2.3, 3.5, 4.2}, {2.0, 5.1, 6.3, 7.7});
  EXPECT_DOUBLE_EQ(t.u, 13);
  EXPECT_NEAR(t.p, 0.2, 1e-12);  // P(U <= 3) = 7/70, two-sided
  std::vector<double> a, b;
  for (int i = 1; i <= 10; ++i) a.push_back(i), b.push_back(i + 10);
  EXPECT_NEAR(mann_whitney_u(a, b).p, 2.0 / 184756, 1e-12);
  // Identical samples: no evidence of a difference.
  EXPECT_NEAR(mann_whitney_u(a, a).p, 1.0, 1e-12);
}

TEST(Significance, BootstrapIntervalIsDeterministicAndHoldsTheRatio) {
  std::vector<double> a = noisy(100, 1e6, 0.02, 1), b = a;
  for (double& x : b) x *= 1.25;
  RatioInterval r1 = bootstrap_median_ratio(a, b), r2 = bootstrap_median_ratio(a, b);
  EXPECT_EQ(r1.lo, r2.lo);
  EXPECT_EQ(r1.hi, r2.hi);
  EXPECT_NEAR(r1.ratio, 1.25, 1e-9);
  EXPECT_LE(r1.lo, r1.ratio);
  EXPECT_GE(r1.hi, r1.ratio);
  EXPECT_GT(r1.lo, 1.2);
  EXPECT_LT(r1.hi, 1.3);
}

TEST(Significance, EqualDistributionsAreNotSlower) {
  Results base = make_results(), cur = make_results();
  base.cases = {case_with_steps("c", noisy(200, 1e6, 0.05, 11))};
  cur.cases = {case_with_steps("c", noisy(200, 1e6, 0.05, 12))};
  CompareOptions opt;
  opt.max_slowdown = 0.0;  // even with no allowance, noise is not a slowdown
  CompareReport rep = compare_results(base, cur, opt);
  EXPECT_EQ(verdict(rep, "c", "decode_step_ns"), Verdict::ok) << format_compare(rep);
  EXPECT_TRUE(rep.pass);
}

TEST(Significance, ClearlyShiftedIsSlowerAndTheAllowanceAppliesToTheInterval) {
  Results base = make_results(), cur = make_results();
  base.cases = {case_with_steps("c", noisy(200, 1e6, 0.05, 11))};
  cur.cases = {case_with_steps("c", noisy(200, 1.2e6, 0.05, 12))};
  CompareReport rep = compare_results(base, cur, {});
  EXPECT_EQ(verdict(rep, "c", "decode_step_ns"), Verdict::regression) << format_compare(rep);
  EXPECT_FALSE(rep.pass);
  // An allowance of 25% covers the whole interval of a 20% shift.
  CompareOptions loose;
  loose.max_slowdown = 0.25;
  rep = compare_results(base, cur, loose);
  EXPECT_EQ(verdict(rep, "c", "decode_step_ns"), Verdict::ok) << format_compare(rep);
  EXPECT_TRUE(rep.pass);
}

TEST(Significance, SmallSamplesAreInconclusive) {
  Results base = make_results(), cur = make_results();
  base.cases = {case_with_steps("c", {1e6, 1.01e6, 0.99e6})};
  cur.cases = {case_with_steps("c", {1.5e6, 1.51e6, 1.49e6})};  // 50% slower, but 3 samples against 3
  CompareReport rep = compare_results(base, cur, {});
  EXPECT_EQ(verdict(rep, "c", "decode_step_ns"), Verdict::inconclusive) << format_compare(rep);
  EXPECT_TRUE(rep.pass);
  EXPECT_NE(format_compare(rep).find("too few samples"), std::string::npos);
}

TEST(Significance, MedianIntervalFromOrderStatistics) {
  // n = 10 at 95%: P(2 <= B <= 8) = 1 - 2 * (1 + 10) / 1024 = 0.978515625 (j = 2), while
  // j = 3 gives 1 - 2 * 56 / 1024 = 0.890625 < 0.95: the interval is [x(2), x(9)].
  std::vector<double> v{10, 1, 9, 2, 8, 3, 7, 4, 6, 5};
  const auto r = median_interval(v);
  EXPECT_EQ(r.n, 10);
  EXPECT_DOUBLE_EQ(r.median, 5.5);
  EXPECT_DOUBLE_EQ(r.lo, 2);
  EXPECT_DOUBLE_EQ(r.hi, 9);
  EXPECT_NEAR(r.coverage, 0.978515625, 1e-12);
  EXPECT_TRUE(r.reached);
  EXPECT_NEAR(r.relative_half_width(), 3.5 / 5.5, 1e-12);
  // Five samples cannot reach 95%: min..max with coverage 1 - 2/32, flagged.
  const auto s = median_interval({3, 1, 2, 5, 4});
  EXPECT_DOUBLE_EQ(s.median, 3);
  EXPECT_DOUBLE_EQ(s.lo, 1);
  EXPECT_DOUBLE_EQ(s.hi, 5);
  EXPECT_NEAR(s.coverage, 0.9375, 1e-12);
  EXPECT_FALSE(s.reached);
  EXPECT_EQ(median_interval({}).n, 0);
  const auto one = median_interval({7});
  EXPECT_DOUBLE_EQ(one.lo, 7);
  EXPECT_DOUBLE_EQ(one.hi, 7);
  EXPECT_FALSE(one.reached);
}

TEST(Compare, ParsePercent) {
  EXPECT_DOUBLE_EQ(parse_percent("5%"), 0.05);
  EXPECT_DOUBLE_EQ(parse_percent("5"), 0.05);
  EXPECT_DOUBLE_EQ(parse_percent("0.5%"), 0.005);
  for (const char* bad : {"", "%", "five", "-1%", "5%%", "1000"}) EXPECT_THROW(parse_percent(bad), Error) << bad;
}

// ---------------------------------------------------------------- the CLI

namespace {

// build/bin/moebench next to this test binary; "" if absent.
std::string moebench_binary() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  auto p = self.parent_path() / "moebench";
  return std::filesystem::exists(p) ? p.string() : "";
}

struct RunResult {
  int code;
  std::string out;
};

RunResult run_cli(const std::string& args, const TempDir& d) {
  std::string out = d.str("out.txt");
  std::string cmd = moebench_binary() + " " + args + " > " + out + " 2>&1";
  int st = std::system(cmd.c_str());
  std::ifstream f(out);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, text};
}

}  // namespace

TEST(CompareCli, ExitCodes) {
  if (moebench_binary().empty()) GTEST_SKIP() << "moebench binary not built next to the tests";
  TempDir d;
  Results base = make_results(), slow = make_results();
  scale_case(slow.cases[0], 1.20, 1.0);
  save_results(d.str("base.json"), base);
  save_results(d.str("slow.json"), slow);
  std::string b = d.str("base.json"), s = d.str("slow.json");

  RunResult r = run_cli("compare " + b + " " + b, d);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("PASS"), std::string::npos);

  r = run_cli("compare " + b + " " + s, d);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("REGRESSION"), std::string::npos);

  r = run_cli("compare " + b + " " + s + " --max-slowdown 25%", d);
  EXPECT_EQ(r.code, 0) << r.out;

  r = run_cli("compare " + b + " " + s + " --max-slowdown lots", d);
  EXPECT_EQ(r.code, 2) << r.out;

  r = run_cli("compare " + b, d);
  EXPECT_EQ(r.code, 2) << r.out;

  // Malformed file: exit 1 with one line naming the file and the field.
  std::string text = results_to_string(base);
  std::string bad = d.str("bad.json");
  {
    std::ofstream f(bad);
    f << text.substr(0, text.size() - 40);
  }
  r = run_cli("compare " + b + " " + bad, d);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out.rfind("error: " + bad + ": invalid JSON", 0), 0u) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;

  nlohmann::json j = to_json(base);
  j["cases"][0]["samples"][0]["latency_ns"][3] = -5;
  {
    std::ofstream f(bad);
    f << j.dump();
  }
  r = run_cli("compare " + bad + " " + b, d);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out, "error: " + bad + ": cases[0].samples[0].latency_ns[3] is -5, expected a non-negative integer\n");

  r = run_cli("compare --help", d);
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("malformed results file"), std::string::npos);
}

}  // namespace compare_test
