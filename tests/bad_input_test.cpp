// bad_input_test.cpp: inputs that were once taken silently, exhausted memory or
// crashed, each now one clear line and a non-zero exit: non-finite weights (no tokens
// are made up from NaN logits), a GPU budget that is no byte count, layer counts,
// cache capacities, expert sizes and synthetic trace shapes beyond any real model,
// and thread counts that crash the OpenMP runtime.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <tuple>
#include <vector>

#include "engine/cpu_model.h"
#include "common/error.h"
#include "engine/generate.h"
#include "engine/safetensors.h"
#include "engine/synth_checkpoint.h"
#include "engine/weights.h"
#include "tests/test_util.h"

namespace bad_input_test {

using namespace moebench;
using moebench::test::TempDir;
using test::run_moebench;

namespace {

// A micro f32 checkpoint whose final norm weights are all `value`.
std::string poisoned_checkpoint(const TempDir& d, float value) {
  write_synthetic_checkpoint(preset_config("micro"), 1, DType::f32, d.str("m"));
  const std::string file = d.str("m/model.safetensors");
  int64_t offset = 0, n = 0;
  {
    SafetensorsFile f(file);
    const TensorView* t = f.find(names::final_norm());
    offset = static_cast<int64_t>(t->file_offset);
    n = t->numel();
  }
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(offset);
  for (int64_t i = 0; i < n; ++i) io.write(reinterpret_cast<const char*>(&value), sizeof value);
  return d.str("m");
}

std::string generate_error(const std::string& dir, float temperature) {
  WeightSource w = WeightSource::checkpoint(dir);
  CpuModel m(w, 64);
  GenerateOptions opt;
  opt.max_new_tokens = 8;
  opt.stop_at_eos = false;
  opt.sampling.temperature = temperature;
  try {
    generate(m, {1, 5, 9}, opt);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(BadInput, NonFiniteWeightsStopTheGenerationNamingTheStep) {
  TempDir d;
  for (float v : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    const std::string dir = poisoned_checkpoint(d, v);
    for (float temperature : {0.0f, 0.8f}) {
      SCOPED_TRACE(fmt::format("weights {}, temperature {}", v, temperature));
      const std::string e = generate_error(dir, temperature);
      EXPECT_EQ(e.rfind("prefill: logit 0 of 512 is ", 0), 0u) << e;
      EXPECT_NE(e.find("non-finite logits"), std::string::npos) << e;
    }
  }
}

TEST(BadInput, GpuMemBudgetThatIsNoByteCountIsRefusedOnEveryBackend) {
  TempDir d;
  for (const char* bad : {"abc", "-1GiB", "nan"}) {
    test::CliRun r = run_moebench({"generate", "--preset", "tiny", "--backend", "cpu", "--prompt", "hi",
                                   "--max-new-tokens", "2", "--gpu-mem-budget", bad},
                                  d);
    EXPECT_EQ(r.code, 1) << bad;
    EXPECT_EQ(r.err, fmt::format("error: setting gpu_mem_budget={}: expected a positive byte count, e.g. 22GiB, "
                                 "512MiB, 80GB\n",
                                 bad));
  }
}

TEST(BadInput, HugeLayerCountsAreRefusedBeforeAnythingIsAllocated) {
  TempDir d;
  test::CliRun r = run_moebench(
      {"make-model", "--preset", "tiny", "--layers", "2000000000", "--seed", "1", "--out", d.str("m")}, d);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: " + d.str("m/config.json") +
                       ": field 'num_hidden_layers' is 2000000000, expected at most 1024\n");
  r = run_moebench({"generate", "--model", "synthetic:micro:layers=2000000000", "--backend", "cpu", "--prompt", "hi"},
                   d);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: model micro:layers=2000000000: field 'num_hidden_layers' is 2000000000, expected at most 1024\n");
}

TEST(BadInput, SimulatorCapacityAndExpertBytesAreBounded) {
  TempDir d;
  test::CliRun r = run_moebench({"simulate", "--routing", "uniform", "--layers", "4", "--tokens", "10", "--policy",
                                 "lru", "--capacity", "2000000000", "--h2d-gbps", "25"},
                                d);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: expert cache: capacity 2000000000 slots is more than the 32 experts there are (4 layers x "
                   "8); at most 32 slots can be used\n");
  r = run_moebench({"simulate", "--routing", "uniform", "--layers", "4", "--tokens", "10", "--policy", "lru",
                    "--capacity", "8", "--h2d-gbps", "25", "--expert-bytes", "9000000000000000000"},
                   d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("error: simulate: the simulated time passes 2^63 ns"), std::string::npos) << r.err;
}

TEST(BadInput, SyntheticTraceShapesAreBounded) {
  TempDir d;
  for (const auto& [flag, value, said] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"--layers", "2000000000", "--layers: is 2000000000, expected <= 1024"},
           {"--experts", "100000", "--experts: is 100000, expected <= 256"},
           {"--tokens", "2000000000",
            "--tokens: is 2000000000: 128000000000 expert ids (tokens x layers x top-k), expected at most 268435456"}}) {
    test::CliRun r = run_moebench({"make-trace", "--routing", "uniform", flag, value, "--out", d.str("t.json")}, d);
    EXPECT_EQ(r.code, 2) << flag;
    EXPECT_NE(r.err.find(said), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(d.str("t.json")));
  }
}

TEST(BadInput, HugeThreadCountIsRefusedAndTheResultsStay) {
  TempDir d;
  test::write_file(d.str("s.json"), R"({"name": "s", "defaults": {"model": "micro", "backend": "cpu", "cpu_threads": 100000},
    "cases": [{"name": "a", "prompt_tokens": 4, "new_tokens": 2}]})");
  test::write_file(d.str("r.json"), "previous results");
  test::CliRun r = run_moebench({"run", "--suite", d.str("s.json"), "--out", d.str("r.json")}, d);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: " + d.str("s.json") +
                       ": defaults.cpu_threads is 100000, expected an integer in [0, 1024] (0: OpenMP's default)\n");
  EXPECT_EQ(test::read_file(d.str("r.json")), "previous results");
}

// `tokenize --decode`: an id past the file's vocabulary is named (the library skips such ids
// when decoding a model's output, as HF does; a user's explicit id is a mistake to report).
TEST(BadInput, TokenizeDecodeNamesAnIdPastTheVocabulary) {
  TempDir d;
  const std::string file = test::fixture("mistral/tokenizer.json");
  test::CliRun r = run_moebench({"tokenize", "--tokenizer", file, "--decode", "--ids", "13300,32000"}, d);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: --ids: token id 32000 is not in " + file + " (32000 tokens)\n");
  r = run_moebench({"tokenize", "--tokenizer", file, "--decode", "--ids", "1,13300"}, d);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "grabbed\n");
}

// A checkpoint folder's generation_config.json lists more than one eos id (as Qwen3's does):
// generate stops at the first of any of them, as transformers' does.
TEST(Generate, StopsAtAnyIdOfTheGenerationConfigsEosList) {
  const TempDir d;
  write_synthetic_checkpoint(preset_config("micro"), 1, DType::f32, d.str("m"));
  GenerateOptions opt;
  opt.max_new_tokens = 12;
  opt.stop_at_eos = false;
  auto run = [&](const GenerateOptions& o) {
    WeightSource w = WeightSource::checkpoint(d.str("m"));
    CpuModel m(w, 64);
    return std::make_pair(generate(m, {1, 5, 9}, o), w.config());
  };
  const auto [free_run, cfg] = run(opt);
  ASSERT_EQ(free_run.output.size(), 12u);
  // The third token that is not config.json's eos: ends the run where it first occurs.
  int32_t stop = -1;
  size_t first = 0;
  for (size_t i = 0, seen = 0; i < free_run.output.size() && stop < 0; ++i)
    if (free_run.output[i] != cfg.eos_token_id && ++seen == 3) stop = free_run.output[i];
  ASSERT_GE(stop, 0) << "the micro model kept emitting its eos id";
  while (free_run.output[first] != stop && free_run.output[first] != cfg.eos_token_id) ++first;
  test::write_file(d.str("m/generation_config.json"),
                   "{\"eos_token_id\": [" + std::to_string(cfg.eos_token_id) + ", " + std::to_string(stop) + "]}");
  opt.stop_at_eos = true;
  const auto [stopped, cfg2] = run(opt);
  EXPECT_TRUE(cfg2.is_eos(stop));
  EXPECT_TRUE(stopped.stopped_at_eos);
  EXPECT_EQ(stopped.output, std::vector<int32_t>(free_run.output.begin(), free_run.output.begin() + first + 1));
}

}  // namespace bad_input_test
