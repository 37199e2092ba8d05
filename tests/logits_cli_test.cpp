// logits_cli_test.cpp: `moebench logits` (app/cmd_logits.cpp) — the .npy it writes holds,
// row by row, the same logits as the model run in process (prefill rows, then one decode
// step per id), and bad input is a one-line error with exit code 1. CPU backend (CI).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <algorithm>
#include <map>
#include <sstream>

#include "engine/cpu_model.h"
#include "engine/weight_source.h"
#include "tests/test_util.h"
#include "variants/routing_trace.h"

namespace logits_cli_test {

using namespace moebench;
using moebench::test::TempDir;

namespace {

using test::moebench_exe;

// Runs argv with stdout/stderr to files; returns the exit code.
int run(const std::vector<std::string>& args, const std::string& out, const std::string& err) {
  return test::wait_exit(test::spawn(args, out, err));
}

// A (rows, cols) float32 .npy written by cmd_logits.
std::vector<float> read_npy(const std::string& path, size_t* rows, size_t* cols) {
  const std::string d = test::read_file(path);
  EXPECT_EQ(d.compare(0, 6, "\x93NUMPY"), 0);
  const size_t hlen = static_cast<unsigned char>(d[8]) | (static_cast<unsigned char>(d[9]) << 8);
  EXPECT_EQ((10 + hlen) % 64, 0u) << "numpy pads the header to 64 bytes";
  const std::string header = d.substr(10, hlen);
  EXPECT_NE(header.find("'descr': '<f4'"), std::string::npos) << header;
  EXPECT_EQ(header.back(), '\n');
  const size_t s = header.find("'shape': (");
  EXPECT_NE(s, std::string::npos) << header;
  *rows = std::stoul(header.substr(s + 10));
  *cols = std::stoul(header.substr(header.find(", ", s) + 2));
  std::vector<float> v(*rows * *cols);
  EXPECT_EQ(d.size(), 10 + hlen + v.size() * sizeof(float));
  std::memcpy(v.data(), d.data() + 10 + hlen, std::min(v.size() * sizeof(float), d.size() - 10 - hlen));
  return v;
}

}  // namespace

TEST(LogitsCli, WritesEveryPositionsLogitsAsTheModelComputesThem) {
  TempDir d;
  const std::vector<int32_t> ids{5, 17, 300, 42, 9, 511, 64};
  std::string list;
  for (auto i : ids) {
    if (!list.empty()) list += ',';
    list += std::to_string(i);
  }
  ASSERT_EQ(run({moebench_exe(), "logits", "--preset", "micro", "--seed", "3", "--backend", "cpu", "--ids", list,
                 "--prompt-len", "3", "--out", d.str("l.npy")},
                d.str("out"), d.str("err")),
            0)
      << test::read_file(d.str("err"));
  size_t rows = 0, cols = 0;
  auto got = read_npy(d.str("l.npy"), &rows, &cols);
  auto w = WeightSource::open("synthetic:micro", 3);
  const int V = w.config().vocab_size;
  ASSERT_EQ(rows, ids.size());
  ASSERT_EQ(cols, static_cast<size_t>(V));
  CpuModel m(w, 64);
  std::vector<float> ref(ids.size() * V), last(V);
  m.forward(ids.data(), 3, 0, last.data(), ref.data());
  for (size_t i = 3; i < ids.size(); ++i) m.forward(&ids[i], 1, static_cast<int>(i), &ref[i * V]);
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - ref[i]));
  EXPECT_LE(worst, 1e-5);
  // A decode row differs from the prefill rows (the file is not one row repeated).
  EXPECT_NE(std::memcmp(&got[3 * V], &got[2 * V], V * sizeof(float)), 0);
  EXPECT_NE(test::read_file(d.str("out")).find("7 ids (3 prefill + 4 decode steps), logits (7, 512)"), std::string::npos)
      << test::read_file(d.str("out"));
}

// --routing-out: one line per (position, layer), "position layer e1 .. ek" ascending, the
// choices the model's router made (its observer, in process); fed back as a routing trace
// (--routing trace:FILE, what tools/families_oracle.py does with the reference's choices)
// the run chooses the same experts and gives the same logits.
TEST(LogitsCli, RoutingOutListsTheRoutersChoicesAndATraceOfThemReplaysThem) {
  TempDir d;
  const std::string model = test::fixture("families/olmoe");  // 3 layers, 32 experts, top-8
  const std::vector<int32_t> ids{1, 17, 254, 99, 3, 411, 78, 78, 200};
  const int P = 5, n = static_cast<int>(ids.size());
  std::string list;
  for (auto i : ids) {
    if (!list.empty()) list += ',';
    list += std::to_string(i);
  }
  ASSERT_EQ(run({moebench_exe(), "logits", "--model", model, "--backend", "cpu", "--ids", list, "--prompt-len",
                 std::to_string(P), "--out", d.str("l.npy"), "--routing-out", d.str("r.txt")},
                d.str("out"), d.str("err")),
            0)
      << test::read_file(d.str("err"));
  auto w = WeightSource::checkpoint(model);
  const int L = w.config().num_hidden_layers, K = w.config().num_experts_per_tok;
  std::map<std::pair<int, int>, std::vector<int32_t>> want;  // (position, layer) -> experts ascending
  CpuModel m(w, 64);
  m.set_routing_observer([&](int layer, int pos0, int cnt, const int32_t* e, const float*) {
    for (int i = 0; i < cnt; ++i) {
      std::vector<int32_t> v(e + static_cast<size_t>(i) * K, e + static_cast<size_t>(i + 1) * K);
      std::sort(v.begin(), v.end());
      want[{pos0 + i, layer}] = v;
    }
  });
  std::vector<float> logits(w.config().vocab_size);
  m.forward(ids.data(), P, 0, logits.data());
  for (int i = P; i < n; ++i) m.forward(&ids[i], 1, i, logits.data());
  std::map<std::pair<int, int>, std::vector<int32_t>> got;
  std::istringstream in(test::read_file(d.str("r.txt")));
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    std::istringstream ls(line);
    int pos = -1, layer = -1;
    ls >> pos >> layer;
    std::vector<int32_t> v;
    for (int32_t e; ls >> e;) v.push_back(e);
    got[{pos, layer}] = v;
  }
  EXPECT_EQ(lines, n * L);
  EXPECT_EQ(got, want);
  // The choices as a trace: step 0 the prompt, then one step per decoded id.
  RoutingTrace t;
  t.n_layers = L;
  t.n_experts = w.config().num_local_experts;
  t.top_k = K;
  t.source = "logits_cli_test";
  for (int first = 0; first < n; first += first == 0 ? P : 1) {
    const int cnt = first == 0 ? P : 1;
    RoutingStep& s = t.add_step(cnt, false);
    for (int layer = 0; layer < L; ++layer)
      for (int i = 0; i < cnt; ++i)
        std::copy(want[{first + i, layer}].begin(), want[{first + i, layer}].end(),
                  s.ids.begin() + (static_cast<size_t>(layer) * cnt + i) * K);
  }
  save_trace(t, d.str("trace.json"));
  ASSERT_EQ(run({moebench_exe(), "logits", "--model", model, "--backend", "cpu", "--ids", list, "--prompt-len",
                 std::to_string(P), "--routing", "trace:" + d.str("trace.json"), "--out", d.str("l2.npy"),
                 "--routing-out", d.str("r2.txt")},
                d.str("out"), d.str("err")),
            0)
      << test::read_file(d.str("err"));
  EXPECT_EQ(test::read_file(d.str("r2.txt")), test::read_file(d.str("r.txt")));
  size_t rows = 0, cols = 0, rows2 = 0, cols2 = 0;
  const auto a = read_npy(d.str("l.npy"), &rows, &cols), b = read_npy(d.str("l2.npy"), &rows2, &cols2);
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
  EXPECT_LE(worst, 1e-5);  // the same experts, weighed by the same gate (another order of the same sums)
}

TEST(LogitsCli, BadInputIsAOneLineError) {
  TempDir d;
  test::write_file(d.str("ids.txt"), "1, 2\n3 x7\n");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--ids", "1,x,3"}, "error: --ids: 'x' is not a token id\n"},
      {{"--ids", "1,512"}, "error: --ids: token id 512 is outside the vocabulary [0, 512)\n"},
      {{"--ids", "1,-2"}, "error: --ids: token id -2 is outside the vocabulary [0, 512)\n"},
      {{"--ids", "1,2", "--prompt-len", "3"}, "error: --prompt-len 3 exceeds the 2 ids given\n"},
      {{"--ids-file", d.str("ids.txt")}, "error: --ids-file " + d.str("ids.txt") + ": 'x7' is not a token id\n"},
      {{"--ids", "1,2,3,4,5", "--max-model-len", "4"}, "error: 5 ids exceed the model's max_model_len 4 (raise --max-model-len)\n"},
      {{}, "error: pass exactly one of --ids LIST and --ids-file FILE\n"},
  };
  for (auto& [extra, want] : cases) {
    std::vector<std::string> args{moebench_exe(), "logits", "--preset", "micro", "--backend", "cpu", "--out", d.str("l.npy")};
    args.insert(args.end(), extra.begin(), extra.end());
    EXPECT_EQ(run(args, d.str("out"), d.str("err")), 1) << want;
    EXPECT_EQ(test::read_file(d.str("err")), want);
    EXPECT_FALSE(std::filesystem::exists(d.str("l.npy")));
  }
}

}  // namespace logits_cli_test
