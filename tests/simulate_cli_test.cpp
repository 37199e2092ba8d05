// simulate_cli_test.cpp: `moebench simulate --model`, `make-trace --model` and
// `simulate-parallel --model`: a model (preset, synthetic spec or checkpoint folder) gives
// the synthetic trace its shape and, in simulate, the bytes one expert load moves (the
// slot layout of its stored format or of --expert-dtype), the same numbers as the shape
// and byte flags spelled out; a model that does not fit the trace or the flags is one line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/device_plan.h"
#include "engine/synth_checkpoint.h"
#include "model/config.h"
#include "tests/test_util.h"

namespace simulate_cli_test {

using namespace moebench;
using test::TempDir;

namespace {

nlohmann::json simulate_json(const std::vector<std::string>& extra, const TempDir& d) {
  std::vector<std::string> args = {"simulate", "--policy", "lru,lfu", "--capacity", "8,16", "--h2d-gbps", "50",
                                   "--tokens", "24", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  const test::CliRun r = test::run_moebench(args, d);
  EXPECT_EQ(r.code, 0) << r.err;
  return r.code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();
}

uint64_t layout_bytes(const ModelConfig& c, QuantFormat f) { return expert_layout(c, f).total_bytes; }

}  // namespace

TEST(SimulateCli, AModelGivesTheTracesShapeAndTheExpertBytes) {
  TempDir d;
  const ModelConfig q = preset_config("qwen3-30b-a3b");
  const auto by_model = simulate_json({"--model", "qwen3-30b-a3b", "--routing", "fine-grained-locality"}, d);
  ASSERT_FALSE(by_model.is_null());
  EXPECT_EQ(by_model.at("model"), "qwen3-30b-a3b");
  EXPECT_EQ(by_model.at("trace").at("layers"), q.num_hidden_layers);
  EXPECT_EQ(by_model.at("trace").at("experts"), q.num_local_experts);
  EXPECT_EQ(by_model.at("trace").at("top_k"), q.num_experts_per_tok);
  EXPECT_EQ(by_model.at("link").at("expert_bytes").get<uint64_t>(), layout_bytes(q, QuantFormat::bf16));
  // The same run with the shape and the bytes spelled out: the same rows.
  const auto by_flags = simulate_json({"--layers", std::to_string(q.num_hidden_layers), "--experts",
                                       std::to_string(q.num_local_experts), "--top-k", std::to_string(q.num_experts_per_tok),
                                       "--expert-bytes", std::to_string(layout_bytes(q, QuantFormat::bf16)), "--routing",
                                       "fine-grained-locality"},
                                      d);
  EXPECT_EQ(by_model.at("results"), by_flags.at("results"));
  // --expert-dtype is an expert of the model in that format; a synthetic spec's dtype is how it stores them.
  const auto int4 = simulate_json({"--model", "qwen3-30b-a3b", "--expert-dtype", "int4", "--routing", "uniform"}, d);
  EXPECT_EQ(int4.at("link").at("expert_bytes").get<uint64_t>(), layout_bytes(q, QuantFormat::int4));
  const auto stored = simulate_json({"--model", "synthetic:qwen3-30b-a3b:dtype=int8:layers=4", "--routing", "uniform"}, d);
  EXPECT_EQ(stored.at("trace").at("layers"), 4);
  EXPECT_EQ(stored.at("link").at("expert_bytes").get<uint64_t>(), layout_bytes(q, QuantFormat::int8));
  // Mixtral-8x7B by model and by the old flags agree.
  const auto mixtral = simulate_json({"--model", "mixtral-8x7b", "--expert-dtype", "fp8", "--routing", "uniform"}, d);
  const auto mixtral_flags = simulate_json({"--expert-dtype", "fp8", "--routing", "uniform"}, d);
  EXPECT_EQ(mixtral.at("link").at("expert_bytes"), mixtral_flags.at("link").at("expert_bytes"));
  EXPECT_EQ(mixtral.at("results"), mixtral_flags.at("results"));
}

TEST(SimulateCli, ACheckpointsStoredFormatIsWhatALoadMoves) {
  TempDir d;
  const ModelConfig c = preset_config("tiny-qwen3");
  write_synthetic_checkpoint(c, 3, DType::bf16, d.str("ckpt"), 0, QuantFormat::int8);
  const auto j = simulate_json({"--model", d.str("ckpt"), "--routing", "uniform"}, d);
  ASSERT_FALSE(j.is_null());
  EXPECT_EQ(j.at("trace").at("experts"), c.num_local_experts);
  EXPECT_EQ(j.at("link").at("expert_bytes").get<uint64_t>(), layout_bytes(c, QuantFormat::int8));
  const auto bf16 = simulate_json({"--model", d.str("ckpt"), "--expert-dtype", "bf16", "--routing", "uniform"}, d);
  EXPECT_EQ(bf16.at("link").at("expert_bytes").get<uint64_t>(), layout_bytes(c, QuantFormat::bf16));  // dequantised
  const test::CliRun twice = test::run_moebench({"simulate", "--model", d.str("ckpt"), "--expert-dtype", "int4", "--routing",
                                                 "uniform", "--policy", "lru", "--capacity", "8", "--h2d-gbps", "50"},
                                                d);
  EXPECT_EQ(twice.code, 1);
  EXPECT_EQ(std::count(twice.err.begin(), twice.err.end(), '\n'), 1) << twice.err;
  EXPECT_NE(twice.err.find("int4"), std::string::npos) << twice.err;
}

TEST(SimulateCli, AModelThatDoesNotFitIsOneLine) {
  TempDir d;
  const std::vector<std::string> run = {"--policy", "lru", "--capacity", "8", "--h2d-gbps", "50", "--tokens", "8"};
  auto sim = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "simulate");
    args.insert(args.end(), run.begin(), run.end());
    return test::run_moebench(args, d);
  };
  test::CliRun r = sim({"--model", "no-such-model", "--routing", "uniform"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err.rfind("--model: no-such-model: not a directory and not a preset", 0), 0u) << r.err;
  r = sim({"--model", "qwen3-30b-a3b", "--layers", "4", "--routing", "uniform"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: --routing trace: 4 layers x 128 experts, top-8, model qwen3-30b-a3b has 48 x 128, top-8\n");
  r = sim({"--model", "qwen3-30b-a3b", "--expert-bytes", "1000", "--routing", "uniform"});
  EXPECT_EQ(r.code, 2);
  // make-trace takes the model's shape; a trace of another shape does not fit a model.
  const test::CliRun made =
      test::run_moebench({"make-trace", "--model", "tiny-qwen3", "--routing", "uniform", "--tokens", "8", "--out", d.str("t.json")}, d);
  ASSERT_EQ(made.code, 0) << made.err;
  const ModelConfig tq = preset_config("tiny-qwen3");
  EXPECT_NE(made.out.find(fmt::format("{} layers x {} experts, top-{}", tq.num_hidden_layers, tq.num_local_experts,
                                      tq.num_experts_per_tok)),
            std::string::npos)
      << made.out;
  EXPECT_EQ(sim({"--model", "tiny-qwen3", "--trace", d.str("t.json")}).code, 0);
  r = sim({"--model", "olmoe-1b-7b", "--trace", d.str("t.json")});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("error: " + d.str("t.json") + ": ", 0), 0u) << r.err;
  // simulate-parallel reads the model's bytes and takes its shape too.
  const test::CliRun par = test::run_moebench({"simulate-parallel", "--model", "qwen3-30b-a3b", "--routing", "uniform",
                                               "--tokens", "8", "--ranks", "2", "--hbm-gbps", "4800", "--json"},
                                              d);
  ASSERT_EQ(par.code, 0) << par.err;
  const auto pj = nlohmann::json::parse(par.out);
  EXPECT_EQ(pj.at("model"), "qwen3-30b-a3b");
  EXPECT_EQ(pj.at("trace").at("experts"), 128);
  const test::CliRun quantised = test::run_moebench({"simulate-parallel", "--model", "synthetic:qwen3-30b-a3b:dtype=int4",
                                                     "--routing", "uniform", "--tokens", "8", "--ranks", "2", "--hbm-gbps", "4800"},
                                                    d);
  EXPECT_EQ(quantised.code, 1);
  EXPECT_EQ(quantised.err, "error: --model synthetic:qwen3-30b-a3b:dtype=int4: its experts are int4; simulate-parallel "
                           "counts bf16 weights (give the model in bf16)\n");
}

}  // namespace simulate_cli_test
