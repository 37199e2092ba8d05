// runner.h: executes a suite's instances (suite.h) and fills the results schema
// (reports/results.h). It goes through create_model + Model + EngineSettings only.
//
// Per instance:
//   - a model (re)load when its reload key differs from the loaded one: weights
//     opened + create_model, timed (model_load_ns);
//   - `warmup_runs` untimed generations, then `repetitions` measured ones, each
//     greedy with a fixed token count (EOS ignored), steps recorded by the
//     profiler (raw per-step ns, prefill vs decode);
//   - TTFT cold = model load + time to first token of the first generation after
//     the load; it is stored on samples[0] of the instance that followed the load
//     (that generation is its first warm-up, or its first repetition when it has
//     none); other instances have no cold TTFT. TTFT warm = the first step of each
//     repetition;
//   - expert counters summed over the measured repetitions from the profiler (as
//     the engine bumped them: zeros when it bumps none) and the hit rate per step
//     (overall and per layer) of the first repetition, memory peaks, CUPTI GPU
//     time when tracing on CUDA, aggregates, the bound (suites/bound.h; on the CPU
//     after a read stream over the weights a token reads, measured with the case's
//     threads), the output-token hash;
//   - the results so far rewritten atomically to the progress file.
// The results file itself (and the trace) is written once, when the run is complete
// and at least one instance ran: a file that was there before is replaced only by a
// complete run, never by an interrupted, crashed or all-failed one.
// With rounds > 1 (suite.h) the repetitions are interleaved across instances and
// instances finish in the last round.
// An instance that fails (bad prompt length, model load error, unsupported batch
// size) is kept with status failed and its one-line error; the run goes on.
// When *stop becomes true (SIGINT) the current instance is abandoned, the progress
// file keeps every finished one, and run_suite returns with interrupted = true.
#pragma once
#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "engine/model.h"
#include "engine/weight_source.h"
#include "profiler/counters.h"
#include "reports/results.h"
#include "suites/bound.h"
#include "suites/suite.h"

namespace moebench::suites {

// What a command's own pass sees once an instance's measured repetitions are done:
// the model they ran on (still loaded), its weights, the run's profiler (attached to
// the model) and the device as measured for the run.
struct InstanceContext {
  const Instance& instance;
  Model& model;
  const WeightSource& weights;
  profiler::Profiler& prof;
  const reports::DeviceInfo& device;
};

// A command's own pass after an instance that did not fail (bench: the batched
// forward and the kernel profile; profile-check: the overhead experiment and the
// CUPTI pass). `cases` holds the instance's case, aggregates and bound done; the pass
// may edit it, append more cases (they follow it in the results) or remove it. An
// Error it throws fails the instance's case with its message.
using AfterInstance = std::function<void(const InstanceContext&, std::vector<reports::Case>& cases)>;

struct RunOptions {
  std::string out_path;          // results JSON, written when the run is complete and not every instance failed ("" = not written)
  std::string progress_path;     // the results so far, rewritten after every instance ("" = none); removed once out_path is written
  // Chrome trace of one more generation after the run's last instance's repetitions (CPU
  // ranges, CUPTI on CUDA; in no figure but that case's gpu_time_ns), written with out_path; ""
  // = off. CUPTI is attached to the process only for that generation, after every measured
  // one: once attached it slows every later launch, collecting or not.
  std::string trace_path;
  // The trace holds every instance's model load (CUPTI on during it) and one more generation
  // after its first measured repetition instead. CUPTI is then attached from the start, so
  // every instance's figures carry its cost: a mode for looking, not for measuring.
  bool trace_every_instance = false;
  std::string tokenizer_path;    // "" = MODEL/tokenizer.json, else the built-in Mistral one
  double inject_slowdown = 1.0;  // test hook of the CI gate, see GenerateOptions
  bool measure_bandwidth = true; // device bandwidth measurement (about 0.1 s)
  bool measure_quality = true;   // false: quantised cases skip the quality pass (no quality object; --no-quality)
  const std::atomic<bool>* stop = nullptr;  // set asynchronously (SIGINT) to stop
  std::vector<std::string> command_line;
  AfterInstance after_instance;  // empty = none
};

// What the runner reports while it works (progress bars, logs). All optional.
struct RunEvents {
  std::function<void(int n_instances)> on_plan;
  std::function<void(int index, const Instance&)> on_instance_start;
  // phase: "load", "warm-up" or "repetition"; done of total within the phase.
  std::function<void(int index, const char* phase, int done, int total)> on_step;
  // After every generated token of a model instance: repetition (-1 in a warm-up),
  // the token's step time (the instance's clock) and phase.
  std::function<void(int index, int repetition, int64_t latency_ns, reports::Phase phase)> on_token;
  std::function<void(int index, const reports::Case&)> on_instance_end;
};

struct RunOutcome {
  reports::Results results;
  bool interrupted = false;
  int failed = 0;  // instances with status failed
  bool saved = false;        // out_path was written
  std::string trace_error;   // the trace could not be written (the results were, without it)
};

// Where `moebench run` keeps the results of a run in progress: OUT.json -> OUT.partial.json.
std::string progress_path_for(const std::string& out_path);

RunOutcome run_suite(const std::vector<Instance>& instances, const RunOptions& opt, const RunEvents& ev = {});

// Adds one repetition's expert counters (the profiler's: totals, per layer, usage,
// and the bytes moved during decode steps, step 0 being the prefill) to a case's.
// Per-layer arrays stay empty while nothing was counted.
void add_expert_counters(reports::ExpertCounters& e, const profiler::ExpertCounters& p);

// A multi-GPU model's per-GPU figures between two snapshots (Model::gpu_ranks), per
// decode step: what a case records in Case::gpus (empty for a one-GPU model).
std::vector<reports::GpuRank> gpu_ranks_between(const std::vector<Model::GpuRankStats>& before,
                                                const std::vector<Model::GpuRankStats>& after);

// Hex xxh64 of the token ids' bytes (16 lowercase hex digits).
std::string token_hash(const std::vector<int32_t>& ids);

// A case's measured repetition `rep` (> 0) and the tokens it generated, against repetition 0's
// `first`: where they differ, rep joins c.other_tokens_repetitions and a warning says so.
void check_repetition_tokens(reports::Case& c, int rep, const std::vector<int32_t>& first,
                             const std::vector<int32_t>& tokens);

// The synthetic prompt of `prompt_tokens` ids: BOS, then a fixed pseudo-random
// sequence over [3, vocab_size) drawn from `seed` (xorshift; not 0) — for a given seed
// the same for every run and model of that vocab. Warm-ups use kWarmupPromptSeed.
inline constexpr uint64_t kDefaultPromptSeed = 0x9E3779B97F4A7C15ull;
inline constexpr uint64_t kWarmupPromptSeed = 0xD1B54A32D192ED03ull;
std::vector<int32_t> synthetic_prompt(int prompt_tokens, int vocab_size, int32_t bos_id,
                                      uint64_t seed = kDefaultPromptSeed);

}  // namespace moebench::suites
