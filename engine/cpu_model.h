// cpu_model.h: the fp32 CPU reference model (OpenMP). Weights are read through a
// WeightSource and upcast to fp32 once. forward() runs one sequence with a contiguous KV
// cache; forward_batch() (BatchModel) runs several at once, their keys/values in a paged
// fp32 pool, every weight read once for all rows of the step. A row's arithmetic is the
// same either way (the ops work row by row), so a sequence gets the same logits batched
// as alone. Per-layer routing decisions are reported to an optional observer (debug log,
// routing traces).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/batch_model.h"
#include "engine/engine.h"
#include "engine/expert_provider.h"
#include "engine/model.h"
#include "engine/weight_source.h"
#include "engine/moe_strategy.h"
#include "variants/routing_driver.h"

namespace moebench {

struct CpuLayerWeights {
  std::vector<float> attn_norm;  // (H)
  std::vector<float> wq;         // (q_dim, H)
  std::vector<float> wk;         // (kv_dim, H)
  std::vector<float> wv;         // (kv_dim, H)
  std::vector<float> wo;         // (H, q_dim)
  std::vector<float> ffn_norm;   // (H)
  std::vector<float> gate;       // (E, H)
  // Family extras, empty where the family has none.
  std::vector<float> q_norm, k_norm;           // (head_dim) per head, or (q_dim) / (kv_dim) whole
  std::vector<float> bq, bk, bv;               // (q_dim), (kv_dim), (kv_dim)
  std::vector<float> sw1, sw3, sw2;            // shared expert: (S, H), (S, H), (H, S)
  std::vector<float> shared_gate;              // (1, H)
};

struct CpuWeights {
  std::vector<float> embed;  // (V, H)
  std::vector<CpuLayerWeights> layers;
  std::vector<float> norm;     // (H)
  std::vector<float> lm_head;  // (V, H); empty when tied to embed
};

// Called once per layer per forward with the router's choice: ids and weights (n, k).
using RoutingObserver = std::function<void(int layer, int pos0, int n, const int32_t* ids, const float* weights)>;

class CpuModel : public Model, public BatchModel {
 public:
  // Resident experts, fused strategy, model routing.
  CpuModel(const WeightSource& src, int max_seq_len);
  // Everything from the settings: expert tier + cache policy, MoE strategy, routing source.
  explicit CpuModel(const EngineContext& ctx);
  const ModelConfig& config() const override { return cfg_; }
  std::string backend() const override { return "cpu"; }
  void forward(const int32_t* tokens, int n, int pos0, float* logits, float* all_logits = nullptr) override;
  void reset() override {
    step_ = 0;
    if (routing_) routing_->reset();
  }
  void set_routing_stream(uint64_t stream) override {
    if (routing_) routing_->set_stream(stream);
  }
  int max_seq_len() const override { return max_len_; }
  void set_routing_observer(RoutingObserver o) { observer_ = std::move(o); }
  size_t weight_bytes() const;  // fp32 bytes held
  const ExpertProvider& experts() const { return *provider_; }
  const MoeCpuWorkspace& moe_workspace() const { return moe_ws_; }
  std::string routing_name() const;
  std::string experts_describe() const override { return provider_->describe(); }
  int64_t engine_host_bytes() const override;  // weights + KV caches + MoE workspace

  // BatchModel: the pool holds num_blocks x block_size positions a layer, fp32.
  void setup_kv_blocks(int block_size, int num_blocks, int max_seqs) override;
  void forward_batch(const std::vector<BatchSeq>& seqs, int32_t* next, float* logits = nullptr) override;
  int max_batch_tokens() const override { return max_batch_tokens_; }
  // Counts, in forward_batch's decode steps of two or more sequences, the distinct experts
  // each layer ran (the router's ids after any routing source), as the CUDA model does.
  bool set_step_expert_count(bool on) override;
  StepExperts step_expert_count() override { return step_count_; }

 private:
  void init(const WeightSource& src, const EngineSettings& s);
  // Layer l's input norm and q/k/v projections of x (n, H): q (n, Q), k and v (n, KV), with
  // the family's biases and q/k norms, before RoPE. h (n, H) is scratch.
  void qkv(int l, const float* x, float* h, float* q, float* k, float* v, int n);
  // Layer l after attention: x += o_proj(att); x += moe(norm(x)). h (n, H) is scratch.
  void finish_layer(int l, float* x, float* h, const float* att, int n, int pos0);
  void moe(int layer, const float* x, float* out, int n, int pos0);
  // out += sigmoid(x . shared_gate) * shared_expert(x) (Qwen2-MoE); x, out (n, H).
  void shared_expert(int layer, const float* x, float* out, int n);
  ModelConfig cfg_;
  CpuWeights w_;
  int max_len_;
  std::vector<std::vector<float>> k_cache_, v_cache_;  // per layer (max_len, n_kv, head_dim)
  struct Paged {
    int block_size = 0, num_blocks = 0, max_seqs = 0;
    std::vector<std::vector<float>> k, v;  // per layer (num_blocks, block_size, n_kv, head_dim)
  };
  std::unique_ptr<Paged> paged_;
  int max_batch_tokens_ = 0;
  bool step_count_on_ = false;  // set_step_expert_count
  bool counting_ = false;       // this forward's layers add to step_count_
  StepExperts step_count_;
  RoutingObserver observer_;
  profiler::Profiler* prof_ = nullptr;
  std::unique_ptr<ExpertProvider> provider_;
  std::unique_ptr<RoutingDriver> routing_;  // null: the model's own gate (trace(): feeds belady/static)
  MoeStrategy strategy_;
  MoeCpuWorkspace moe_ws_;
  std::vector<ExpertWeights> expert_ptrs_;  // (E)
  int step_ = 0;                            // forward calls since reset
};

}  // namespace moebench
