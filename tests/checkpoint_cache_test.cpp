// checkpoint_cache_test.cpp: the disk tier on a synthetic model reads the same weights
// from a checkpoint written once to the cache; the CPU stage table's expert counters
// separate the stages (counts only: no timing verdict).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "engine/checkpoint_cache.h"
#include "model/config.h"
#include "engine/weights.h"
#include "suites/runner.h"
#include "suites/suite.h"
#include "test_util.h"

namespace checkpoint_cache_test {

using namespace moebench;
namespace fs = std::filesystem;

namespace {
struct CacheDir {
  test::TempDir d;
  CacheDir() { setenv("MOEBENCH_CACHE_DIR", d.str().c_str(), 1); }
  ~CacheDir() { unsetenv("MOEBENCH_CACHE_DIR"); }
};
}  // namespace

TEST(CheckpointCache, DiskTierGetsTheSameWeightsWrittenOnce) {
  CacheDir cache;
  WeightSource synth = WeightSource::open("synthetic:micro", 5);
  WeightSource resident = with_files_for_tier(synth, "pinned");
  EXPECT_TRUE(resident.is_synthetic());
  WeightSource disk = with_files_for_tier(synth, "disk");
  ASSERT_NE(disk.ckpt(), nullptr);
  EXPECT_EQ(fs::path(disk.ckpt()->dir()).parent_path(), fs::path(cache.d.str()) / "checkpoints");
  const auto written = fs::last_write_time(fs::path(disk.ckpt()->dir()) / "config.json");
  WeightSource again = with_files_for_tier(synth, "disk");
  EXPECT_EQ(again.ckpt()->dir(), disk.ckpt()->dir());
  EXPECT_EQ(fs::last_write_time(fs::path(again.ckpt()->dir()) / "config.json"), written);  // reused, not rewritten
  for (const TensorSpec& s : model_tensor_specs(synth.config())) {
    std::vector<float> a(static_cast<size_t>(s.numel())), b(a.size());
    synth.read_f32(s, a.data());
    disk.read_f32(s, b.data());
    ASSERT_EQ(a, b) << s.name;
  }
  // No half-written folder is left beside it.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(fs::path(cache.d.str()) / "checkpoints")) entries += !e.path().empty();
  EXPECT_EQ(entries, 1);
}

TEST(CheckpointCache, CpuStageTableSeparatesTheStages) {
  CacheDir cache;
  setenv("MOEBENCH_SUITES_DIR", (test::source_dir() + "/suites").c_str(), 1);
  suites::Suite s = suites::load_suite("stages");
  suites::Overrides o;
  o.repetitions = 1;
  std::vector<suites::Instance> all = suites::expand(s, o, [](const std::string&) { return std::string("cpu"); });
  std::vector<suites::Instance> fox;
  for (auto& in : all)
    if (in.case_name == "short-fox") fox.push_back(in);
  ASSERT_EQ(fox.size(), 4u);
  suites::RunOptions opt;
  test::TempDir out;
  opt.out_path = out.str("stages.json");
  opt.measure_bandwidth = false;
  suites::RunOutcome r = suites::run_suite(fox, opt);
  ASSERT_EQ(r.failed, 0);
  ASSERT_EQ(r.results.cases.size(), 4u);
  auto hit_rate = [](const reports::Case& c) {
    return static_cast<double>(c.experts.hits) / static_cast<double>(c.experts.hits + c.experts.misses);
  };
  const reports::Case &base = r.results.cases[0], &p0 = r.results.cases[1], &p1 = r.results.cases[2],
                      &p2 = r.results.cases[3];
  EXPECT_EQ(base.settings.stage, "baseline");
  EXPECT_EQ(p2.settings.stage, "P2");
  EXPECT_GT(base.experts.misses, 0);                 // the slots do not hold the model
  EXPECT_GT(base.experts.bytes_moved, 0);
  // The baseline (loaded first) read its experts from the cached checkpoint.
  EXPECT_NE(r.results.model.weight_source.find(cache.d.str()), std::string::npos) << r.results.model.weight_source;
  EXPECT_GT(hit_rate(p1), hit_rate(p0) + 0.15);      // LFU + prefetch after a warm-up on another stream
  EXPECT_GT(hit_rate(p2), hit_rate(p0) + 0.15);
  EXPECT_EQ(p1.output_token_hash, p0.output_token_hash);  // variants never change what is computed
  EXPECT_EQ(p2.output_token_hash, base.output_token_hash);
}

}  // namespace checkpoint_cache_test
