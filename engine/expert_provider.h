// expert_provider.h: how a model gets the weights of the experts its tokens were
// routed to. Resident providers hand out pointers they hold; offloading providers
// (pinned host or disk tier) load misses into device/host slots, driven by an
// ExpertCache (variants/expert_cache.h) — the same decision code as the simulator.
#pragma once
#include <cstdint>
#include <string>

namespace moebench {

namespace profiler {
class ExpertCounters;
}

// One expert's weights as the backend consumes them (CPU: fp32 host pointers;
// CUDA: device pointers to bf16 matrices, or for quantised experts to each matrix's
// first part in the ExpertLayout). w1, w3: (inter, hidden); w2: (hidden, inter).
struct ExpertWeights {
  const void* w1 = nullptr;
  const void* w3 = nullptr;
  const void* w2 = nullptr;
};

class ExpertProvider {
 public:
  virtual ~ExpertProvider() = default;
  virtual std::string describe() const = 0;  // e.g. "pinned, lru, 96 slots"
  // Called once per layer per forward, after routing. ids: (n_tokens, top_k) flat,
  // duplicates allowed. Fills out[e] for every expert e that appears in ids (out has
  // num_local_experts entries). On CUDA, `stream` is the compute stream (cudaStream_t):
  // the provider makes it wait only on the load events of the experts it needs.
  virtual void acquire(int step, int layer, const int32_t* ids, int n_ids, ExpertWeights* out, void* stream) = 0;
  // False when acquire does not look at the routed ids (every expert is resident): the
  // model may then skip copying the router's choice to the host (no sync) and call
  // acquire with ids == nullptr, n_ids == 0, which fills out[e] for every expert.
  virtual bool needs_ids() const { return true; }
  // True when the provider wants the predicted experts of layer L+1 while layer L runs.
  virtual bool wants_prediction() const { return false; }
  // Predicted experts for `layer` ((n_tokens, top_k) flat), issued ahead on the copy stream.
  virtual void prefetch(int step, int layer, const int32_t* ids, int n_ids) {
    (void)step, (void)layer, (void)ids, (void)n_ids;
  }
  // CUDA: called once the layer's expert compute is launched on `stream`; slots it read
  // may be reloaded only after that work (an event). Optional for other backends.
  virtual void release(int layer, void* stream) { (void)layer, (void)stream; }
  // Brings counters() up to date (waits for loads still in flight). Cheap; call at the
  // end of a forward or a run.
  virtual void sync_counters() {}
  // Optional: counters kept by the provider (hits, misses, bytes, load and stall time).
  virtual const profiler::ExpertCounters* counters() const { return nullptr; }
};

}  // namespace moebench
