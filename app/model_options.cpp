// model_options.cpp: see model_options.h.
#include "app/model_options.h"

#include <omp.h>

#include <algorithm>

#include "cli/command.h"
#include "engine/checkpoint_cache.h"
#include "engine/engine.h"
#include "engine/device_info.h"
#include "common/error.h"
#include "common/log.h"
#include "model/config.h"
#include "variants/stages.h"

namespace moebench::app {

void add_model_options(CLI::App& sub, ModelOptions& o) {
  auto* m = sub.add_option("--model", o.model,
                           "Checkpoint folder (config.json + safetensors), ORG/NAME[@REV] from the local Hugging Face "
                           "cache, or synthetic:PRESET[:layers=N][:dtype=F]");
  auto* p = sub.add_option("--preset", o.preset, "Synthetic model of a preset shape: " + preset_list());
  m->excludes(p);
  sub.add_option("--seed", o.seed, "Seed (synthetic weights and sampling)");
  sub.add_option("--backend", o.backend, "auto|cpu|cuda (auto: cuda when a GPU is present)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  sub.add_option("--tokenizer", o.tokenizer, "tokenizer.json (default: MODEL/tokenizer.json, else the built-in Mistral one)");
  sub.add_option("--max-model-len", o.max_model_len, "Longest sequence (prompt + new tokens)")->check(moebench::app::kPositiveNumber);
  sub.add_option("--gpu-mem-budget", o.gpu_mem_budget, "Hard cap on device memory, e.g. 22GiB (cuda)");
  sub.add_option("--stage", o.stage, "Optimisation stage preset: " + stage_list() + " (`moebench info` says what each sets)");
  sub.add_option("--routing", o.routing, "Routing source: model|uniform|mixtral-locality|fine-grained-locality|trace:FILE");
  sub.add_option("--threads", o.threads, "OpenMP threads of the CPU engine (default: OpenMP's, all hardware threads)")
      ->check(CLI::Range(1, 1024));
  sub.add_option("--set", o.sets, "Override a setting, key=value (repeatable; see `moebench info`)");
}

suites::Overrides suite_overrides(const ModelOptions& o, const std::string& spec) {
  suites::Overrides x;
  x.model = spec;
  const bool routing_given = !o.routing.empty() || std::any_of(o.sets.begin(), o.sets.end(), [](const std::string& kv) {
    return kv.rfind("routing=", 0) == 0;
  });
  if (routing_given) x.settings.emplace_back("routing", settings_from(o).routing);  // what --routing and --set make of it
  return x;
}

EngineSettings settings_from(const ModelOptions& o) {
  EngineSettings s = o.stage.empty() ? EngineSettings{} : stage_settings(o.stage);
  if (!o.routing.empty()) s.set("routing", o.routing);
  if (o.stage.empty() || o.max_model_len != 1024) s.max_model_len = o.max_model_len;
  if (!o.gpu_mem_budget.empty()) s.set("gpu_mem_budget", o.gpu_mem_budget);
  for (auto& kv : o.sets) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) fail("--set '{}': expected key=value", kv);
    s.set(kv.substr(0, eq), kv.substr(eq + 1));
  }
  s.validate();
  return s;
}

WeightSource open_weights(const ModelOptions& o) {
  if (o.preset.empty() && o.model.empty()) fail("no model given: pass --model DIR|synthetic:PRESET or --preset PRESET");
  WeightSource w = WeightSource::open(o.preset.empty() ? o.model : "synthetic:" + o.preset, o.seed);
  return with_files_for_tier(std::move(w), settings_from(o).expert_tier);
}

std::string resolve_backend(const ModelOptions& o) {
  if (o.backend == "cpu") return "cpu";
  bool gpu = !cuda_devices().empty();
  if (o.backend == "cuda" && !gpu)
    fail("--backend cuda: no usable CUDA device ({})", cuda_compiled() ? cuda_unavailable_reason() : "built without CUDA");
  return gpu ? "cuda" : "cpu";
}

void apply_threads(const ModelOptions& o) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
}

std::unique_ptr<Model> make_model(const ModelOptions& o, const WeightSource& w, profiler::Profiler* prof) {
  apply_threads(o);
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = resolve_backend(o);
  ctx.settings = settings_from(o);
  ctx.prof = prof;
  return create_model(ctx);
}


}  // namespace moebench::app
