// cpu_model.h: the fp32 CPU reference model (OpenMP). Weights are read through a
// WeightSource and upcast to fp32 once; one sequence with a contiguous KV cache.
// Per-layer routing decisions are reported to an optional observer (debug log,
// routing traces).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/model.h"
#include "engine/weight_source.h"

namespace moebench {

struct CpuLayerWeights {
  std::vector<float> attn_norm;  // (H)
  std::vector<float> wq;         // (q_dim, H)
  std::vector<float> wk;         // (kv_dim, H)
  std::vector<float> wv;         // (kv_dim, H)
  std::vector<float> wo;         // (H, q_dim)
  std::vector<float> ffn_norm;   // (H)
  std::vector<float> gate;       // (E, H)
  std::vector<std::vector<float>> w1, w2, w3;  // per expert: (I, H), (H, I), (I, H)
};

struct CpuWeights {
  std::vector<float> embed;  // (V, H)
  std::vector<CpuLayerWeights> layers;
  std::vector<float> norm;     // (H)
  std::vector<float> lm_head;  // (V, H); empty when tied to embed
};

// Called once per layer per forward with the router's choice: ids and weights (n, k).
using RoutingObserver = std::function<void(int layer, int pos0, int n, const int32_t* ids, const float* weights)>;

class CpuModel : public Model {
 public:
  CpuModel(const WeightSource& src, int max_seq_len);
  const ModelConfig& config() const override { return cfg_; }
  std::string backend() const override { return "cpu"; }
  void forward(const int32_t* tokens, int n, int pos0, float* logits, float* all_logits = nullptr) override;
  void reset() override {}
  int max_seq_len() const override { return max_len_; }
  void set_routing_observer(RoutingObserver o) { observer_ = std::move(o); }
  size_t weight_bytes() const;  // fp32 bytes held

 private:
  void moe(int layer, const float* x, float* out, int n, int pos0);
  ModelConfig cfg_;
  CpuWeights w_;
  int max_len_;
  std::vector<std::vector<float>> k_cache_, v_cache_;  // per layer (max_len, n_kv, head_dim)
  RoutingObserver observer_;
};

}  // namespace moebench
