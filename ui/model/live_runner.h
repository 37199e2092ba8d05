// live_runner.h: runs a suite while the dashboard watches. LiveRunner is the
// interface the live view drives (start / poll / cancel); the runner behind it
// does the work on a background thread and publishes snapshots as tokens arrive.
//
// make_engine_live_runner() runs through the suite runner (suites/runner.h), as
// `moebench run` does: the settings become a suite of one case per stage preset
// (the synthetic prompt every command uses), each case with its own model load, so
// the cases are measured, counted and recorded exactly like `run`'s; the runner's
// per-token events feed the snapshots, and its trace holds every case's model load
// and first measured repetition.
//
// Expert-cache figures are the engine's own (the runner's profiler attached to the
// model and to generate()): per-layer hits, misses, loads, bytes and load time of
// the stage's expert tier and cache policy, and the layer x expert usage, summed
// over the measured repetitions; the hit rate over steps (overall and per layer)
// covers the first measured repetition.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "reports/results.h"

namespace moebench::ui {

struct LiveSettings {
  std::string model = "synthetic:tiny";  // WeightSource::open spec: DIR | synthetic:PRESET[:layers=N]
  uint64_t seed = 1;                     // synthetic weights (the prompt is the synthetic one every command uses)
  std::string backend = "cpu";           // cpu (cuda once its model exists)
  std::vector<std::string> stages = {"baseline", "P0", "P1", "P2"};
  std::string suite = "live";
  int prompt_tokens = 32;
  int new_tokens = 64;
  int repetitions = 2;
  int cache_slots = 0;                   // > 0 overrides every stage's slot count
  std::string trace_path;                // "" : no trace; else a Chrome trace of the run
};

enum class LiveState { idle, running, done, cancelled, failed };
const char* to_string(LiveState s);

struct LiveSnapshot {
  LiveState state = LiveState::idle;
  int case_index = -1;                 // case being run
  int n_cases = 0;
  int repetition = 0;                  // of the current case; -1 while warming up
  std::string case_label;              // "live/prompt32_new64 [P1]"
  std::vector<int64_t> latency_ns;     // (n_steps so far) of the current repetition
  std::vector<reports::Phase> phase;   // (n_steps so far)
  std::shared_ptr<const reports::Results> results;  // finished cases so far
  std::string error;                   // one line when failed
  uint64_t version = 0;                // bumps with every update
};

class LiveRunner {
 public:
  virtual ~LiveRunner() = default;
  // Starts a run; ignored while one is running.
  virtual void start(const LiveSettings& s) = 0;
  // The latest snapshot (cheap; call every frame).
  virtual LiveSnapshot poll() = 0;
  // Asks the run to stop after the current token; poll() then reports cancelled.
  virtual void cancel() = 0;
};

// The runner over the engine's generate() loop (background thread).
std::unique_ptr<LiveRunner> make_engine_live_runner();

struct LiveOutcome {
  reports::Results results;  // finished cases (failed cases included, status failed)
  LiveState state = LiveState::done;
  std::string error;
};

// The same work, on the calling thread: `progress` is called after every token
// (may be empty); `cancel` is read after every token (may be null). Used by the
// background runner, by `moebench dashboard --record` and by the tests.
LiveOutcome run_live(const LiveSettings& s, const std::function<void(const LiveSnapshot&)>& progress,
                     const std::atomic<bool>* cancel);

}  // namespace moebench::ui
