// model_options.h: the model/backend flags shared by generate, bench and run, and
// how they turn into a Model (the tokenizer: tokenizer_for_model, engine/embedded_tokenizer.h).
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "engine/model.h"
#include "model/settings.h"
#include "engine/weight_source.h"
#include "suites/suite.h"

namespace moebench::profiler {
struct Profiler;
}

namespace moebench::app {

struct ModelOptions {
  std::string model;      // DIR | synthetic:PRESET[:layers=N] | PRESET
  std::string preset;     // shorthand for synthetic:PRESET
  uint64_t seed = 0;      // synthetic weights
  std::string backend = "auto";  // auto|cpu|cuda
  std::string tokenizer;  // tokenizer.json; default: DIR/tokenizer.json or the embedded Mistral one
  int max_model_len = 1024;
  std::string gpu_mem_budget;  // e.g. 22GiB (cuda)
  std::string stage;           // a stage preset (variants/stages.h); empty: defaults
  std::vector<std::string> sets;  // key=value overrides of EngineSettings
  std::string routing;         // model|uniform|mixtral-locality|fine-grained-locality|trace:FILE
  int threads = 0;             // OpenMP threads of the CPU engine; 0 = OpenMP's default
};

// The settings these options select: stage preset, then --routing, --max-model-len,
// --gpu-mem-budget, then each --set key=value.
EngineSettings settings_from(const ModelOptions& o);

void add_model_options(CLI::App& sub, ModelOptions& o);
// The overrides of a suite that a command builds from these options (bench, profile-check):
// the model `spec` and the routing that --routing / --set routing= make, given as the
// command line's (the same values the built suite holds), so that expand's checks of them
// name --model and --routing rather than the built suite's fields.
suites::Overrides suite_overrides(const ModelOptions& o, const std::string& spec);
WeightSource open_weights(const ModelOptions& o);
std::string resolve_backend(const ModelOptions& o);
// Sets the OpenMP threads --threads asks for (the calling thread's later parallel
// regions: the CPU engine's); nothing when it was not given.
void apply_threads(const ModelOptions& o);
std::unique_ptr<Model> make_model(const ModelOptions& o, const WeightSource& w, profiler::Profiler* prof = nullptr);

}  // namespace moebench::app
