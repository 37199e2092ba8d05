// config_test.cpp: config.json parsing, presets and their errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <tuple>
#include <vector>

#include "model/config.h"
#include "common/error.h"
#include "tests/test_util.h"

using namespace moebench;

TEST(Config, PresetMixtralShape) {
  ModelConfig c = preset_config("mixtral-8x7b");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.kv_dim(), 1024);
  // Mixtral-8x7B has 46.7B parameters.
  EXPECT_NEAR(static_cast<double>(c.total_params()) / 1e9, 46.70, 0.01);
}

TEST(Config, RoundTripsThroughJson) {
  ModelConfig c = preset_config("tiny");
  ModelConfig d = config_from_json(config_to_json(c), "x");
  EXPECT_EQ(d.hidden_size, c.hidden_size);
  EXPECT_EQ(d.num_key_value_heads, c.num_key_value_heads);
  EXPECT_FLOAT_EQ(d.rope_theta, c.rope_theta);
}

TEST(Config, MissingFieldNamesIt) {
  auto j = config_to_json(preset_config("tiny"));
  j.erase("num_local_experts");
  try {
    config_from_json(j, "m/config.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m/config.json"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("num_local_experts"), std::string::npos);
  }
}

TEST(Config, WrongTypeAndInconsistentValues) {
  auto j = config_to_json(preset_config("tiny"));
  j["hidden_size"] = "big";
  EXPECT_THROW(config_from_json(j, "c"), Error);
  j = config_to_json(preset_config("tiny"));
  j["num_experts_per_tok"] = 99;
  EXPECT_THROW(config_from_json(j, "c"), Error);
  j = config_to_json(preset_config("tiny"));
  j["model_type"] = "llama";
  EXPECT_THROW(config_from_json(j, "c"), Error);
}

TEST(Config, HeadDimDefaultsAndEosList) {
  auto j = config_to_json(preset_config("tiny"));
  j.erase("head_dim");
  j["eos_token_id"] = {7, 8};
  ModelConfig c = config_from_json(j, "c");
  EXPECT_EQ(c.head_dim, c.hidden_size / c.num_attention_heads);
  EXPECT_EQ(c.eos_token_id, 7);
  EXPECT_EQ(c.more_eos_token_ids, std::vector<int>{8});
  EXPECT_TRUE(c.is_eos(7));
  EXPECT_TRUE(c.is_eos(8));
  EXPECT_FALSE(c.is_eos(2));
  // The list goes back out as a list, and a single id as an int.
  EXPECT_EQ(config_to_json(c).at("eos_token_id"), nlohmann::json({7, 8}));
  EXPECT_EQ(config_to_json(preset_config("tiny")).at("eos_token_id"), nlohmann::json(2));
  EXPECT_EQ(config_from_json(config_to_json(c), "c").more_eos_token_ids, std::vector<int>{8});
}

TEST(Config, UnknownPreset) {
  try {
    preset_config("gpt5");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gpt5"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("mixtral-8x7b"), std::string::npos);
  }
}

namespace {
std::string config_error(const nlohmann::json& j) {
  try {
    config_from_json(j, "m/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

// A shape field far beyond any real model is a one-line error at load, before any
// tensor spec or buffer is sized from it.
TEST(Config, ShapeFieldsAreBounded) {
  for (const auto& [key, value, max] : std::vector<std::tuple<std::string, int64_t, int>>{
           {"num_hidden_layers", 2147483647, 1024},
           {"vocab_size", 1 << 23, 1 << 22},
           {"hidden_size", 1 << 17, 1 << 16},
           {"intermediate_size", 1 << 19, 1 << 18},
           {"num_attention_heads", 2048, 1024},
           {"head_dim", 4096, 1024},
           {"max_position_embeddings", 1 << 25, 1 << 24}}) {
    auto j = config_to_json(preset_config("tiny"));
    j[key] = value;
    EXPECT_EQ(config_error(j), fmt::format("m/config.json: field '{}' is {}, expected at most {}", key, value, max));
  }
  auto j = config_to_json(preset_config("tiny"));
  j["num_hidden_layers"] = 1024;
  EXPECT_EQ(config_error(j), "");
}

TEST(Config, TokenIdsOutsideTheVocabularyAreRefused) {
  auto j = config_to_json(preset_config("tiny"));  // vocab_size 32000
  j["bos_token_id"] = 32000;
  EXPECT_EQ(config_error(j), "m/config.json: field 'bos_token_id' is 32000, expected a token id in [0, vocab_size 32000)");
  j = config_to_json(preset_config("tiny"));
  j["eos_token_id"] = {99999, 2};
  EXPECT_EQ(config_error(j), "m/config.json: field 'eos_token_id' is 99999, expected a token id in [0, vocab_size 32000)");
  j["eos_token_id"] = -1;
  EXPECT_EQ(config_error(j), "m/config.json: field 'eos_token_id' is -1, expected a token id (0 or more)");
  j["eos_token_id"] = 31999;
  EXPECT_EQ(config_error(j), "");
  j["eos_token_id"] = {2, 32000};
  EXPECT_EQ(config_error(j), "m/config.json: field 'eos_token_id' lists 32000, expected token ids in [0, vocab_size 32000)");
  j["eos_token_id"] = nlohmann::json::array();
  EXPECT_EQ(config_error(j), "m/config.json: field 'eos_token_id' is [], expected an integer or a list of integers");
  j["eos_token_id"] = {2, "x"};
  EXPECT_EQ(config_error(j), "m/config.json: field 'eos_token_id' is [2,\"x\"], expected an integer or a list of integers");
}

// generation_config.json's eos_token_id replaces config.json's, as transformers' generate takes
// it (Qwen3 lists [151645, 151643] there); a broken one names the file and field, and leaves
// the config as it was.
TEST(Config, GenerationConfigEosList) {
  using test::write_file;
  const test::TempDir d;
  const std::string gen = d.str("generation_config.json");
  ModelConfig c = preset_config("tiny");
  write_file(gen, R"({"bos_token_id": 1, "eos_token_id": [5, 6, 7], "do_sample": true})");
  apply_generation_config(c, gen);
  EXPECT_EQ(c.eos_token_id, 5);
  EXPECT_EQ(c.more_eos_token_ids, (std::vector<int>{6, 7}));
  write_file(gen, R"({"do_sample": false})");  // no eos_token_id: config.json's stays
  apply_generation_config(c, gen);
  EXPECT_EQ(c.eos_token_id, 5);
  auto error_of = [&](const std::string& text) -> std::string {
    write_file(gen, text);
    ModelConfig e = preset_config("tiny");
    try {
      apply_generation_config(e, gen);
    } catch (const Error& x) {
      EXPECT_EQ(e.eos_token_id, 2);
      EXPECT_TRUE(e.more_eos_token_ids.empty());
      return x.what();
    }
    return "";
  };
  EXPECT_EQ(error_of(R"({"eos_token_id": [2, 40000]})"),
            gen + ": field 'eos_token_id' lists 40000, expected token ids in [0, vocab_size 32000)");
  EXPECT_EQ(error_of(R"({"eos_token_id": "2"})"),
            gen + ": field 'eos_token_id' is \"2\", expected an integer or a list of integers");
  EXPECT_EQ(error_of("[1]"), gen + ": expected a JSON object, found array");
  EXPECT_NE(error_of("{").find(gen + ": not valid JSON"), std::string::npos);
}

// ---- engine settings (model/settings.h) ----
#include "model/settings.h"

namespace config_test {

namespace {
std::string set_error(EngineSettings& s, const std::string& key, const std::string& value) {
  try {
    s.set(key, value);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Settings, EveryKnobRoundTripsThroughItsText) {
  EngineSettings s;
  s.set("fused_decode_max_tokens", "5");
  s.set("prefetch_accuracy", "0.25");
  s.set("dispatch", "grouped");
  EngineSettings back;
  for (const auto& [k, v] : s.to_list()) back.set(k, v);
  EXPECT_EQ(back.to_list(), s.to_list());
  EXPECT_EQ(back.fused_decode_max_tokens, 5);
  EXPECT_EQ(setting_keys().size(), s.to_list().size());
  EXPECT_NO_THROW(back.validate());
}

TEST(Settings, BadValuesGiveOneLineNamingKnobValueAndRange) {
  EngineSettings s;
  for (const char* bad : {"0", "9", "two"}) {
    const std::string e = set_error(s, "fused_decode_max_tokens", bad);
    EXPECT_NE(e.find("fused_decode_max_tokens=" + std::string(bad)), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  EXPECT_NE(set_error(s, "fused_decode_max_tokens", "9").find("1..8"), std::string::npos);
  EXPECT_NE(set_error(s, "prefetch_accuracy", "1.5").find("[0, 1]"), std::string::npos);
  EXPECT_NE(set_error(s, "dispatch", "loop").find("serial|grouped|fused"), std::string::npos);
  const std::string unknown = set_error(s, "fused_max", "2");
  EXPECT_NE(unknown.find("unknown setting 'fused_max'"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("fused_decode_max_tokens"), std::string::npos) << unknown;  // lists the knobs
  EXPECT_EQ(s.fused_decode_max_tokens, 2);  // a refused value leaves the knob as it was
}

TEST(Settings, GpuMemBudgetMustBeAPositiveByteCount) {
  EngineSettings s;
  for (const char* bad : {"abc", "-1GiB", "nan", "0", "inf"}) {
    EXPECT_EQ(set_error(s, "gpu_mem_budget", bad),
              fmt::format("setting gpu_mem_budget={}: expected a positive byte count, e.g. 22GiB, 512MiB, 80GB", bad));
    EXPECT_EQ(s.gpu_mem_budget, "");
  }
  EXPECT_EQ(set_error(s, "gpu_mem_budget", "22GiB"), "");
  EXPECT_EQ(s.gpu_mem_budget, "22GiB");
  s.gpu_mem_budget = "abc";  // set around the setter: validate() still refuses it
  EXPECT_THROW(s.validate(), Error);
}

}  // namespace config_test
