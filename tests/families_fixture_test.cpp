// families_fixture_test.cpp: the CPU reference against HF transformers'
// Qwen3MoeForCausalLM, OlmoeForCausalLM and Qwen2MoeForCausalLM. The fixtures
// (tests/fixtures/families/<family>) were produced by tools/families_oracle.py on the GPU
// machine: tiny random models saved by save_pretrained, the logits of every position of
// ids.txt (the prompt, then transformers' 16 greedy tokens) from transformers itself (fp32,
// eager attention, on the CPU).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/cpu_model.h"
#include "engine/generate.h"
#include "test_util.h"

namespace families_fixture_test {

using namespace moebench;

namespace {

// A (rows, cols) little-endian float32 C-order .npy file (format 1.0).
std::vector<float> read_npy(const std::string& path, int* rows, int* cols) {
  const std::string d = test::read_file(path);
  if (d.size() < 10 || d.compare(0, 6, "\x93NUMPY") != 0) ADD_FAILURE() << path << ": not a .npy file";
  const size_t hlen = static_cast<unsigned char>(d[8]) | static_cast<size_t>(static_cast<unsigned char>(d[9])) << 8;
  const std::string h = d.substr(10, hlen);
  EXPECT_NE(h.find("'<f4'"), std::string::npos) << h;
  const size_t s = h.find("'shape': (");
  std::sscanf(h.c_str() + s, "'shape': (%d, %d)", rows, cols);
  std::vector<float> v(static_cast<size_t>(*rows) * *cols);
  EXPECT_EQ(d.size(), 10 + hlen + v.size() * 4) << path;
  std::memcpy(v.data(), d.data() + 10 + hlen, std::min(d.size() - 10 - hlen, v.size() * 4));
  return v;
}

std::vector<int32_t> read_ids(const std::string& path) {
  std::string s = test::read_file(path);
  for (char& c : s)
    if (c == ',') c = ' ';
  std::istringstream in(s);
  std::vector<int32_t> ids;
  for (int32_t t; in >> t;) ids.push_back(t);
  return ids;
}

}  // namespace

class HfFamilyFixture : public ::testing::TestWithParam<const char*> {};

// Prefill of the prompt, then one decode step per id (KV cache), as `moebench logits`:
// every position within 1e-4 of transformers, and our argmax equal to transformers'
// greedy tokens from the last prompt position on.
TEST_P(HfFamilyFixture, LogitsAndGreedyTokensMatchTransformers) {
  const std::string dir = test::fixture(std::string("families/") + GetParam());
  const auto ref_json = nlohmann::json::parse(test::read_file(dir + "_ref/ref.json"));
  const auto ids = read_ids(dir + "_ref/ids.txt");
  const auto prompt = ref_json.at("prompt").get<std::vector<int32_t>>();
  const auto greedy = ref_json.at("greedy_tokens").get<std::vector<int32_t>>();
  int rows = 0, cols = 0;
  const auto ref = read_npy(dir + "_ref/ref.npy", &rows, &cols);
  auto src = WeightSource::checkpoint(dir);
  ASSERT_EQ(src.config().vocab_size, cols);
  ASSERT_EQ(rows, static_cast<int>(ids.size()));
  CpuModel m(src, 64);
  const int V = cols, P = static_cast<int>(prompt.size());
  std::vector<float> all(static_cast<size_t>(rows) * V), last(V);
  m.forward(ids.data(), P, 0, last.data(), all.data());
  for (int i = P; i < rows; ++i) m.forward(&ids[i], 1, i, all.data() + static_cast<size_t>(i) * V);
  for (int p = 0; p < rows; ++p) {
    double d = 0;
    for (int v = 0; v < V; ++v)
      d = std::max(d, std::fabs(static_cast<double>(all[static_cast<size_t>(p) * V + v]) - ref[static_cast<size_t>(p) * V + v]));
    EXPECT_LE(d, 1e-4) << "position " << p;
  }
  std::vector<int32_t> ours;
  for (int p = P - 1; p < rows - 1; ++p) ours.push_back(argmax(all.data() + static_cast<size_t>(p) * V, V));
  EXPECT_EQ(ours, greedy);
}

INSTANTIATE_TEST_SUITE_P(Families, HfFamilyFixture, ::testing::Values("qwen3_moe", "olmoe", "qwen2_moe"));

}  // namespace families_fixture_test
