// stages_quant_test.cpp: the quantised stage presets (P2-int4, P2-int8, P2-fp8: P2 with
// expert_dtype set, nothing else changed) and the stages-gpu-quant suite as the CUDA
// backend expands it: baseline..P2 with bf16 experts at 22 GiB beside P2-int4 at 18 GiB,
// each for mixtral-locality and uniform routing, pinned store, the 32-layer Mixtral
// shape, warm-up runs, and a reload (TTFT cold) before every case.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>
#include <string>

#include "suites/suite.h"
#include "tests/test_util.h"
#include "variants/stages.h"

namespace stages_quant_test {

using namespace moebench;
using namespace moebench::suites;

namespace {
std::string cuda_backend(const std::string&) { return "cuda"; }
}  // namespace

TEST(StagesQuant, QuantisedPresetsAreP2WithTheExpertDtypeOnly) {
  const EngineSettings p2 = stage_settings("P2");
  for (const char* q : {"int4", "int8", "fp8"}) {
    SCOPED_TRACE(q);
    EngineSettings s = stage_settings(std::string("P2-") + q);
    EXPECT_EQ(s.expert_dtype, q);
    EXPECT_EQ(s.stage, std::string("P2-") + q);
    s.expert_dtype = p2.expert_dtype;
    s.stage = p2.stage;
    EXPECT_EQ(s.to_list(), p2.to_list());
  }
}

TEST(StagesQuant, SuitePutsBf16StagesAt22GiBBesideP2Int4At18GiB) {
  setenv("MOEBENCH_SUITES_DIR", (test::source_dir() + "/suites").c_str(), 1);
  const Suite s = load_suite("stages-gpu-quant");
  const auto v = expand(s, {}, cuda_backend);
  std::map<std::string, std::set<std::string>> routings;  // stage -> routings
  for (const Instance& in : v) {
    SCOPED_TRACE(in.case_name);
    EXPECT_EQ(in.model, "mixtral-8x7b");
    EXPECT_EQ(in.settings.expert_tier, "pinned");
    EXPECT_TRUE(in.cold_each_case);
    const std::string& st = in.settings.stage;
    routings[st].insert(in.settings.routing);
    if (st == "P2-int4") {
      EXPECT_EQ(in.settings.expert_dtype, "int4");
      EXPECT_EQ(in.settings.gpu_mem_budget, "18GiB");
    } else {
      EXPECT_EQ(in.settings.expert_dtype, "bf16");
      EXPECT_EQ(in.settings.gpu_mem_budget, "22GiB");
    }
    if (st == "P1" || st == "P2" || st == "P2-int4") {
      EXPECT_GT(in.warmup_runs, 0);
    }
  }
  for (const char* st : {"baseline", "P0", "P1", "P2", "P2-int4"})
    EXPECT_EQ(routings[st], (std::set<std::string>{"mixtral-locality", "uniform"})) << st;
  EXPECT_EQ(v.size(), 10u);
}

}  // namespace stages_quant_test
