// suite.h: benchmark suite files (suites/*.json) and their expansion into run
// instances. A suite names a model, defaults and cases; an optional sweep is a
// cartesian product over stage, batch size and engine settings. Parsing checks
// every field and fails with one line naming the file and the JSON path:
//   suites/x.json: cases[1].new_tokens is "a", expected a positive integer
//
// File format (every field but name and cases is optional):
//   {
//     "name": "short", "description": "...",
//     "defaults": {
//       "model": "tiny" | {"cpu": "tiny", "cuda": "mixtral-8x7b"},   // per backend
//       "backend": "auto" | "cpu" | "cuda", "seed": 0,
//       "warmup_runs": 1, "repetitions": 3, "rounds": 1, "new_tokens": 32, "cpu_threads": 0,
//       "clock": "wall" | "thread_cpu", "cold_each_case": false,
//       "stage": "P2", "settings": {"cache_policy": "lru", ...}
//     },
//     "cases_from": ["short", "medium"],         // cases of other suites, appended first
//     "cases": [
//       {"name": "fox", "prompt": "The quick brown fox", "new_tokens": 16},
//       {"name": "p512", "prompt_tokens": 512, "settings": {"cache_slots": "64"}},
//       {"name": "ref", "workload": "calibration", "prompt_tokens": 16, "new_tokens": 32}
//     ],
//     "sweep": {"stage": ["baseline", "P0"], "cache_slots": [16, 32], "batch_size": [1, 4],
//               "routing": ["model", "mixtral-locality"]}
//   }
// Settings resolve in this order, later wins: stage preset (defaults.stage, then
// the case's or sweep's stage), defaults.settings, case settings, sweep values,
// --set. Warm-up: `warmup_runs` untimed generations precede the measured
// repetitions when the resolved `warmup` knob is true (the baseline and P0
// stages are defined without warm-up); otherwise none. A warm-up runs another
// synthetic prompt of the measured prompt's length on another routing stream, so a
// cache policy never learns the measured generation's routing in advance.
// rounds > 1 interleaves: the repetitions are split into that many rounds, and
// each round runs every instance once in turn, so slow phases of a busy machine
// hit every case alike (the ci suite, whose cases share one model, uses it; with
// several models each round reloads them). Cases then finish in the last round.
// cold_each_case true reloads the model before every case (not only when settings
// change), so each case gets its own TTFT cold (model load + first token on a cold
// expert cache); the shared pinned host store is still filled once.
// clock "thread_cpu" times every step (and the model load) in CPU time of the
// running thread instead of wall time: immune to being descheduled on a busy
// machine, meaningful only with cpu_threads 1 on the CPU backend (the ci suite).
// cases_from: the named suites' cases (with their own new_tokens) come first;
// those suites may not use cases_from themselves.
// A `calibration` case runs a fixed matrix-vector loop instead of the model: its
// timings measure the machine, not moebench, so `compare --normalize-by` can
// divide machine speed out (sweeps do not apply to it).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/settings.h"

namespace moebench::suites {

enum class Workload { model, calibration };

struct CaseSpec {
  std::string name;
  std::string prompt;                 // text; or
  int prompt_tokens = 0;              // a synthetic prompt of this many ids (when prompt is empty)
  int new_tokens = 0;                 // 0 = defaults.new_tokens
  std::string stage;                  // "" = defaults.stage
  int batch_size = 1;
  Workload workload = Workload::model;
  std::vector<std::pair<std::string, std::string>> settings;  // overrides, in file order
};

struct SuiteDefaults {
  std::map<std::string, std::string> model;  // backend ("cpu"|"cuda"|"*") -> model; "*" = any
  std::string backend = "auto";
  uint64_t seed = 0;
  int warmup_runs = 1;
  int repetitions = 3;
  int rounds = 1;
  int new_tokens = 32;
  int cpu_threads = 0;                       // OpenMP threads for the run; 0 = OpenMP's default
  std::string clock = "wall";                // wall | thread_cpu
  bool cold_each_case = false;               // reload the model before every case: a TTFT cold per case
  std::string stage;                         // "" = no preset (engine defaults, stage "custom")
  std::vector<std::pair<std::string, std::string>> settings;
};

// One sweep axis: "stage", "batch_size" or an engine setting key.
struct SweepAxis {
  std::string key;
  std::vector<std::string> values;
};

struct Suite {
  std::string name;
  std::string description;
  std::string source;  // the file it came from (for messages)
  SuiteDefaults defaults;
  std::vector<CaseSpec> cases;
  std::vector<SweepAxis> sweep;  // in file order; empty = one instance per case
};

// Parses suite JSON text. `source` (the file name) starts every error message.
// `load_named` resolves "cases_from" names (may be empty: then cases_from is an error).
using SuiteLoader = Suite (*)(const std::string& name_or_path);
Suite parse_suite(const std::string& json_text, const std::string& source, SuiteLoader load_named = nullptr);

// Finds a suite by name or path: an existing file, else NAME.json in
// $MOEBENCH_SUITES_DIR, next to the binary (../../suites, ../share/moebench/suites)
// and in the source tree the binary was built from. Throws Error listing where it looked.
std::string find_suite_file(const std::string& name_or_path);
Suite load_suite(const std::string& name_or_path);
// Names of the suites found in the first suites folder that exists (for --help).
std::vector<std::string> suite_names();

// Command-line overrides applied on top of the suite.
struct Overrides {
  std::string model;    // --model: replaces the suite's model for every backend
  std::string backend;  // --backend: "" = the suite's
  std::string stage;    // --stage: replaces every case's stage and a stage sweep
  std::vector<std::pair<std::string, std::string>> settings;  // --set key=value, applied last; replaces a sweep over key
  int repetitions = 0;  // --repetitions: 0 = the suite's
  int warmup_runs = -1; // --warmup-runs: -1 = the suite's
  int cpu_threads = -1; // --threads: OpenMP threads of the CPU engine; -1 = the suite's, 0 = OpenMP's default
};

// One thing to run: a case with its resolved stage, settings and model.
struct Instance {
  std::string suite;
  std::string case_name;   // case name, plus "[key=value,...]" for non-stage sweep axes
  const CaseSpec* spec = nullptr;  // points into the Suite (keep it alive)
  std::string model;       // resolved model (DIR | PRESET | synthetic:...)
  std::string backend;     // resolved: "cpu" | "cuda"
  uint64_t seed = 0;
  EngineSettings settings;
  int batch_size = 1;
  int new_tokens = 0;
  int warmup_runs = 0;     // 0 when the warmup knob is false
  int repetitions = 0;
  int rounds = 1;          // the suite's (the same for every instance)
  int cpu_threads = 0;
  std::string clock = "wall";
  bool cold_each_case = false;  // the case's name joins the reload key
  std::vector<std::pair<std::string, std::string>> sweep_values;  // this instance's point of the sweep

  // Everything that forces a new model: two instances with equal keys share one.
  std::string reload_key() const;
};

// Expands cases x sweep into instances, resolves settings (validated: an unknown
// stage or setting is an Error naming the file and the field; so are a bad synthetic
// model spec, a checkpoint folder without a config.json, an ORG/NAME missing from the
// Hugging Face cache and a routing trace that does not open, each naming --model,
// --routing or the suite's field, before any case runs) and orders them to
// minimise model reloads: grouped by model, seed, backend, expert tier, memory
// budget and then the remaining settings, keeping file order inside a group.
// `resolve_backend` turns the requested backend (the override's, else the suite's:
// "auto", "cpu" or "cuda") into "cpu" or "cuda".
using BackendResolver = std::string (*)(const std::string& requested);
std::vector<Instance> expand(const Suite& s, const Overrides& o, BackendResolver resolve_backend);
// Instance::spec points into the suite, so expanding a temporary would leave every
// instance dangling once the statement ends: refused at compile time.
std::vector<Instance> expand(Suite&& s, const Overrides& o, BackendResolver resolve_backend) = delete;

// How many model loads running `v` in order takes.
int count_reloads(const std::vector<Instance>& v);

}  // namespace moebench::suites
