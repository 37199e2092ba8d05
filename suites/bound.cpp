// bound.cpp: see bound.h.
#include "suites/bound.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include <omp.h>

#include "common/error.h"
#include "engine/quant.h"
#include "engine/shard.h"
#include "profiler/stats.h"
#include "variants/cache_policy.h"
#include "variants/hybrid_split.h"

namespace moebench::suites {

namespace {

using reports::Bound;
using reports::Case;
using reports::DeviceInfo;

// Which of the two device memory measurements hbm_gbps is, for the description.
// Files from before the read stream carry the copy kernel's figure only.
std::string hbm_text(const DeviceInfo& dev) {
  const bool read = dev.hbm_read_gbps > 0 && dev.hbm_read_gbps >= dev.hbm_copy_gbps;
  return fmt::format("{} HBM ({})", profiler::format_gbps(dev.hbm_gbps),
                     read ? "read stream, the better of read stream and copy kernel" : "copy kernel, read + write");
}

// The CPU read stream a CPU bound divides by, for the description.
std::string cpu_read_text(const CpuRead& cpu) {
  if (cpu.bytes <= 0 || cpu.threads <= 0)  // re-derived from a file, which records the rate alone
    return fmt::format("{} (read stream, measured)", profiler::format_gbps(cpu.gbps));
  return fmt::format("{} (read stream over {} with {} thread(s), measured)", profiler::format_gbps(cpu.gbps),
                     profiler::format_bytes(static_cast<double>(cpu.bytes)), cpu.threads);
}

// How the host kernel's rate was measured: the best of several cold experts at load,
// with the spread (files from before the spread was recorded: at load, no more).
// The joint read decode reached (hybrid): the copies' rate beside host work plus the host
// kernel's beside copies, each over its own samples; 0 unless both were sampled.
double decode_joint_copy_gbps(const reports::ExpertCounters& e) {
  return e.decode_joint_copy_ns > 0 ? static_cast<double>(e.decode_joint_copy_bytes) / static_cast<double>(e.decode_joint_copy_ns)
                                    : 0.0;
}
double decode_joint_host_gbps(const reports::ExpertCounters& e) {
  return e.decode_joint_host_ns > 0 ? static_cast<double>(e.decode_joint_host_bytes) / static_cast<double>(e.decode_joint_host_ns)
                                    : 0.0;
}
// The host kernel's rate in decode (its bytes over its busy time; 0 without host work).
double decode_host_gbps(const reports::ExpertCounters& e) {
  return e.decode_host_busy_ns > 0 ? static_cast<double>(e.decode_host_bytes) / static_cast<double>(e.decode_host_busy_ns)
                                   : 0.0;
}
// The host link's rate in a bound: the larger of the load's best cold expert and what
// decode's own host work read at (a decode faster than the load's measurement shows the
// measurement short of the limit; a rate reached is not above it).
double host_link_gbps(const reports::ExpertCounters& e) { return std::max(e.host_kernel_gbps, decode_host_gbps(e)); }
double decode_joint_gbps(const reports::ExpertCounters& e) {
  const double c = decode_joint_copy_gbps(e), h = decode_joint_host_gbps(e);
  return c > 0 && h > 0 ? c + h : 0.0;
}

std::string host_kernel_text(const reports::ExpertCounters& e) {
  const double d = host_link_gbps(e);
  const std::string in_decode =
      d > e.host_kernel_gbps ? fmt::format(", {} in decode, the larger", profiler::format_gbps(d)) : std::string();
  if (e.host_kernel_samples <= 0) return "measured at load" + in_decode;
  return fmt::format("best of {} {} experts measured once per run, median {}, worst {}{}", e.host_kernel_samples,
                     e.host_kernel_cold ? "cold" : "cache-resident", profiler::format_gbps(e.host_kernel_median_gbps),
                     profiler::format_gbps(e.host_kernel_worst_gbps), in_decode);
}

int64_t decode_tokens_of(const Case& c) {
  int64_t n = 0;
  for (const reports::Repetition& r : c.samples) n += static_cast<int64_t>(reports::decode_latencies(r).size());
  return n;
}

std::string knob_string(const reports::Settings& s, const char* key) {
  auto it = s.knobs.find(key);
  return it != s.knobs.end() && it->second.is_string() ? it->second.get<std::string>() : "";
}

// An integer knob recorded as a number or as text; `fallback` when absent.
int64_t knob_int(const reports::Settings& s, const char* key, int64_t fallback) {
  auto it = s.knobs.find(key);
  if (it == s.knobs.end()) return fallback;
  if (it->second.is_number_integer()) return it->second.get<int64_t>();
  if (it->second.is_string()) {
    try {
      return std::stoll(it->second.get<std::string>());
    } catch (...) {
    }
  }
  return fallback;
}

// A format knob of the case (bf16 when not recorded).
QuantFormat knob_format(const reports::Settings& s, const char* key) {
  const std::string d = knob_string(s, key);
  return d.empty() ? QuantFormat::bf16 : parse_quant_format(d, fmt::format("settings.{}", key));
}

// The weight bytes a CUDA decode token reads from HBM: every non-expert weight in bf16
// but the attention projections, in the case's weight_dtype (values + scales), and top_k
// experts per layer in its expert_dtype.
int64_t device_bytes_per_decode_token(const ModelConfig& c, const reports::Settings& s) {
  const QuantFormat f = knob_format(s, "expert_dtype"), a = knob_format(s, "weight_dtype");
  const int64_t experts = static_cast<int64_t>(c.num_hidden_layers) * c.num_experts_per_tok;
  const int64_t H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim();
  const int64_t attn_bf16 = 2 * (2 * Q * H + 2 * KV * H);
  const int64_t attn = static_cast<int64_t>(quant_matrix_bytes(a, Q, H) + 2 * quant_matrix_bytes(a, KV, H) +
                                            quant_matrix_bytes(a, H, Q));
  return bytes_per_decode_token(c, 2) - experts * c.expert_params() * 2 +
         experts * static_cast<int64_t>(expert_bytes(c, f)) + c.num_hidden_layers * (attn - attn_bf16);
}

// What the HBM bound's bytes are: "bf16", or which weights are quantised.
std::string device_weights_label(const reports::Settings& s) {
  const bool e = knob_format(s, "expert_dtype") != QuantFormat::bf16, a = knob_format(s, "weight_dtype") != QuantFormat::bf16;
  return !e && !a ? "bf16" : e && !a ? "bf16 + quantised expert" : !e ? "bf16 + quantised attention" : "bf16 + quantised attention + expert";
}

// The offloaded CUDA bound: expert copies over the link and resident reads over HBM,
// summed or overlapped as the settings say. Tensor parallel over N GPUs: per GPU, the
// copies of rank 0 (every rank caches and copies its slices alike, each over its own
// link, taken as fast as the measured one) and the largest rank's resident reads, plus
// the least all-reduce time per step of the ranks, which the compute stream runs in line.
std::optional<Bound> offloaded_bound(const Case& c, const ModelConfig& cfg, const DeviceInfo& dev, std::string& why) {
  const int64_t decode_tokens = decode_tokens_of(c);
  if (decode_tokens <= 0) {
    why = "the case decoded no token";
    return std::nullopt;
  }
  if (dev.h2d_gbps <= 0 || dev.hbm_gbps <= 0) {
    why = "the host->device and HBM bandwidths were not measured";
    return std::nullopt;
  }
  const int tp = static_cast<int>(knob_int(c.settings, "tensor_parallel", 1));
  if (tp > 1 && static_cast<int>(c.gpus.size()) != tp) {
    why = fmt::format("tensor_parallel={} but the case recorded {} GPUs' collective times", tp, c.gpus.size());
    return std::nullopt;
  }
  int64_t coll_ns = 0;
  if (tp > 1) {
    coll_ns = INT64_MAX;
    for (const reports::GpuRank& g : c.gpus) coll_ns = std::min(coll_ns, g.collective_ns_per_step);
  }
  const bool disk = knob_string(c.settings, "expert_tier") == "disk";
  if (disk && dev.disk_read_gbps <= 0) {  // the disk is the limit, and it was not measured
    why = "the disk tier's read bandwidth was not measured";
    return std::nullopt;
  }
  // Disk tier: the read of the next staging buffer overlaps the copy of the previous
  // one, so the slower of the two is the link.
  const double link = disk ? std::min(dev.h2d_gbps, dev.disk_read_gbps) : dev.h2d_gbps;
  const double moved = static_cast<double>(c.experts.decode_bytes_moved) / static_cast<double>(decode_tokens);
  const double resident =
      static_cast<double>(device_bytes_per_decode_token(tp > 1 ? tp_rank_config(cfg, 0, tp) : cfg, c.settings));
  double copy_s = moved / (link * 1e9);
  const double hbm_s = resident / (dev.hbm_gbps * 1e9);
  const double coll_s = static_cast<double>(coll_ns) * 1e-9;
  const bool overlap = copies_overlap_compute(c.settings);
  // The host link (expert_exec cpu | hybrid, cpu_moe_layers): the experts the host
  // computed read from host memory by the CPU kernel at its measured rate. hybrid: the
  // best split of every missed byte over both links (both busy to the end); otherwise
  // each link carries what the settings sent it, side by side.
  const std::string exec = knob_string(c.settings, "expert_exec");
  const bool cpu_layers = knob_int(c.settings, "cpu_moe_layers", 0) > 0;
  const bool host_link = !disk && (exec == "cpu" || exec == "hybrid" || cpu_layers);
  std::string host_text;
  if (host_link) {
    const double host_gbps = host_link_gbps(c.experts);
    if (!(c.experts.host_kernel_gbps > 0)) {
      why = "the host expert kernel's rate was not measured";
      return std::nullopt;
    }
    const double host = static_cast<double>(c.experts.decode_host_bytes) / static_cast<double>(decode_tokens);
    const std::string measured = host_kernel_text(c.experts);
    // The host waits through the device's attention and router of every layer: at least
    // the non-expert weights' HBM read per token.
    const QuantFormat f = knob_format(c.settings, "expert_dtype");
    const double dense = resident - static_cast<double>(static_cast<int64_t>(cfg.num_hidden_layers) *
                                                        cfg.num_experts_per_tok * static_cast<int64_t>(expert_bytes(cfg, f)));
    const double idle_s = std::max(0.0, dense) / (dev.hbm_gbps * 1e9);
    if (exec == "hybrid") {
      // Both links read host memory: where their joint read was measured, they carry at
      // most that much together while both run — the larger of the load's measurement and
      // what decode itself reached with both at once (a rate reached is not above a limit).
      const double load_joint = c.experts.joint_copy_gbps > 0 && c.experts.joint_host_gbps > 0
                                    ? c.experts.joint_copy_gbps + c.experts.joint_host_gbps
                                    : 0.0;
      const double decode_joint = decode_joint_gbps(c.experts);
      const double joint = load_joint > 0 ? std::max(load_joint, decode_joint) : 0.0;
      copy_s = hybrid_link_seconds(moved + host, link, host_gbps, idle_s, joint);
      host_text = fmt::format("hybrid: {}/token of missed experts (copied {} + host {}, measured, decode), best split "
                              "over {} host->device + {} host kernel ({}){}, the host idle {:.2f} ms/token (the "
                              "non-expert weights over HBM)",
                              profiler::format_bytes(moved + host), profiler::format_bytes(moved),
                              profiler::format_bytes(host), profiler::format_gbps(link), profiler::format_gbps(host_gbps),
                              measured,
                              joint > 0 ? fmt::format(", at most {} together while both run (measured at load: copies "
                                                      "{} beside the host kernel's {}{})",
                                                      profiler::format_gbps(std::min(joint, link + host_gbps)),
                                                      profiler::format_gbps(c.experts.joint_copy_gbps),
                                                      profiler::format_gbps(c.experts.joint_host_gbps),
                                                      decode_joint > 0
                                                          ? fmt::format("; in decode {} + {}",
                                                                        profiler::format_gbps(decode_joint_copy_gbps(c.experts)),
                                                                        profiler::format_gbps(decode_joint_host_gbps(c.experts)))
                                                          : std::string())
                                        : std::string(),
                              idle_s * 1e3);
    } else {
      copy_s = std::max(copy_s, host > 0 ? host / (host_gbps * 1e9) + idle_s : 0.0);
      host_text = fmt::format("host link beside the copies: max of {}/token copied / {} host->device, {}/token on the "
                              "host / {} host kernel ({})",
                              profiler::format_bytes(moved), profiler::format_gbps(link), profiler::format_bytes(host),
                              profiler::format_gbps(host_gbps), measured);
    }
  }
  Bound b;
  b.unit = "tok/s";
  b.time_model = overlap ? "overlap" : "serial";
  b.value = 1.0 / (overlap ? std::max(copy_s, hbm_s + coll_s) : copy_s + hbm_s + coll_s);
  b.bandwidth_gbps = {{"h2d", dev.h2d_gbps}, {"hbm", dev.hbm_gbps}};
  if (disk) b.bandwidth_gbps["disk_read"] = dev.disk_read_gbps;
  if (host_link) b.bandwidth_gbps["host_kernel"] = host_link_gbps(c.experts);
  if (host_link && exec == "hybrid" && c.experts.joint_copy_gbps > 0 && c.experts.joint_host_gbps > 0)
    b.bandwidth_gbps["joint_host_read"] =
        std::max(c.experts.joint_copy_gbps + c.experts.joint_host_gbps, decode_joint_gbps(c.experts));
  const std::string copies = host_link ? host_text : fmt::format(
      "{}/token of expert copies (measured, decode) / {} {}", profiler::format_bytes(moved), profiler::format_gbps(link),
      link < dev.h2d_gbps ? "disk read (measured; host->device is faster)" : "host->device");
  std::string reads = fmt::format("{}/token / {}", profiler::format_bytes(resident), hbm_text(dev));
  if (tp > 1)
    reads += fmt::format(" + {:.1f} us of all-reduces per step (measured; per GPU of {}, tensor parallel)",
                         coll_s * 1e6, tp);
  b.description = overlap ? fmt::format("offloaded, copies overlap compute ({} prefetches): max of {}, {}",
                                        knob_string(c.settings, "cache_policy"), copies, reads)
                          : fmt::format("offloaded, copies then compute (no prefetch): {} + {}", copies, reads);
  return b;
}

// Everything resident: the weight bytes a token reads over one measured bandwidth
// (`name` in bandwidth_gbps, `text` in the description).
Bound resident_bound(int64_t bytes, const char* dtype, double gbps, const char* name, const std::string& text) {
  Bound b;
  b.unit = "tok/s";
  b.time_model = "single";
  b.value = gbps * 1e9 / static_cast<double>(bytes);
  b.bandwidth_gbps = {{name, gbps}};
  b.description = fmt::format("resident: {}/token of {} weights / {}", profiler::format_bytes(static_cast<double>(bytes)),
                              dtype, text);
  return b;
}

// What both multi-GPU bounds need (`knob`=n GPUs): the HBM bandwidth and every GPU's
// figures; returns the GPU time of a decode step's all-reduces as the case measured it
// on the GPU that spent least in them (the rest of a GPU's time inside an all-reduce is
// waiting for a slower GPU's compute, not communication), or nullopt with `why`.
std::optional<int64_t> least_collective_ns(const DeviceInfo& dev, const char* knob, int n,
                                          const std::vector<reports::GpuRank>& gpus, std::string& why) {
  if (dev.hbm_gbps <= 0) {
    why = "the HBM bandwidth was not measured";
    return std::nullopt;
  }
  if (static_cast<int>(gpus.size()) != n) {
    why = fmt::format("{}={} but the case recorded {} GPUs' collective times", knob, n, gpus.size());
    return std::nullopt;
  }
  int64_t coll_ns = INT64_MAX;
  for (const reports::GpuRank& g : gpus) coll_ns = std::min(coll_ns, g.collective_ns_per_step);
  return coll_ns;
}

// A decode step of `batch` tokens that takes at least `bytes` over HBM plus coll_ns.
Bound multi_gpu_bound(int batch, double bytes, int64_t coll_ns, const DeviceInfo& dev) {
  Bound b;
  b.unit = "tok/s";
  b.time_model = "serial";
  b.value = batch / (bytes / (dev.hbm_gbps * 1e9) + static_cast<double>(coll_ns) * 1e-9);
  b.bandwidth_gbps = {{"hbm", dev.hbm_gbps}};
  return b;
}

// Tensor parallel over n GPUs, a step of `batch` tokens: the largest rank's weight bytes
// (its heads, every replicated weight, and its block of the intermediate dimension of
// every expert the step ran) over HBM, plus the least all-reduce time per step. The
// experts a step ran per layer are the distinct experts of its tokens, as the GPUs
// counted them (`gpus`, experts_run_per_step: every rank runs its block of the same
// experts; the most any GPU counted), counted the same way as expert parallel's; where
// no GPU counted them (files from before the count), one token's top_k per layer, which
// no step of one or more tokens reads less than, so the bound stays a limit.
std::optional<Bound> tp_bound(const ModelConfig& cfg, const DeviceInfo& dev, const reports::Settings& s, int n,
                              int batch, const std::vector<reports::GpuRank>& gpus, std::string& why) {
  const std::optional<int64_t> coll = least_collective_ns(dev, "tensor_parallel", n, gpus, why);
  if (!coll) return std::nullopt;
  const int64_t coll_ns = *coll;
  const ModelConfig rank = tp_rank_config(cfg, 0, n);
  const int64_t one_token = device_bytes_per_decode_token(rank, s);
  const double top_k = static_cast<double>(rank.num_hidden_layers) * rank.num_experts_per_tok;
  double experts = 0;
  for (const reports::GpuRank& g : gpus)
    if (g.experts_held > 0) experts = std::max(experts, g.experts_run_per_step);
  const bool counted = experts > 0;
  if (!counted) experts = top_k;
  const double block = static_cast<double>(expert_bytes(rank, knob_format(s, "expert_dtype")));
  const double bytes = static_cast<double>(one_token) + (experts - top_k) * block;
  Bound b = multi_gpu_bound(batch, bytes, coll_ns, dev);
  b.description = fmt::format(
      "tensor parallel over {} GPUs, {} token(s) per step: the largest rank's {}/step of bf16 weights ({:.1f} experts "
      "run per step, {}: its block of each) / {} + {:.1f} us of all-reduces per step (measured, CUDA events, the least "
      "of the ranks)",
      n, batch, profiler::format_bytes(bytes), experts, counted ? "measured" : "top_k per layer",
      hbm_text(dev), static_cast<double>(coll_ns) / 1e3);
  return b;
}

// Expert parallel over n GPUs, a step of `batch` tokens: every GPU reads all the
// non-expert weights (attention, norms, routers and lm_head run replicated) and the held
// experts it ran, each whole; the slowest GPU's bytes per decode step (its measured
// distinct experts run per step, `gpus`) over HBM, plus the all-reduce time per step of
// the rank that spent least in them, as for tensor parallel. Counting a GPU's experts
// over the whole step rather than layer by layer (where the slowest GPU of each layer
// sets its time) can only make the step shorter, so the bound stays a limit.
std::optional<Bound> ep_bound(const ModelConfig& cfg, const DeviceInfo& dev, const reports::Settings& s, int n,
                              int batch, const std::vector<reports::GpuRank>& gpus, std::string& why) {
  const std::optional<int64_t> coll = least_collective_ns(dev, "expert_parallel", n, gpus, why);
  if (!coll) return std::nullopt;
  const QuantFormat f = knob_format(s, "expert_dtype");
  const int64_t one_expert = static_cast<int64_t>(expert_bytes(cfg, f));
  const int64_t dense = device_bytes_per_decode_token(cfg, s) -
                        static_cast<int64_t>(cfg.num_hidden_layers) * cfg.num_experts_per_tok * one_expert;
  double experts = 0;
  int slowest = 0;
  for (size_t r = 0; r < gpus.size(); ++r) {
    const reports::GpuRank& g = gpus[r];
    if (g.experts_held <= 0) {
      why = fmt::format("expert_parallel={} but GPU {} recorded no expert counters", n, r);
      return std::nullopt;
    }
    if (g.experts_run_per_step > experts) {
      experts = g.experts_run_per_step;
      slowest = static_cast<int>(r);
    }
  }
  const double bytes = static_cast<double>(dense) + experts * static_cast<double>(one_expert);
  Bound b = multi_gpu_bound(batch, bytes, *coll, dev);
  b.description = fmt::format(
      "expert parallel over {} GPUs, {} token(s) per step: the slowest GPU's (GPU {}) {}/step ({} of replicated "
      "non-expert weights + {:.1f} experts run per step, measured) / {} + {:.1f} us of all-reduces per step "
      "(measured, CUDA events, the least of the GPUs)",
      n, batch, slowest, profiler::format_bytes(bytes), profiler::format_bytes(static_cast<double>(dense)), experts,
      hbm_text(dev), static_cast<double>(*coll) / 1e3);
  return b;
}

}  // namespace

int64_t bench_token_bytes(const ModelConfig& cfg, const reports::Settings& s, bool cpu) {
  return cpu ? bytes_per_decode_token(cfg, 4) : device_bytes_per_decode_token(cfg, s);
}

int64_t bytes_per_decode_token(const ModelConfig& c, int64_t bytes_per_param) {
  int64_t params = c.num_hidden_layers * (c.layer_dense_params() + c.num_experts_per_tok * c.expert_params()) +
                   2LL * c.hidden_size + static_cast<int64_t>(c.vocab_size) * c.hidden_size;
  return params * bytes_per_param;
}

bool copies_overlap_compute(const reports::Settings& s) {
  const std::string policy = knob_string(s, "cache_policy");
  if (policy.empty()) return false;
  for (const CachePolicyInfo& p : cache_policies())
    if (p.name == policy) return p.speculative;
  return false;
}

std::optional<Bound> physical_bound(const Case& c, const ModelConfig& cfg, const std::string& backend,
                                    const DeviceInfo& dev, const CpuRead& cpu, std::string* why_out) {
  std::string ignored;
  std::string& why = why_out ? *why_out : ignored;
  why.clear();
  if (c.aggregates.decode_tok_s <= 0) {
    why = "the case decoded no token";
    return std::nullopt;
  }
  std::optional<Bound> b;
  const std::string tier = knob_string(c.settings, "expert_tier");
  if (backend == "cuda" && !tier.empty() && tier != "resident") {
    b = offloaded_bound(c, cfg, dev, why);
  } else if (backend == "cpu") {
    if (cpu.gbps <= 0) {
      why = "the CPU read stream was not measured";
      return std::nullopt;
    }
    b = resident_bound(bytes_per_decode_token(cfg, 4), "fp32", cpu.gbps, "cpu_read", cpu_read_text(cpu));
  } else if (const int64_t tp = knob_int(c.settings, "tensor_parallel", 1); backend == "cuda" && tp > 1) {
    b = tp_bound(cfg, dev, c.settings, static_cast<int>(tp), 1, c.gpus, why);
  } else if (const int64_t ep = knob_int(c.settings, "expert_parallel", 1); backend == "cuda" && ep > 1) {
    b = ep_bound(cfg, dev, c.settings, static_cast<int>(ep), 1, c.gpus, why);
  } else {
    if (dev.hbm_gbps <= 0) {
      why = "the HBM bandwidth was not measured";
      return std::nullopt;
    }
    b = resident_bound(device_bytes_per_decode_token(cfg, c.settings), device_weights_label(c.settings).c_str(), dev.hbm_gbps,
                       "hbm", hbm_text(dev));
  }
  if (b) b->percent = c.aggregates.decode_tok_s / b->value * 100;
  return b;
}

namespace {
// A decode step of `batch` tokens (one a sequence) reads at least what one token reads
// (`one_token` bytes: top_k experts a layer); counted (batch > 1, experts_per_step > 0),
// the distinct (layer, expert)s its tokens chose, each read at least once. A count below
// top_k a layer or above every expert gives no bound. The limit is in tok/s over all
// sequences: batch tokens a step / (the step's bytes / gbps). `who` says who counted.
std::optional<Bound> batched_step_bound(const ModelConfig& cfg, int batch, double decode_tok_s, double experts_per_step,
                                        int64_t one_token, double bytes_per_expert, const std::string& dtype, double gbps,
                                        const char* name, const std::string& text, const char* who) {
  const double top_k = static_cast<double>(cfg.num_hidden_layers) * cfg.num_experts_per_tok;
  const double all = static_cast<double>(cfg.num_hidden_layers) * cfg.num_local_experts;
  const bool counted = batch > 1 && experts_per_step > 0;
  if (counted && !(experts_per_step >= top_k && experts_per_step <= all))
    return std::nullopt;  // no step of one or more tokens runs fewer than top_k or more than every expert
  const double bytes = static_cast<double>(one_token) + (counted ? (experts_per_step - top_k) * bytes_per_expert : 0);
  Bound b = resident_bound(std::llround(bytes), dtype.c_str(), gbps, name, text);
  b.value *= batch;
  b.percent = batch * decode_tok_s / b.value * 100;
  if (batch > 1)
    b.description = fmt::format(
        "batch {} decode: {} sequences x {:.1f} steps/s = {:.1f} tok/s total; bound: {} tokens per step that read at "
        "least {} of weights (every non-expert weight, {}) / {}",
        batch, batch, decode_tok_s, batch * decode_tok_s, batch, profiler::format_bytes(bytes),
        counted ? fmt::format("{:.1f} distinct experts a step ran, counted {} in one more generation of the same "
                              "batch that gave the same tokens",
                              experts_per_step, who)
                : std::string("top_k experts per layer"),
        text);
  return b;
}
}  // namespace

std::optional<Bound> bench_decode_bound(const ModelConfig& cfg, const DeviceInfo& dev, const reports::Settings& s, int batch,
                                        double decode_tok_s, const std::vector<reports::GpuRank>& gpus,
                                        double experts_per_step) {
  if (dev.hbm_gbps <= 0 || batch < 1 || !(decode_tok_s > 0)) return std::nullopt;
  if (const int64_t tp = knob_int(s, "tensor_parallel", 1); tp > 1) {
    std::string why;
    auto b = tp_bound(cfg, dev, s, static_cast<int>(tp), batch, gpus, why);
    if (b) b->percent = batch * decode_tok_s / b->value * 100;
    return b;
  }
  if (const int64_t ep = knob_int(s, "expert_parallel", 1); ep > 1) {
    std::string why;
    auto b = ep_bound(cfg, dev, s, static_cast<int>(ep), batch, gpus, why);
    if (b) b->percent = batch * decode_tok_s / b->value * 100;
    return b;
  }
  return batched_step_bound(cfg, batch, decode_tok_s, experts_per_step, device_bytes_per_decode_token(cfg, s),
                            static_cast<double>(expert_bytes(cfg, knob_format(s, "expert_dtype"))),
                            device_weights_label(s), dev.hbm_gbps, "hbm", hbm_text(dev), "on the device");
}

std::optional<Bound> bench_cpu_decode_bound(const ModelConfig& cfg, const CpuRead& cpu, int batch, double decode_tok_s,
                                            double experts_per_step) {
  if (cpu.gbps <= 0 || batch < 1 || !(decode_tok_s > 0)) return std::nullopt;
  return batched_step_bound(cfg, batch, decode_tok_s, experts_per_step, bytes_per_decode_token(cfg, 4),
                            4.0 * static_cast<double>(cfg.expert_params()), "fp32", cpu.gbps, "cpu_read",
                            cpu_read_text(cpu), "by the CPU model");
}

std::optional<Bound> bench_prefill_bound(const ModelConfig& cfg, const DeviceInfo& dev, const reports::Settings& s,
                                         double ttft_ns) {
  if (dev.hbm_gbps <= 0 || !(ttft_ns > 0)) return std::nullopt;
  const double bytes = static_cast<double>(device_bytes_per_decode_token(cfg, s));
  Bound b;
  b.unit = "ms";
  b.time_model = "single";
  b.value = bytes / (dev.hbm_gbps * 1e9) * 1e3;
  b.percent = b.value / (ttft_ns / 1e6) * 100;
  b.bandwidth_gbps = {{"hbm", dev.hbm_gbps}};
  b.description = fmt::format("prefill: at least {} of weights read (every non-expert weight, top_k experts per layer) / {}",
                              profiler::format_bytes(bytes), hbm_text(dev));
  return b;
}

CpuRead decode_cpu_read(const ModelConfig& cfg, int cpu_threads, double gbps) {
  CpuRead cpu;
  cpu.gbps = gbps;
  cpu.bytes = bytes_per_decode_token(cfg, 4);
  cpu.threads = cpu_threads > 0 ? cpu_threads : omp_get_max_threads();
  return cpu;
}

std::optional<Bound> bench_case_bound(const ModelConfig& cfg, const DeviceInfo& dev, bool on_cpu, const Case& k,
                                      int batch, const CpuRead& cpu, std::string* why) {
  auto no = [&](const char* reason) -> std::optional<Bound> {
    if (why) *why = reason;
    return std::nullopt;
  };
  const double rate = k.aggregates.decode_tok_s, counted = k.experts.decode_experts_per_step;
  std::optional<Bound> b;
  if (on_cpu) {
    if (k.new_tokens <= 1) return no("no prefill bound on the CPU backend");
    if (cpu.gbps <= 0) return no("the CPU read stream was not measured");
    b = bench_cpu_decode_bound(cfg, cpu, batch, rate, counted);
  } else {
    b = k.new_tokens > 1 ? bench_decode_bound(cfg, dev, k.settings, batch, rate, k.gpus, counted)
                         : bench_prefill_bound(cfg, dev, k.settings, k.aggregates.ttft_warm_ns);
  }
  if (!b) return no("a bandwidth or count the bound needs was not measured");
  return b;
}

std::optional<Bound> rederive_bound(const reports::Results& r, const Case& c, std::string* why) {
  auto no = [&](std::string reason) -> std::optional<Bound> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  if (c.status != reports::CaseStatus::ok) return no("the case failed");
  ModelConfig cfg;
  try {
    cfg = config_from_json(r.model.config, "model.config");
  } catch (const Error& e) {
    return no(e.what());
  }
  // A file records the CPU read stream's rate alone (in the case's bound).
  const bool on_cpu = r.device.kind == reports::DeviceKind::cpu;
  CpuRead cpu;
  if (on_cpu) {
    if (!c.bound || !c.bound->bandwidth_gbps.count("cpu_read"))
      return no("the file does not record the CPU read stream a bound needs");
    cpu.gbps = c.bound->bandwidth_gbps.at("cpu_read");
  }
  if (c.suite != "bench") return physical_bound(c, cfg, on_cpu ? "cpu" : "cuda", r.device, cpu, why);
  // bench records a case's sequences as batch_size (app/cmd_bench.cpp).
  return bench_case_bound(cfg, r.device, on_cpu, c, static_cast<int>(knob_int(c.settings, "batch_size", 1)), cpu, why);
}

int rederive_recorded_bounds(reports::Results& r) {
  int n = 0;
  for (Case& c : r.cases) {
    if (!c.bound || !c.bound->time_model.empty()) continue;
    if (auto b = rederive_bound(r, c, nullptr)) {
      c.bound = std::move(b);
      ++n;
    }
  }
  return n;
}

std::vector<std::string> bound_warnings(const reports::Results& r) {
  std::vector<std::string> out;
  for (const Case& c : r.cases) {
    if (c.status != reports::CaseStatus::ok || !c.bound || !std::isfinite(c.bound->percent)) continue;
    if (const std::string over = reports::bound_exceeded(*c.bound); !over.empty())
      out.push_back(fmt::format("{}/{} ({}) {}", c.suite, c.name, c.settings.stage, over));
  }
  return out;
}

}  // namespace moebench::suites
