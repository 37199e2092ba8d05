// config_test.cpp: config.json parsing, presets and their errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "engine/error.h"

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
