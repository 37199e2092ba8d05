// model.h: what a backend's model instance offers the generation loop, the
// scheduler and the runner. The CPU model (engine/cpu_model.h) is the reference;
// the CUDA model (engine/cuda/) implements the same interface.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "engine/sampler.h"

namespace moebench {

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  virtual std::string backend() const = 0;  // "cpu" | "cuda"
  // Runs n tokens of one sequence at positions pos0 .. pos0+n-1 through the model,
  // appending their keys/values to the KV cache, and writes the logits of the last
  // token (vocab floats) to `logits`. When all_logits is non-null it receives
  // (n, vocab) logits of every token instead (for teacher forcing and tests).
  virtual void forward(const int32_t* tokens, int n, int pos0, float* logits, float* all_logits = nullptr) = 0;
  // forward() for greedy decoding: returns the argmax of the last token's logits (ties to
  // the lower id). Backends that can pick the token on the device (CUDA) override this to
  // avoid copying the logits to the host.
  virtual int32_t forward_argmax(const int32_t* tokens, int n, int pos0) {
    std::vector<float> logits(static_cast<size_t>(config().vocab_size));
    forward(tokens, n, pos0, logits.data());
    return argmax(logits.data(), config().vocab_size);
  }
  // Forgets the KV cache (a new sequence starts at position 0).
  virtual void reset() = 0;
  // The routing stream that later generations start from at reset(): 0 for measured
  // generations, another value for warm-ups, so that a synthetic routing source does
  // not show a warm-up the very choices it then measures (RoutingParams::stream).
  // Models routed by their own gate have nothing to switch.
  virtual void set_routing_stream(uint64_t /*stream*/) {}
  virtual int max_seq_len() const = 0;
  // Part of this model's construction spent on setup it shares with later models of the
  // process (the CUDA backend's pinned expert host store, filled once): reported on its
  // own, not as this model's load time. 0 when none.
  virtual int64_t shared_setup_ns() const { return 0; }
  // Where the experts live and how many device slots they got, e.g. "pinned, lru, 57
  // slots x 336.00 MiB (18.7 GiB); pinned: ..." (the expert provider's description).
  virtual std::string experts_describe() const = 0;
  // Host bytes this model holds itself (weights, KV cache, workspaces), as the backend
  // tracks them; 0 when it does not (the CUDA model's are device bytes, in its arena).
  virtual int64_t engine_host_bytes() const { return 0; }
  // A model over several GPUs: one entry per GPU in rank order, counted since the model
  // was made; empty for a model on one device.
  struct GpuRankStats {
    std::string device;                  // e.g. "NVIDIA H200"
    int64_t arena_used_bytes = 0, arena_peak_bytes = 0;
    int64_t decode_forwards = 0;         // forwards of one token per sequence
    int64_t decode_collective_ns = 0;    // GPU time inside their all-reduces (CUDA events)
    int64_t decode_collective_calls = 0;
    // Expert parallel (0 otherwise): the (layer, expert)s it holds; over its decode steps
    // (every one, graphed or not) the steps, the distinct held experts it ran summed over
    // layers, and the (token, expert) pairs it computed.
    int64_t experts_held = 0, ep_decode_steps = 0, decode_experts_run = 0, decode_expert_pairs = 0;
  };
  virtual std::vector<GpuRankStats> gpu_ranks() const { return {}; }
  // One GPU, resident experts: while counting is on, every batched decode step (one token
  // for each of two or more sequences) counts on the device the distinct experts its tokens
  // chose in each layer (one more small launch a layer; those steps run eagerly, not from
  // CUDA graphs). For the bound of a batched case, in a generation that is not timed.
  // set_step_expert_count returns false (and counts nothing) where the model cannot count.
  struct StepExperts {
    int64_t steps = 0;    // decode steps counted
    int64_t experts = 0;  // distinct (layer, expert)s they ran, summed over layers and steps
  };
  virtual bool set_step_expert_count(bool on) {
    (void)on;
    return false;
  }
  // What was counted since counting was last turned on (a copy and a sync).
  virtual StepExperts step_expert_count() { return {}; }
};

}  // namespace moebench
