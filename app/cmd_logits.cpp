// cmd_logits.cpp: `moebench logits` runs a fixed token sequence through the model
// (teacher forcing) and writes the logits of every position as a NumPy .npy file,
// float32 (n_ids, vocab): row i holds the logits after token i, i.e. the prediction
// for position i+1. The first --prompt-len ids go through one prefill forward; every
// later id goes through its own decode step (n = 1, KV cache), so the decode path is
// what those rows check. Used by tools/mixtral_oracle.py to compare with transformers.
// --routing-out writes the experts the model's router chose for every position and layer
// (tools/families_oracle.py holds the logits to a tolerance only while they match the
// reference's choices: a near-tied router score is a discrete jump, not rounding).
#include <algorithm>
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
#include "engine/cpu_model.h"
#include "engine/engine.h"
#if MOEBENCH_CUDA_MODEL
#include "engine/cuda/cuda_model.h"
#endif

namespace cmd_logits {

namespace {
struct Args {
  moebench::app::ModelOptions model;
  std::string ids;       // comma-separated token ids
  std::string ids_file;  // the same, in a file (commas, spaces or newlines)
  int prompt_len = 1;
  std::string out;
  std::string routing_out;  // "position layer e1 .. ek" lines, experts ascending
};

// Collects the router's choices through the model's routing observer: one line per
// (position, layer), "position layer e1 .. ek" with the experts ascending.
struct RoutingLines {
  int k = 0;
  std::vector<std::string> lines;
  void operator()(int layer, int pos0, int n, const int32_t* ids, const float*) {
    for (int i = 0; i < n; ++i) {
      std::vector<int32_t> e(ids + static_cast<size_t>(i) * k, ids + static_cast<size_t>(i + 1) * k);
      std::sort(e.begin(), e.end());
      std::string l = fmt::format("{} {}", pos0 + i, layer);
      for (int32_t x : e) l += fmt::format(" {}", x);
      lines.push_back(l + "\n");
    }
  }
};

// Hooks `rec` to the model's router (cpu or cuda backend); false when the model has none.
bool observe_routing(moebench::Model& m, RoutingLines& rec) {
  if (auto* c = dynamic_cast<moebench::CpuModel*>(&m)) {
    c->set_routing_observer(std::ref(rec));
    return true;
  }
#if MOEBENCH_CUDA_MODEL
  if (auto* g = dynamic_cast<moebench::cuda::CudaModel*>(&m)) {
    g->set_routing_observer(std::ref(rec));
    return true;
  }
#endif
  return false;
}

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
  check_paths({{"--ids-file", a.ids_file}, {"--tokenizer", a.model.tokenizer}},
              {{"--out", a.out}, {"--routing-out", a.routing_out}});
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
  RoutingLines routing;
  routing.k = w.config().num_experts_per_tok;
  if (!a.routing_out.empty() && !observe_routing(*model, routing))
    fail("--routing-out: the {} backend's model does not report its routing", model->backend());
  std::vector<float> logits(static_cast<size_t>(n) * V), last(V);
  model->forward(ids.data(), a.prompt_len, 0, last.data(), logits.data());
  for (int i = a.prompt_len; i < n; ++i) model->forward(&ids[i], 1, i, logits.data() + static_cast<size_t>(i) * V);
  write_file_atomic(a.out, npy_f32(logits, n, V));
  if (!a.routing_out.empty()) {
    std::string text;
    for (const auto& l : routing.lines) text += l;
    write_file_atomic(a.routing_out, text);
  }
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
                       ->check(moebench::app::kPositiveNumber);
                   sub.add_option("--out", a->out, "Output .npy file: float32 (n_ids, vocab)")->required();
                   sub.add_option("--routing-out", a->routing_out,
                                  "Also write the experts chosen at every position and layer: lines "
                                  "'position layer e1 .. ek' (experts ascending)");
                   return [a] { return run(*a); };
                 });

}  // namespace cmd_logits
