// bound.h: the physical limit a finished case is held against — one computation
// for `run`, `bench` and the results check. A bound is a lower limit on time built
// from bandwidths measured in the same run, so a case can reach it but not pass it
// (beyond the measurement noise, reports::kBoundNoisePercent):
//   - resident on CUDA: the weight bytes a decode token must read (bf16) / the
//     device memory bandwidth, the best of a read-only stream and a copy kernel;
//   - offloaded on CUDA (pinned or disk tier): per decode token, the expert bytes
//     the case copied / the link (pinned host->device, or on the disk tier the
//     slower of it and the measured disk read) and the resident bytes / HBM. The
//     settings say how the two combine: when the cache policy prefetches (issues
//     loads for the next layer while the current one computes) copies overlap
//     compute and the limit is the slower of the two; otherwise the compute stream
//     waits for a layer's copies before computing it, and the limit is their sum;
//   - offloaded with the host link (expert_exec cpu | hybrid, cpu_moe_layers; pinned
//     tier): the experts the host computed are read from host memory by the CPU
//     kernel at the rate measured when the model was built (host_kernel_gbps); hybrid
//     takes the best split of every missed byte (copied + host) over the two links,
//     bytes / (host->device + host kernel), cpu the two links side by side (the slower
//     one); then combined with the HBM term as above;
//   - CPU: the fp32 weight bytes a decode token reads / a read stream over that many
//     bytes with the case's thread count, measured in the same run: the bandwidth
//     of the memory level those weights live in (the tiny model's fit in cache);
//   - bench's batched decode and prefill cases: the bytes a step must read at the
//     least (every non-expert weight and top_k experts per layer; a batched decode step
//     on one GPU: the distinct experts it ran, counted on the device) / HBM.
// percent = achieved / limit * 100.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "reports/results.h"

namespace moebench::suites {

// Weight bytes one decode token must read when everything is resident: every
// layer's attention, norms and router, top_k experts per layer, the final norm,
// one embedding row and the lm_head.
int64_t bytes_per_decode_token(const ModelConfig& c, int64_t bytes_per_param);
// The weight bytes one decode token of a bench case reads, as its bound counts them: on a
// GPU every non-expert weight in bf16 (the attention projections in the case's
// weight_dtype) and top_k experts a layer in its expert_dtype; on the CPU backend (`cpu`)
// every weight in fp32, the CPU model's.
int64_t bench_token_bytes(const ModelConfig& cfg, const reports::Settings& s, bool cpu);


// Whether the settings overlap expert copies with compute (a speculative cache
// policy: loads for layer L+1 issued while layer L computes).
bool copies_overlap_compute(const reports::Settings& s);

// A read stream measured on the CPU for a case (suites/machine.h measure_read_gbps).
struct CpuRead {
  double gbps = 0;      // 0 = not measured: no CPU bound
  int64_t bytes = 0;    // working set it streamed over
  int threads = 0;
};
// The read stream a CPU decode token's bound divides by: over the fp32 bytes one token
// reads (bytes_per_decode_token), with an instance's cpu_threads (0: every OpenMP
// thread), at `gbps` (0 until measured).
CpuRead decode_cpu_read(const ModelConfig& cfg, int cpu_threads, double gbps = 0);

// The bound of a finished run case (batch 1, `backend` "cpu" | "cuda"); nullopt
// when it decoded nothing or a bandwidth it needs was not measured, with the
// reason in *why.
std::optional<reports::Bound> physical_bound(const reports::Case& c, const ModelConfig& cfg, const std::string& backend,
                                             const reports::DeviceInfo& dev, const CpuRead& cpu = {},
                                             std::string* why = nullptr);

// bench (resident): a decode case of `batch` sequences decoding together at
// `decode_tok_s` per sequence (limit in tok/s over all sequences), or a prefill case
// (new_tokens 1) whose first token took ttft_ns (limit in ms). The bytes are the
// non-expert weights in bf16 and top_k experts per layer in the case's expert_dtype
// (`s`, bf16 when not recorded).
// With tensor_parallel = N > 1 (resident), either bound is the largest rank's bytes over
// HBM plus the all-reduce time per decode step measured on the GPUs (`gpus`, the
// case's; no bound without them). With expert_parallel = N > 1 (resident), the slowest
// GPU's bytes per decode step (every non-expert weight, replicated, and the experts it
// ran per step, measured per GPU) over HBM plus the least all-reduce time per step.
// One GPU, batch > 1, experts_per_step > 0 (ExpertCounters::decode_experts_per_step):
// the step's experts are the distinct (layer, expert)s it ran, as counted, instead of top_k
// a layer; a count below top_k a layer or above every expert gives no bound.
std::optional<reports::Bound> bench_decode_bound(const ModelConfig& cfg, const reports::DeviceInfo& dev,
                                                 const reports::Settings& s, int batch, double decode_tok_s,
                                                 const std::vector<reports::GpuRank>& gpus = {},
                                                 double experts_per_step = 0);
// bench on the CPU backend, batch > 1: the same limit over the CPU read stream with
// every weight in fp32 (the CPU model's), counted experts as above (counted by the CPU
// model).
std::optional<reports::Bound> bench_cpu_decode_bound(const ModelConfig& cfg, const CpuRead& cpu, int batch,
                                                     double decode_tok_s, double experts_per_step = 0);
std::optional<reports::Bound> bench_prefill_bound(const ModelConfig& cfg, const reports::DeviceInfo& dev,
                                                  const reports::Settings& s, double ttft_ns);
// The bound of bench case `k` of `batch` sequences, measured or read back from a file:
// bench_decode_bound or bench_prefill_bound (new_tokens 1) on a GPU, with the case's
// settings, GPUs, rate and counted experts; on the CPU backend (`on_cpu`) decode only,
// bench_cpu_decode_bound over `cpu`. nullopt with the reason in *why (when given).
std::optional<reports::Bound> bench_case_bound(const ModelConfig& cfg, const reports::DeviceInfo& dev, bool on_cpu,
                                               const reports::Case& k, int batch, const CpuRead& cpu,
                                               std::string* why = nullptr);

// The bound of a case of a results file recomputed from the fields the file carries
// (model config, device bandwidths, counters, settings, samples), with today's
// model of the limit. nullopt with *why set when the file lacks what it needs.
std::optional<reports::Bound> rederive_bound(const reports::Results& r, const reports::Case& c, std::string* why);

// Bounds a file recorded before the model of the limit said how resources combine
// (no time_model) are replaced by rederive_bound's where the file allows it, so a
// report shows every case against today's model; returns how many were replaced.
int rederive_recorded_bounds(reports::Results& r);

// The results check: one line per ok case whose bound percent exceeds
// 100 + reports::kBoundNoisePercent, naming the case, its percent and the bound.
std::vector<std::string> bound_warnings(const reports::Results& r);

}  // namespace moebench::suites
