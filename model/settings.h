// settings.h: every knob of an engine run, as one plain struct. Stage presets
// (variants/stages.h) are bundles of these; any knob can be overridden by name
// (`--set key=value`), and every result prints them all (to_map()).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moebench {

struct EngineSettings {
  std::string stage = "custom";
  // Where experts live: resident (all on the device / in memory), pinned (host
  // pinned memory, copied into device slots on a miss), disk (read from the
  // checkpoint's safetensors on every miss).
  std::string expert_tier = "resident";
  // variants/cache_policy.h registry; `prefetch` (LRU + speculative loads for layer L+1
  // from its gate applied to layer L's hidden state) is the speculative one.
  std::string cache_policy = "lru";
  int cache_slots = 0;               // expert slots on the device; 0 = as many as the budget allows
  bool warmup = false;               // one untimed warm-up generation before measuring
  std::string dispatch = "fused";    // serial | grouped | fused
  std::string combine = "fused";     // loop | index_add | fused
  std::string buffers = "pooled";    // alloc | pooled
  std::string routing = "model";     // model | uniform | mixtral-locality | fine-grained-locality | trace:FILE
  uint64_t routing_seed = 1;
  // With a synthetic or replayed routing source, the `prefetch` policy's prediction of
  // layer L+1 is the source's true choice with each id kept with this probability (else
  // a wrong expert, seeded) — the gate cannot predict routing it did not make. An
  // assumption, printed in every result; with routing=model the next layer's gate
  // predicts and this knob is unused.
  double prefetch_accuracy = 0.8;
  // CUDA, dispatch=fused: forwards of up to this many tokens take the decode kernels
  // (GEMV over the selected experts, no host sync, graph-capturable); larger ones sort
  // the tokens by expert and run one cuBLAS GEMM per active expert. 1..8. Default 2:
  // on the H200 (Mixtral-8x7B shape, 8 layers) the GEMV kernels win at 2 tokens (568 vs
  // 542 tok/s) and lose at 4 (772 vs 794) and 8 (804 vs 1280), where several tokens
  // share an expert and cuBLAS's tensor cores beat the CUDA-core dot products
  // (reports/baselines/bench_mixtral8l_fused_threshold_h200_2026-11-28.json).
  int fused_decode_max_tokens = 2;
  int max_num_batched_tokens = 2048;
  int max_model_len = 1024;
  double gpu_memory_utilization = 0.9;
  std::string gpu_mem_budget;        // hard cap, e.g. "22GiB"; empty = utilization × free memory
  // Format of the expert weights (w1, w3, w2): bf16 | fp8 | int8 | int4 (engine/quant.h).
  // Unquantised checkpoints are quantised on load; a quantised checkpoint runs in its
  // own format (or dequantised with bf16). Tokens may differ from bf16: it is another
  // model, not a variant.
  std::string expert_dtype = "bf16";
  // Format of the attention projections (q_proj, k_proj, v_proj, o_proj): bf16 | fp8 |
  // int8 (engine/quant.h: fp8 128x128 blocks, int8 per output row). Norms, the router
  // gate, embeddings and lm_head stay as stored, as in published FP8 checkpoints. As for
  // expert_dtype: unquantised checkpoints are quantised on load, a checkpoint that stores
  // them quantised runs in its own format (or dequantised with bf16), and it is another
  // model, not a variant.
  std::string weight_dtype = "bf16";
  // GPUs the CUDA model is split over, tensor-parallel (engine/shard.h: attention heads
  // and each expert's intermediate dimension; two all-reduces per layer through NCCL,
  // one host thread per GPU). 1 = one GPU, the model as without the knob.
  int tensor_parallel = 1;
  // Memory of the tensor-parallel all-reduces: symmetric (NCCL symmetric memory, for
  // NCCL's low-latency kernels; fails in one line where NCCL lacks it), plain (the
  // model's device arena), lsa (the all-reduces of up to 64 rows, decode's, in a kernel
  // of ours over NCCL's device API: stores into the peers' symmetric memory, an LSA
  // barrier, a sum in rank order; larger ones as symmetric; engine/cuda/tp_lsa_reduce.h),
  // auto (symmetric at 2 GPUs, where a sum of two is the same bits in any order, falling
  // back to plain; plain above 2; lsa only when asked for, PARALLEL.md says why).
  std::string tp_allreduce = "auto";
  // What a multi-GPU model all-reduces (engine/cuda/cuda_model_tp.cpp): residual (the
  // residual stream itself: GPU 0 adds its partial output into it as one GPU does, the
  // others write theirs alone, and the sum is the next residual; no add afterwards) or
  // partial (the partial outputs in a buffer of their own, then added to the residual).
  std::string tp_reduce = "residual";
  // GPUs the CUDA model is split over, expert-parallel (engine/cuda/parallel_model.h:
  // whole experts placed on GPUs by ep_placement, attention replicated, the MoE block's
  // partial outputs summed by one all-reduce per layer). 1 = one GPU. Not with
  // tensor_parallel > 1.
  int expert_parallel = 1;
  // Which GPU holds each expert under expert_parallel (variants/placement.h): round-robin,
  // or balanced (on the routing counts of another seed of the routing source).
  std::string ep_placement = "round-robin";
  // Where a missed expert is computed (offloaded tiers, decode): gpu (copied into a slot,
  // computed on the device), cpu (computed on the host from its pinned copy: the token's
  // activations go down and the result comes back; hits stay on the GPU), hybrid (each
  // miss copied or computed on the host, split by a cost model from the copy and host
  // rates measured in the run). docs/HYBRID.md.
  std::string expert_exec = "gpu";
  // The first N layers keep every expert on the host and compute them there (no slot,
  // no copy), whatever expert_exec says for the other layers. 0 = none.
  int cpu_moe_layers = 0;
  // The rates expert_exec=hybrid splits with: load (each link alone and both at once,
  // measured when the model loads) or decode (the same, then replaced by what the decode
  // steps themselves measure: the copies' and the host kernel's rates beside each other,
  // and the host's alone, smoothed over the recent layers). docs/HYBRID.md.
  std::string hybrid_rates = "decode";
  // Which misses expert_exec=hybrid may share between the links, a split expert's rows
  // in parts (bf16): balance (the default: cpu mode's schedule, nothing copied ahead, the
  // link taking the share of each layer's misses a feedback loop on the layers' own finish
  // times sets; on the 16-core H200 host 8.60 tok/s against host's 5.62 and cpu mode's 7.20
  // in one call, docs/HYBRID.md), host (only a host expert may give parts to the link, by
  // the rate model), all (any miss: copies may give way to parts too), off (whole experts
  // per link, no scratch slot). Quantised experts do not split: there every value is the
  // whole-expert rate model with its copies ahead. MOEBENCH_HYBRID_SPLIT in the
  // environment, when set, wins.
  std::string hybrid_split = "balance";

  // All knobs as strings (for results, logs and the UI), in a fixed order.
  std::vector<std::pair<std::string, std::string>> to_list() const;
  // Sets one knob by name; throws Error naming the key and the expected values.
  void set(const std::string& key, const std::string& value);
  // Checks values (names exist in the registries, ranges); throws Error naming the knob.
  void validate() const;
};

// The names of every knob (for --help and the UI).
std::vector<std::string> setting_keys();

// Every knob with what it takes and its default (`moebench info`).
struct SettingDoc {
  std::string key;
  std::string values;
  std::string default_value;
};
std::vector<SettingDoc> setting_docs();

}  // namespace moebench
