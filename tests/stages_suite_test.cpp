// stages_suite_test.cpp: the CPU stage table (suites/stages.json) tells the stages
// apart by what they do, not by how fast this machine is: baseline reads experts
// from disk, P0 from pinned host memory, both with LRU; P1 and P2 add the LFU
// policy with prefetch and a warm-up on another prompt than the measured one; the
// slot budget leaves most experts out so every stage misses. Run on one case, every
// stage finishes, generates the same tokens, and P1/P2 hit the cache more often
// than P0.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include "reports/results.h"
#include "suites/runner.h"
#include "suites/suite.h"
#include "tests/test_util.h"

namespace stages_suite_test {

using namespace moebench;
using namespace moebench::suites;

namespace {

std::string cpu(const std::string&) { return "cpu"; }

const Suite& stages_suite() {
  setenv("MOEBENCH_SUITES_DIR", (test::source_dir() + "/suites").c_str(), 1);
  static Suite s = load_suite("stages");  // instances point into it
  return s;
}

}  // namespace

TEST(StagesSuite, EachStageHasItsTierAndPolicyAndTheSlotsLeaveExpertsOut) {
  const std::vector<Instance> all = expand(stages_suite(), {}, cpu);
  std::map<std::string, int> per_stage;
  for (const Instance& in : all) {
    SCOPED_TRACE(in.case_name + " " + in.settings.stage);
    ++per_stage[in.settings.stage];
    EXPECT_EQ(in.backend, "cpu");
    EXPECT_GE(in.repetitions, 6) << "fewer repetitions cannot give a 95% interval of the median";
    // 12 slots of the tiny model's 4 x 8 experts: every stage pays for misses.
    EXPECT_EQ(in.settings.cache_slots, 12);
    const std::string& st = in.settings.stage;
    EXPECT_EQ(in.settings.expert_tier, st == "baseline" ? "disk" : "pinned");
    EXPECT_EQ(in.settings.cache_policy, st == "baseline" || st == "P0" ? "lru" : "lfu-prefetch");
    // P1 and P2 warm their cache first (the runner warms it on another prompt of the
    // same length, never on the generation it measures); baseline and P0 start cold.
    EXPECT_EQ(in.warmup_runs > 0, st == "P1" || st == "P2");
  }
  EXPECT_EQ(per_stage.size(), 4u);
  for (const auto& [stage, n] : per_stage) EXPECT_EQ(n, per_stage.begin()->second) << stage;
}

TEST(StagesSuite, EveryStageFinishesAndP1P2HitMoreThanP0) {
  std::vector<Instance> one;
  Overrides o;
  o.repetitions = 1;  // the hit rates do not depend on how many
  for (const Instance& in : expand(stages_suite(), o, cpu))
    if (in.case_name == "short-fox") one.push_back(in);
  ASSERT_EQ(one.size(), 4u);
  test::TempDir d;
  RunOptions opt;
  opt.out_path = d.str("stages.json");
  opt.measure_bandwidth = false;
  const RunOutcome r = run_suite(one, opt);
  EXPECT_EQ(r.failed, 0);
  std::map<std::string, const reports::Case*> by_stage;
  for (const reports::Case& c : r.results.cases) {
    EXPECT_EQ(c.status, reports::CaseStatus::ok) << c.settings.stage << ": " << c.error;
    EXPECT_GT(c.experts.hits + c.experts.misses, 0) << c.settings.stage;
    by_stage[c.settings.stage] = &c;
  }
  ASSERT_EQ(by_stage.size(), 4u);
  const double p0 = by_stage["P0"]->experts.hit_rate();
  EXPECT_GT(by_stage["baseline"]->experts.misses, 0);
  EXPECT_GT(by_stage["P0"]->experts.misses, 0);
  EXPECT_GT(by_stage["P1"]->experts.hit_rate(), p0);
  EXPECT_GT(by_stage["P2"]->experts.hit_rate(), p0);
  // Variants never change what is computed.
  for (const auto& [stage, c] : by_stage) EXPECT_EQ(c->output_token_hash, by_stage["baseline"]->output_token_hash) << stage;
}

}  // namespace stages_suite_test
