// model_options.cpp: see model_options.h.
#include "app/model_options.h"

#include <filesystem>

#include "engine/engine.h"
#include "engine/device_info.h"
#include "engine/embedded_tokenizer.h"
#include "engine/error.h"
#include "engine/log.h"

namespace moebench::app {

void add_model_options(CLI::App& sub, ModelOptions& o) {
  auto* m = sub.add_option("--model", o.model, "Checkpoint folder (config.json + safetensors) or synthetic:PRESET[:layers=N]");
  auto* p = sub.add_option("--preset", o.preset, "Synthetic model of a preset shape: tiny|micro|small|mixtral-8x7b");
  m->excludes(p);
  sub.add_option("--seed", o.seed, "Seed (synthetic weights and sampling)");
  sub.add_option("--backend", o.backend, "auto|cpu|cuda (auto: cuda when a GPU is present)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  sub.add_option("--tokenizer", o.tokenizer, "tokenizer.json (default: MODEL/tokenizer.json, else the built-in Mistral one)");
  sub.add_option("--max-model-len", o.max_model_len, "Longest sequence (prompt + new tokens)")->check(CLI::PositiveNumber);
  sub.add_option("--gpu-mem-budget", o.gpu_mem_budget, "Hard cap on device memory, e.g. 22GiB (cuda)");
}

WeightSource open_weights(const ModelOptions& o) {
  if (!o.preset.empty()) return WeightSource::open("synthetic:" + o.preset, o.seed);
  if (o.model.empty()) fail("no model given: pass --model DIR|synthetic:PRESET or --preset PRESET");
  return WeightSource::open(o.model, o.seed);
}

std::string resolve_backend(const ModelOptions& o) {
  if (o.backend == "cpu") return "cpu";
  bool gpu = !cuda_devices().empty();
  if (o.backend == "cuda" && !gpu)
    fail("--backend cuda: no usable CUDA device ({})", cuda_compiled() ? cuda_unavailable_reason() : "built without CUDA");
  return gpu ? "cuda" : "cpu";
}

std::unique_ptr<Model> make_model(const ModelOptions& o, const WeightSource& w) {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = resolve_backend(o);
  ctx.settings.max_model_len = o.max_model_len;
  ctx.settings.gpu_mem_budget = o.gpu_mem_budget;
  return create_model(ctx);
}

Tokenizer open_tokenizer(const ModelOptions& o, const WeightSource& w) {
  if (!o.tokenizer.empty()) return Tokenizer::load(o.tokenizer);
  if (w.ckpt()) {
    auto p = std::filesystem::path(w.ckpt()->dir()) / "tokenizer.json";
    if (std::filesystem::exists(p)) return Tokenizer::load(p.string());
  }
  Tokenizer t = Tokenizer::from_json_text(std::string(embedded_mistral_tokenizer_json()), "built-in Mistral tokenizer.json");
  if (t.vocab_size() != w.config().vocab_size)
    fail("model vocab_size is {} but no tokenizer.json was found and the built-in Mistral one has {} tokens: pass --tokenizer FILE",
         w.config().vocab_size, t.vocab_size());
  log::info("using the built-in Mistral tokenizer");
  return t;
}

}  // namespace moebench::app
