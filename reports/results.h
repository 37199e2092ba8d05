// results.h: the versioned results schema of moebench, as plain-data structs.
// The runner fills them, save_results() writes them (atomically, after every
// finished case), and reports / compare / the dashboard read them back with
// load_results(), which validates every field and names the JSON path of the
// first bad one:  "r.json: cases[2].samples[0].latency_ns[5] is "x", expected an integer".
//
// Conventions: times are int64 ns, sizes int64 bytes, units
// are in the field names; a comment gives the shape of every array.
// Schema evolution: any change to the JSON layout bumps kSchemaVersion; files of
// another version are refused with a message saying which version was found.
//
// JSON layout (field names are exactly the struct member names):
//   { "schema_version": 1, "run": {...}, "device": {...}, "host": {...},
//     "model": {...}, "cases": [ { ..., "samples": [ {rep}, ... ], ... } ] }
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace moebench::reports {

inline constexpr int kSchemaVersion = 1;

// How and when the run was made.
struct RunInfo {
  std::string tool_version;               // moebench version string
  std::string commit;                     // git commit of the build (MOEBENCH_GIT_COMMIT)
  std::string build_type;                 // Release, Debug, ...
  std::string start_time;                 // ISO 8601 UTC, e.g. "2025-01-31T12:00:00Z"
  std::vector<std::string> command_line;  // (argc) argv as given
  std::string trace_file;                 // Chrome trace written next to the results; "" if none
};

enum class DeviceKind { cpu, cuda };

// The device the engine computed on. On the CPU backend: name is the CPU model,
// sm_count 0, driver "", h2d_gbps 0, hbm_gbps a measured DRAM copy bandwidth (the
// CPU bound measures its own read stream per case, see Bound). On CUDA, hbm_gbps is
// the best of hbm_read_gbps and hbm_copy_gbps, both measured in the same process.
struct DeviceInfo {
  std::string name;          // "NVIDIA H100 80GB HBM3" or the CPU model
  DeviceKind kind = DeviceKind::cpu;
  int sm_count = 0;
  int64_t memory_bytes = 0;  // total device memory (host RAM on CPU)
  std::string driver;        // CUDA driver / runtime version text
  double h2d_gbps = 0;       // measured pinned host->device bandwidth, GB/s (1e9 B/s)
  double hbm_gbps = 0;       // measured device memory bandwidth, GB/s
  // CUDA: the two device memory measurements behind hbm_gbps: a read-only stream
  // kernel (read bytes) and a copy kernel (read + write bytes). 0 = not measured
  // (files written before the read stream existed carry the copy figure in hbm_gbps only).
  double hbm_read_gbps = 0;
  double hbm_copy_gbps = 0;
  // Measured read bandwidth of the checkpoint the disk tier reads (parallel O_DIRECT
  // reads of expert tensors), GB/s; 0 when no case read experts from disk.
  double disk_read_gbps = 0;
};

struct HostInfo {
  std::string name;          // hostname
  std::string cpu_model;
  int cores = 0;             // logical cores
  int64_t memory_bytes = 0;  // physical RAM
};

struct ModelInfo {
  std::string name;          // preset or checkpoint folder name
  nlohmann::json config = nlohmann::json::object();  // HF config.json layout (config_to_json)
  std::string dtype;         // weight dtype as stored: "bf16", "f32", ...
  std::string weight_source; // checkpoint path, or "synthetic:SEED"
  // Setup shared by every model of the run and done once (the pinned expert host store:
  // allocate + fill), not in any case's TTFT cold; 0 when none.
  int64_t shared_setup_ns = 0;
};

// The stage preset and every knob it resolved to. Knob values are JSON scalars
// (string, number, bool or null): {"cache_policy": "lru", "gpu_slots": 42, ...}.
struct Settings {
  std::string stage;                           // "baseline", "P0", "P1", "P2" or "custom"
  std::map<std::string, nlohmann::json> knobs;
};

enum class Phase { prefill, decode };

// One measured repetition of a case. Steps are forward passes in order; a
// prefill step may cover many prompt tokens, a decode step produces one token.
struct Repetition {
  std::vector<int64_t> latency_ns;  // (n_steps) wall time of each step
  std::vector<Phase> phase;         // (n_steps) phase of each step
  std::optional<int64_t> ttft_cold_ns;  // request start -> first token, model load included; absent if not measured
  int64_t ttft_warm_ns = 0;         // request start -> first token, model already loaded
};

// Expert-cache counters of a case, summed over its measured repetitions
// (warm-up excluded). Per-layer arrays are either empty or (n_layers).
struct ExpertCounters {
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t loads = 0;          // copies into a device slot (misses + prefetches)
  int64_t bytes_moved = 0;    // host/disk -> device bytes for expert weights
  int64_t decode_bytes_moved = 0;  // of which during decode steps (the prefill's loads excluded)
  int64_t load_time_ns = 0;   // total time of those copies
  int64_t stall_ns = 0;       // time the compute stream waited on a load
  // The host link (expert_exec cpu | hybrid, cpu_moe_layers): experts computed on the
  // host from their pinned copy, the weight bytes the host kernel read for them and its
  // busy time; decode_* the same without the prefill. The copy link's decode busy time
  // is decode_load_time_ns. 0 in files from before (or cases without host work).
  int64_t host_experts = 0;
  int64_t host_bytes = 0;
  int64_t decode_host_bytes = 0;
  int64_t host_busy_ns = 0;
  int64_t decode_host_busy_ns = 0;
  int64_t decode_load_time_ns = 0;
  int64_t decode_host_layers = 0;       // decode layer forwards with host work
  int64_t decode_host_overhead_ns = 0;  // their fixed cost beyond the kernels, summed
  double host_kernel_gbps = 0;  // the host kernel's best cold rate measured at model load (the bound's host link)
  double host_kernel_median_gbps = 0, host_kernel_worst_gbps = 0;  // its spread over
  int64_t host_kernel_samples = 0;                                 // these many experts (0: not recorded)
  bool host_kernel_cold = false;  // they exceeded the last-level cache several times (a memory rate)
  // Both links at once, measured at model load (host->device copies beside the host
  // kernel, over the same time), GB/s: their sum is the hybrid bound's joint read of host
  // memory. 0: not measured (files from before, or a model without a copy scratch).
  double joint_copy_gbps = 0, joint_host_gbps = 0;
  double solo_copy_gbps = 0;  // the copies alone, measured with the joint rates (0: not measured)
  // Both links at once in decode (hybrid): the copies that ran beside host work and the
  // host work that ran beside copies, bytes and busy time; their rates added are the joint
  // read decode itself reached (the bound takes the larger of it and the load's).
  int64_t decode_joint_copy_bytes = 0, decode_joint_copy_ns = 0, decode_joint_host_bytes = 0, decode_joint_host_ns = 0;
  int64_t slots = 0;            // expert slots of the offloaded cache (0: not recorded, or resident)
  // A batched decode case on one GPU (bench): the distinct (layer, expert)s a decode step
  // ran, summed over layers, averaged over the steps of one more generation of the same
  // batch that gave the measured tokens, counted on the device. 0: not counted.
  double decode_experts_per_step = 0;
  std::vector<int64_t> hits_per_layer;          // (n_layers)
  std::vector<int64_t> misses_per_layer;        // (n_layers)
  std::vector<int64_t> loads_per_layer;         // (n_layers)
  std::vector<int64_t> bytes_moved_per_layer;   // (n_layers)
  std::vector<int64_t> load_time_ns_per_layer;  // (n_layers)
  std::vector<int64_t> stall_ns_per_layer;      // (n_layers)
  std::vector<std::vector<int64_t>> usage;      // (n_layers, n_experts) token->expert assignments

  // hits / (hits + misses); 0 when there were no lookups.
  double hit_rate() const;
  // load_time_ns / loads; 0 when nothing was loaded.
  double mean_load_ns() const;
};

// Hit rate over generated tokens, from the first measured repetition.
struct HitRateSeries {
  std::vector<double> overall;                 // (n_steps) hit rate of each step over all layers
  std::vector<std::vector<double>> per_layer;  // (n_layers, n_steps), or empty
};

struct MemoryPoint {
  int64_t t_ns = 0;               // since the start of the case
  int64_t arena_bytes = 0;        // device arena in use
  int64_t device_used_bytes = 0;  // cudaMemGetInfo total - free (0 on CPU)
};

struct MemoryInfo {
  int64_t arena_peak_bytes = 0;        // device arena high-water mark
  int64_t device_used_peak_bytes = 0;  // cudaMemGetInfo peak used (0 on CPU)
  int64_t host_pinned_bytes = 0;       // pinned host memory held for experts
  std::optional<int64_t> allocation_count;  // device/host allocations during measured repetitions, if counted
  // Host side, on every backend: the process's peak resident set (VmHWM) at the end
  // of the case, and the host bytes the engine itself holds for the model (weights,
  // KV cache, workspaces; 0 when the backend does not track them). 0 = not measured.
  int64_t host_peak_rss_bytes = 0;
  int64_t engine_host_bytes = 0;
  std::vector<MemoryPoint> timeline;   // (n_points), optional (may be empty)
};

// Figures derived from the raw samples (compute_aggregates); stored so readers
// need not recompute, and recomputable to check.
struct Aggregates {
  double prefill_tok_s = 0;   // prompt_tokens / median prefill time
  double decode_tok_s = 0;    // 1e9 / median decode step
  double ttft_cold_ns = 0;    // median over repetitions; 0 if never measured
  double ttft_warm_ns = 0;    // median over repetitions
  double tpot_ns = 0;         // mean decode step (time per output token after the first)
  double itl_p50_ns = 0;      // inter-token latency percentiles over all decode steps
  double itl_p90_ns = 0;
  double itl_p99_ns = 0;
  double hit_rate = 0;        // experts.hit_rate()
  double mean_expert_load_ns = 0;  // experts.mean_load_ns()
};

// The physical limit a case is held against (suites/bound.h): a lower limit on
// time from bandwidths measured in the same run, so percent above 100 (plus noise)
// means the model of the limit is wrong.
struct Bound {
  std::string description;  // "resident: 1.64 GB/token / 3.35 TB/s HBM"
  double value = 0;         // the limit, in `unit`
  std::string unit;         // "tok/s"
  double percent = 0;       // achieved / value * 100
  // How the resources' times combine: "single" (one resource), "serial" (their sum:
  // the settings leave no overlap), "overlap" (the slowest one: the settings overlap
  // copies with compute). "" in files written before it was recorded.
  std::string time_model;
  // The measured bandwidths it used, GB/s, by name ("hbm", "h2d", "disk_read",
  // "cpu_read"). Empty in files written before it was recorded.
  std::map<std::string, double> bandwidth_gbps;
};

// How far over its bound a case may run (percent points over 100) before the bound is called
// wrong (the results check of `run` and `report`, the Markdown and HTML outputs, the committed
// results' test): a bound is a limit, and what may beat it is the noise of the bandwidths it was
// computed from (read streams and links measured in one run vary by one to two percent between
// runs on one host).
inline constexpr double kBoundNoisePercent = 3.0;
// For a case that ran above its bound by more than kBoundNoisePercent, the sentence every
// output says it with ("ran at 110.0% of its bound (...), more than 3% over it: ..."); "" for
// any other.
std::string bound_exceeded(const Bound& b);

// What quantised experts cost in quality: the case's next-token distributions against
// those of the same model with bf16 experts, over the teacher-forced positions of the
// case's prompt (suites/quality.h). Only quantised cases carry it.
struct Quality {
  std::string reference;      // what the case is compared with, e.g. "bf16 experts"
  int positions = 0;          // next-token distributions compared
  double top1_agreement = 0;  // fraction of positions whose argmax agrees, 0..1
  double mean_kl = 0;         // mean KL(p_reference || p_case) over the positions, nats
};

enum class CaseStatus { ok, failed };

// One GPU of a case run over several GPUs (tensor_parallel or expert_parallel > 1), in rank order: over the
// case's measured repetitions.
struct GpuRank {
  std::string device;                     // "cuda:ORDINAL NAME"
  int64_t arena_used_bytes = 0;           // its device arena at the end of the case
  int64_t arena_peak_bytes = 0;
  int64_t decode_steps = 0;               // decode forwards it ran
  int64_t collective_ns_per_step = 0;     // GPU time in its all-reduces per decode step (CUDA events)
  int64_t collective_calls_per_step = 0;  // all-reduces per decode step
  // Expert parallel only (0 otherwise; absent in older files): the (layer, expert)s it
  // holds, and per decode step (over all of them, graphed or not) the distinct held
  // experts it ran summed over layers and the (token, expert) pairs it computed: its load.
  int64_t experts_held = 0;
  double experts_run_per_step = 0;
  double expert_pairs_per_step = 0;
};

struct Case {
  std::string suite;          // "short", "stages", ...
  std::string name;           // case name inside the suite
  Settings settings;          // stage + knobs of this case (sweeps vary them per case)
  std::string routing_source; // "model", "trace:FILE", "uniform", "mixtral-locality"
  int prompt_tokens = 0;
  int new_tokens = 0;
  int repetitions = 0;        // measured repetitions requested
  int warmup = 0;             // warm-up repetitions run and discarded
  std::vector<Repetition> samples;  // (repetitions); fewer only if status is failed
  ExpertCounters experts;
  MemoryInfo memory;
  HitRateSeries hit_rate;
  // CUPTI GPU time by category ("kernel", "memcpy_h2d", ...) of the traced generation(s) (--trace:
  // not a measured repetition); empty without a trace
  std::map<std::string, int64_t> gpu_time_ns;
  Aggregates aggregates;
  std::optional<Bound> bound;
  std::string no_bound_reason;    // why an ok case has no bound ("" when it has one or no reason was recorded)
  std::optional<Quality> quality;  // quantised experts only; absent in older files
  std::vector<GpuRank> gpus;       // multi-GPU cases only; absent in older files
  std::string output_token_hash;  // hex xxh64 of the generated token ids; "" if failed early
  // Measured repetitions (0-based) whose generated tokens differ from repetition 0's: empty
  // when every repetition gave the same tokens. Greedy decoding of one input must not
  // depend on the run, so a non-empty list marks an order or timing dependence.
  std::vector<int> other_tokens_repetitions;
  CaseStatus status = CaseStatus::ok;
  std::string error;              // one line when status == failed
};

struct Results {
  int schema_version = kSchemaVersion;
  RunInfo run;
  DeviceInfo device;
  HostInfo host;
  ModelInfo model;
  std::vector<Case> cases;  // in run order; the file is rewritten after each
};

// "" when every measured repetition of c generated repetition 0's tokens; else one sentence
// naming the ones that did not (the reports show it beside the case).
std::string other_tokens_note(const Case& c);

// ---- derived figures ----
// Aggregates from a case's raw samples and counters (uses profiler::summarize).
Aggregates compute_aggregates(const Case& c);
// Total prefill time of a repetition (sum of its prefill steps), ns.
int64_t prefill_ns(const Repetition& r);
// Decode step latencies of a repetition, in order.
std::vector<int64_t> decode_latencies(const Repetition& r);
// The per-repetition figures whose medians are the aggregates of the same names,
// one value per repetition that has it (a repetition without a prefill step or
// without decode steps gives no rate, one without a cold start no ttft_cold_ns):
// the samples a confidence interval of those medians is drawn from.
struct RepetitionFigures {
  std::vector<double> prefill_tok_s;  // prompt_tokens / that repetition's prefill time
  std::vector<double> decode_tok_s;   // its decode steps / their summed time
  std::vector<double> ttft_cold_ns;
  std::vector<double> ttft_warm_ns;
};
RepetitionFigures repetition_figures(const Case& c);

// ---- names ----
const char* to_string(DeviceKind k);
const char* to_string(Phase p);
const char* to_string(CaseStatus s);

// ---- JSON ----
nlohmann::json to_json(const Results& r);
// Validates everything; `source` (the file name) starts every error message.
Results results_from_json(const nlohmann::json& j, const std::string& source);
// Text of a results file: indented, with arrays of numbers kept on one line.
std::string results_to_string(const Results& r);
// Reads and validates a results file. Bad JSON: "PATH: invalid JSON at byte N: ...".
Results load_results(const std::string& path);
// Writes with write_file_atomic; call after every finished case.
void save_results(const std::string& path, const Results& r);

}  // namespace moebench::reports
