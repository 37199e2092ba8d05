// cmd_logits.cpp: `moebench logits` runs a fixed token sequence through the model
// (teacher forcing) and writes the logits of every position as a NumPy .npy file,
// float32 (n_ids, vocab): row i holds the logits after token i, i.e. the prediction
// for position i+1. The first --prompt-len ids go through one prefill forward; every
// later id goes through its own decode step (n = 1, KV cache), so the decode path is
// what those rows check. Used by tools/mixtral_oracle.py to compare with transformers.
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/command.h"
#include "app/model_options.h"
#include "common/error.h"
#include "common/atomic_file.h"

namespace {
struct Args {
  moebench::app::ModelOptions model;
  std::string ids;       // comma-separated token ids
  std::string ids_file;  // the same, in a file (commas, spaces or newlines)
  int prompt_len = 1;
  std::string out;
};

std::vector<int32_t> parse_ids(const std::string& text, const std::string& what, int vocab) {
  std::vector<int32_t> ids;
  std::string s = text;
  for (char& c : s)
    if (c == ',' || c == '\n' || c == '\t' || c == '\r') c = ' ';
  std::istringstream in(s);
  std::string tok;
  while (in >> tok) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != tok.size()) moebench::fail("{}: '{}' is not a token id", what, tok);
    if (v < 0 || v >= vocab) moebench::fail("{}: token id {} is outside the vocabulary [0, {})", what, v, vocab);
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) moebench::fail("{}: no token ids", what);
  return ids;
}

// NumPy format 1.0: magic, version, header length, a dict padded to 64 bytes, raw data.
std::string npy_f32(const std::vector<float>& data, size_t rows, size_t cols) {
  std::string header = fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", rows, cols);
  const size_t pre = 10;
  header.append(64 - (pre + header.size() + 1) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  return out;
}

int run(const Args& a) {
  using namespace moebench;
  if (a.ids.empty() == a.ids_file.empty()) fail("pass exactly one of --ids LIST and --ids-file FILE");
  check_paths({{"--ids-file", a.ids_file}, {"--tokenizer", a.model.tokenizer}}, {{"--out", a.out}});
  WeightSource w = app::open_weights(a.model);
  const int V = w.config().vocab_size;
  std::vector<int32_t> ids;
  if (!a.ids.empty()) {
    ids = parse_ids(a.ids, "--ids", V);
  } else {
    ids = parse_ids(read_file(a.ids_file), "--ids-file " + a.ids_file, V);
  }
  const int n = static_cast<int>(ids.size());
  if (a.prompt_len > n) fail("--prompt-len {} exceeds the {} ids given", a.prompt_len, n);
  auto model = app::make_model(a.model, w);
  if (n > model->max_seq_len())
    fail("{} ids exceed the model's max_model_len {} (raise --max-model-len)", n, model->max_seq_len());
  std::vector<float> logits(static_cast<size_t>(n) * V), last(V);
  model->forward(ids.data(), a.prompt_len, 0, last.data(), logits.data());
  for (int i = a.prompt_len; i < n; ++i) model->forward(&ids[i], 1, i, logits.data() + static_cast<size_t>(i) * V);
  write_file_atomic(a.out, npy_f32(logits, n, V));
  fmt::print("# {} backend, model {} ({}): {} ids ({} prefill + {} decode steps), logits ({}, {}) float32 -> {}\n",
             model->backend(), w.config().name, w.describe(), n, a.prompt_len, n - a.prompt_len, n, V, a.out);
  return 0;
}
}  // namespace

MOEBENCH_COMMAND(logits, "Teacher-force a token sequence and write every position's logits (.npy, float32)",
                 [](CLI::App& sub) {
                   auto a = std::make_shared<Args>();
                   moebench::app::add_model_options(sub, a->model);
                   sub.add_option("--ids", a->ids, "Token ids, comma-separated (e.g. 1,415,2936)");
                   sub.add_option("--ids-file", a->ids_file, "File of token ids (commas, spaces or newlines)");
                   sub.add_option("--prompt-len", a->prompt_len,
                                  "How many leading ids go through one prefill forward; the rest are decoded one by one")
                       ->check(CLI::PositiveNumber);
                   sub.add_option("--out", a->out, "Output .npy file: float32 (n_ids, vocab)")->required();
                   return [a] { return run(*a); };
                 });
