// cuda_model.h: the CUDA backend's Model — bf16 weights (experts bf16 or quantised:
// expert_dtype fp8|int8|int4, engine/cuda/moe_layer.h), KV cache and workspace in one
// DeviceArena (hard cap: settings.gpu_mem_budget, else gpu_memory_utilization x free
// memory), fp32 residual stream and accumulation. The forward pass mirrors CpuModel op
// for op (engine/cpu_model.cpp): embed -> N x [rmsnorm -> q/k/v -> rope -> KV store ->
// attention -> o_proj (+ residual) -> rmsnorm -> MoE (+ residual)] -> rmsnorm -> lm_head.
// The MoE block goes through an ExpertProvider and the dispatch / combine / buffers knobs
// (engine/cuda/moe_layer.h, workspace.h). expert_tier=resident: pointers into the
// uploaded experts; pinned / disk: an OffloadProvider whose slots take what the budget
// leaves after the rest of the model (cache_slots caps them), fed by an ExpertHostStore
// shared by the models of one process (filling and pinning 84 GiB takes about a minute:
// done once per run and not counted in a model's load time).
// routing: the gate, or a RoutingDriver (synthetic / trace) whose choice the gate's
// softmax weighs, as on the CPU; when nothing needs that choice mid-step (resident
// experts, no observer) every layer's is taken before the step's launches and uploaded
// in one copy (MoeLayer::begin_step), so the step does not sync with the host.
// Model::forward: one sequence, contiguous KV cache; prompts longer than the workspace's
// pool are run in chunks of max_num_batched_tokens. The cache is also a paged pool of one
// block (slot = position): rope_kv_store_paged writes it, and decode steps (m = 1) read it
// with decode_attention (paged_attention for shapes it does not take; keys split over
// blocks); prefill chunks use attention(). BatchModel::forward_batch
// (engine/cuda/cuda_model_batch.cpp): several sequences at once over a paged KV pool,
// decode steps replayed from CUDA graphs (resident experts only). Host C++.
#pragma once
#include <cublas_api.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <functional>
#include <map>
#include <string>
#include <memory>
#include <optional>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/blas.h"
#include "engine/cuda/host_experts.h"
#include "engine/cuda/moe_layer.h"
#include "engine/cuda/quant_linear.h"
#include "engine/cuda/workspace.h"
#include "engine/batch_model.h"
#include "engine/device_plan.h"
#include "engine/engine.h"
#include "engine/expert_host_store.h"
#include "engine/expert_provider.h"
#include "engine/model.h"
#include "profiler/cpu_trace.h"
#include "variants/placement.h"
#include "variants/routing_driver.h"

namespace moebench::cuda {

// Builds a non-resident expert provider once the arena and the compute stream exist
// (the offloading store's slots live in the same arena).
using ExpertProviderFactory =
    std::function<std::unique_ptr<ExpertProvider>(const WeightSource&, DeviceArena&, cudaStream_t)>;

// One rank of a tensor-parallel model (engine/cuda/parallel_model.h): which shard it
// holds (engine/shard.h) and the all-reduce (sum, in place, enqueued on the given
// stream) that turns its partial attention and MoE outputs into the full ones.
struct TpRank {
  int rank = 0;
  int world = 1;
  std::function<void(float* x, size_t count, cudaStream_t stream)> all_reduce;
  // Where the partial sums are all-reduced: tp_sum_floats(ctx) floats on this rank's GPU
  // (NCCL symmetric memory, engine/cuda/nccl_comm.h), or null: the model's arena.
  float* sum_buffer = nullptr;
  // Expert parallel (null: tensor parallel): which rank holds each expert. The rank keeps
  // the whole model but the experts of other ranks (attention, norms, router, embedding
  // and lm_head replicated), computes the pairs whose expert it holds, and all-reduces
  // the MoE block's partial output once per layer (engine/cuda/cuda_model_tp.cpp).
  const ExpertPlacement* placement = nullptr;
};

class CudaModel : public Model, public BatchModel {
 public:
  // expert_tier resident: every expert is uploaded and served by ResidentExpertProvider.
  // pinned / disk: the factory's provider, or by default an OffloadProvider over the
  // process's shared ExpertHostStore (tests pass their own factory).
  // tp: this model is one rank of a tensor-parallel model: it uploads its slices of the
  // weights and runs the config of its shard (config() is the rank's), all-reducing the
  // partial sums of o_proj and of the MoE block (resident bf16 experts only).
  explicit CudaModel(const EngineContext& ctx, ExpertProviderFactory provider_factory = {},
                     const TpRank* tp = nullptr);
  ~CudaModel() override;
  // Tokens one forward holds (max_num_batched_tokens, at most the model length).
  static int pool_tokens_for(const EngineContext& ctx);
  // Floats of a tensor-parallel rank's partial-sum buffer (pool tokens x hidden).
  static size_t tp_sum_floats(const EngineContext& ctx);

  const ModelConfig& config() const override { return cfg_; }
  std::string backend() const override { return "cuda"; }
  void forward(const int32_t* tokens, int n, int pos0, float* logits, float* all_logits = nullptr) override;
  int32_t forward_argmax(const int32_t* tokens, int n, int pos0) override;
  // A new generation: step numbers and the routing source restart (the expert cache
  // keeps what it holds: a warm cache across generations, as a server's would be).
  void reset() override {
    step_ = 0;
    if (routing_) routing_->reset();
  }
  void set_routing_stream(uint64_t stream) override {
    if (routing_) routing_->set_stream(stream);
  }
  int max_seq_len() const override { return max_len_; }

  // BatchModel (engine/cuda/cuda_model_batch.cpp).
  void setup_kv_blocks(int block_size, int num_blocks, int max_seqs) override;
  void forward_batch(const std::vector<BatchSeq>& seqs, int32_t* next, float* logits = nullptr) override;
  int max_batch_tokens() const override { return pool_tokens_; }
  // forward_batch steps replayed from a CUDA graph so far (decode steps of a resident model).
  int64_t graph_replays() const;
  // Tensor parallel: GPU time between the start and the end of this rank's all-reduces
  // (CUDA events around each call, so waiting for the slower rank counts), and calls;
  // all forwards, and those of decode steps (one token per sequence) alone.
  int64_t collective_ns() const { return collective_ns_; }
  int64_t collective_calls() const { return collective_calls_; }
  int64_t decode_collective_ns() const { return decode_collective_ns_; }
  int64_t decode_collective_calls() const { return decode_collective_calls_; }
  int64_t decode_forwards() const { return decode_forwards_; }
  // Multi-GPU: the experts this rank holds (all layers; tensor parallel: every expert, a
  // block of each), and over its decode steps (every one, graphed or not) the distinct
  // held experts it ran (summed over layers), the (token, expert) pairs it computed,
  // and the steps: ep_counters() reads the device counters (a copy and
  // a sync on this rank's stream; from the rank's thread).
  struct EpCounters {
    int64_t experts_held = 0, decode_steps = 0, experts_run = 0, pairs = 0;
  };
  EpCounters ep_counters();
  bool expert_parallel() const { return tp_ && tp_->placement; }
  // Whether forward_batch may capture decode steps in CUDA graphs (default on).
  void set_use_graphs(bool on) { use_graphs_ = on; }
  // Whether forward_argmax's single-sequence decode steps may run as CUDA graphs (default:
  // MOEBENCH_STEP_GRAPH, launch_env.h), and how many steps replayed one so far
  // (engine/cuda/cuda_model_graph.cpp).
  void set_decode_graphs(bool on) { decode_graphs_on_ = on; }
  int64_t decode_graph_replays() const { return decode_graph_replays_; }
  // Multi-GPU, a rank > 0's part of rank 0's forward_argmax: the same forward without
  // the lm_head (rank 0 alone gives the token); its single-sequence decode steps run as
  // CUDA graphs where rank 0's do (`graphs`: rank 0's profiler does not trace) and this
  // rank's own conditions allow (engine/cuda/cuda_model_graph.cpp).
  void forward_follow(const int32_t* tokens, int n, int pos0, bool graphs);

  // Introspection (tests, bench, results).
  DeviceArena& arena() { return *arena_; }
  uint64_t arena_alloc_count() const { return arena_->alloc_count(); }
  // MoE gate/up launches issued with the experts scored on the layer's input
  // (MOEBENCH_EXPERT_PREDICT_BYTES; a captured graph's count once): tests.
  int64_t expert_prediction_launches() const;
  // Quantised gate/up launches that took the MoE block's norm + router
  // (MOEBENCH_GATEUP_ROUTER; a captured graph's count once): tests.
  int64_t router_in_gate_up_launches() const;
  // One-token quantised MoE blocks run as one persistent launch, and those with the norm +
  // router inside (MOEBENCH_QUANT_MOE_PERSISTENT; a captured graph's count once): tests.
  int64_t persistent_moe_launches() const;
  int64_t persistent_moe_router_launches() const;
  ArenaStats arena_stats() const { return arena_->stats(); }
  const ExpertProvider& provider() const { return *provider_; }
  ExpertProvider& provider() { return *provider_; }
  // The host store behind the default offload provider (null when resident or a factory's).
  const ExpertHostStore* host_store() const { return store_.get(); }
  // expert_exec cpu | hybrid or cpu_moe_layers on the pinned tier: the host link; else null.
  const HostExperts* host_experts() const { return host_experts_.get(); }
  std::string routing_name() const { return routing_ ? routing_->describe() : "model"; }
  int64_t load_ns() const { return load_ns_; }
  int64_t shared_setup_ns() const override { return store_fill_ns_; }
  std::string experts_describe() const override { return provider_->describe(); }
  uint64_t weight_bytes() const { return weight_bytes_; }
  QuantFormat expert_format() const { return expert_fmt_; }
  const DevicePlan& memory_plan() const { return plan_; }
  cudaStream_t stream() const { return stream_; }
  // Attaches (or, with nullptr, detaches) the profiler the forward reports to. The MoE
  // layer's trace and the provider's counters keep the one given at construction.
  void set_profiler(profiler::Profiler* p) { prof_ = p; }
  // Whether a decode step of this model syncs with the host inside the forward
  // (router ids copied for the provider or the dispatch).
  bool decode_syncs() const { return moe_->syncs(1); }
  // The router's choice of every layer, on the host (same contract as CpuModel's observer;
  // adds a copy and a sync per layer). An empty function turns it off.
  void set_routing_observer(MoeLayer::Observer o) {
    observed_ = static_cast<bool>(o);
    moe_->set_observer(std::move(o));
  }
  // Model's batched-step expert count (cuda_model_tp.cpp): one GPU, resident experts only
  // (a multi-GPU rank counts through ep_counters). Counted steps run eagerly; the graphs
  // captured before stay valid and are replayed again once counting is off.
  bool set_step_expert_count(bool on) override;
  StepExperts step_expert_count() override;

 private:
  struct Layer {
    const __nv_bfloat16 *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *gate;  // (H) (Q,H) (KV,H) (KV,H) (H,Q) (H) (E,H)
    __nv_bfloat16 *k_cache, *v_cache;                                       // (max_len, n_kv, head_dim)
    // Family extras (null where the family has none): q/k norm, q/k/v bias, shared expert.
    const __nv_bfloat16 *q_norm = nullptr, *k_norm = nullptr, *bq = nullptr, *bk = nullptr, *bv = nullptr;
    const __nv_bfloat16 *sw1 = nullptr, *sw3 = nullptr, *sw2 = nullptr, *shared_gate = nullptr;
    // q, k, v, o as linear_weight takes them: bf16 (wq.. above) or in weight_dtype (then
    // wq.. are null).
    LinearWeight lw[4];
  };
  QuantFormat attn_fmt_ = QuantFormat::bf16;  // the attention projections' format (weight_dtype)
  // engine/cuda/cuda_model_quant.cpp: a non-expert tensor's device bytes (a quantised
  // projection's parts, each 256-aligned; else bf16), and layer l's projections quantised
  // on the host (WeightSource::read_quant, the CPU reference's values) and uploaded into
  // L.lw; returns their bytes.
  uint64_t dense_bytes(const TensorSpec& s) const;
  uint64_t upload_quant_attention(const WeightSource& src, int l, Layer& L);
  __nv_bfloat16* attn_scratch_ = nullptr;    // (Q x H) bf16: a quantised projection dequantised for prefill
  // The families' additions to a layer (engine/cuda/cuda_model_family.cpp), on b's
  // buffers of an m-token forward: q/k/v bias and q/k norm on b.q / b.k before RoPE, then
  // RoPE and the store of the new keys/values into the pool (rope_kv_store_paged; per-head
  // q/k norm in the same launch); x += sigmoid(h . shared_gate) * shared_expert(h) after
  // the MoE. Launches only (CUDA-graph safe).
  void family_attention_rope(const Layer& L, ForwardBuffers& b, int m, const int32_t* pos, const int32_t* slot,
                             __nv_bfloat16* k_pool, __nv_bfloat16* v_pool);
  // One decode token, bf16 q/k/v: the input norm, q/k/v, the per-head q/k norm, RoPE and the
  // store of the new key and value at pool row slot[0] in one launch where
  // MOEBENCH_QKV_QK_NORM=1 and the model has per-head q/k norm (family_ops.h); false:
  // nothing launched, the caller runs its launches.
  bool family_qkv_norm_rope(const Layer& L, ForwardBuffers& b, const int32_t* pos, const int32_t* slot,
                            __nv_bfloat16* k_pool, __nv_bfloat16* v_pool);
  // The attention of m decode rows (one per sequence; decode_attention's arguments) with
  // the per-head q/k norm, RoPE and KV store in its launch (decode_attention_qk_norm) where
  // the layer takes it and MOEBENCH_QK_NORM_IN_ATTENTION=1; false: nothing launched, the
  // caller runs family_attention_rope and the attention.
  bool family_decode_attention(const Layer& L, ForwardBuffers& b, int m, const int32_t* tables, int table_width,
                               const int32_t* seq_row, const int32_t* pos, __nv_bfloat16* k_pool,
                               __nv_bfloat16* v_pool, int block_size, float* workspace);
  void family_shared_expert(const Layer& L, ForwardBuffers& b, int m);
  void family_upload(Layer& L, int l, const std::map<std::string, const __nv_bfloat16*>& dev);
  static uint64_t family_workspace_bytes(const ModelConfig& c, int pool_tokens);
  void family_alloc_workspace();
  float* shared_y_ = nullptr;      // (pool, H) the shared expert's output
  float* shared_g_ = nullptr;      // (pool) its gate logits
  void* shared_scratch_ = nullptr;  // swiglu_scratch_bytes(pool, S)
  // forward / forward_argmax: n tokens in chunks of at most chunk_tokens_; logits and next
  // (either may be null) come from the last chunk.
  void run_chunks(const int32_t* tokens, int n, int pos0, float* logits, float* all_logits, int32_t* next);
  void run_chunk(const int32_t* tokens, int m, int pos0, float* logits, float* all_logits, int32_t* next);
  // run_chunk's launches (tokens and positions from host_io_ on), up to the copies of
  // logits / next; no sync (except for all_logits, read in blocks).
  void forward_body(ForwardBuffers& b, int m, int pos0, int64_t step, float* logits, float* all_logits, int32_t* next);
  // Single-sequence decode in CUDA graphs (engine/cuda/cuda_model_graph.cpp): whether this
  // forward may take one (a decode step asking only for the next token, with nothing on
  // the host inside the step), and the step itself: forward_body captured once per
  // attention launch shape (one key split or several), replayed, synced.
  bool decode_graph_ok(int m, const float* logits, const float* all_logits, const int32_t* next) const;
  // next: where the argmax goes (host_io_), or null on a rank > 0 (forward_follow).
  void decode_graph_step(ForwardBuffers& b, int pos0, int64_t step, int32_t* next);
  // x += att @ wo^T and x += moe(h); tensor parallel: the rank's partial sum goes into
  // tp_sum_, is all-reduced, then added (engine/cuda/cuda_model_tp.cpp).
  void o_proj(const Layer& L, ForwardBuffers& b, int m);
  void moe_block(int64_t step, int l, int pos0, ForwardBuffers& b, int m);
  void reduce_partial(ForwardBuffers& b, int m);
  // buf (m, hidden) summed over the ranks in place, between the timing events.
  void all_reduce_timed(float* buf, int m);
  // After ws_->begin: settings tp_reduce=residual keeps the residual stream in tp_sum_.
  void bind_residual(ForwardBuffers& b) const;
  // After the MoE layer is made: its pair filter (expert parallel: the pairs held
  // elsewhere marked; tp_reduce=residual on ranks > 0: the residual cleared).
  void setup_pair_filter();
  // Expert parallel (cuda_model_tp.cpp): whether expert e of layer l is this rank's, the
  // device table of that (n_layers, n_experts) and the MoE layer's pair filter; the config
  // a rank runs (tensor parallel: its shard's; expert parallel: the whole model's).
  bool holds_expert(int l, int e) const;
  void setup_expert_parallel();  // expert parallel, and tensor parallel's expert counters
  void note_decode_step(int m);  // multi-GPU: a decode step of m tokens into the expert counters
  static ModelConfig rank_config(const ModelConfig& full, const TpRank* tp);
  // Decode, once q/k/v are written: o_proj's weights and the router's norm and gate of
  // layer L into L2 on a side stream while RoPE and attention run (l2_prefetch.h); with
  // `scored` (the experts scored on the layer's input) and MOEBENCH_EXPERT_PREDICT_AT=1 or 2,
  // then the first rows' bytes of the expert they rank first.
  void prefetch_attention_out(const Layer& L, bool with_o_proj = true, int layer = -1,
                              const float* scored = nullptr);  // with_o_proj: wo too
  // After a stream sync: the events of this forward into the collective counters (an
  // untimed forward, see tp_timing_, adds nothing).
  void read_collective_times(bool decode);
  // Tensor parallel, batched decode graphs: one replay in kTpTimedEvery runs a graph with
  // the all-reduces' timing events, the others one without them (each event is a graph
  // node, GPU time in every replay). The decode counters (decode_forwards and the
  // collective time and calls of decode) are of the timed steps; eager forwards are
  // always timed.
  static constexpr int64_t kTpTimedEvery = 8;
  void note_arena();  // the arena's use and peak into the profiler (when there is one)
  void check_tokens(const int32_t* tokens, int n, int pos0) const;
  profiler::CpuTrace& trace();
  struct Paged;  // the paged KV pool, batch I/O buffers and decode graphs
  struct PagedDeleter {
    void operator()(Paged* p) const;
  };
  void batch_body(ForwardBuffers& b, int m, int n_seqs, int n_out, float* logits);
  // The constructor's steps, in order.
  void open_host_store(const WeightSource& src);  // offloaded, default provider: the shared host store
  // Sizes, budget, plan_device_memory (throws when it does not fit); own_slots: the
  // default offload provider (a factory's provider sizes its own slots).
  void plan_memory(bool resident, bool own_slots);
  void upload_weights(const WeightSource& src, bool resident);  // dense weights, KV cache, resident experts
  uint64_t upload_quant_experts(const WeightSource& src);       // resident quantised experts; returns their bytes
  void make_provider(const WeightSource& src, bool resident, const ExpertProviderFactory& provider_factory);
  void make_host_experts();  // after the MoE layer: the host link, when the settings ask for it

  ModelConfig cfg_;
  EngineSettings settings_;
  profiler::Profiler* prof_ = nullptr;
  profiler::CpuTrace null_trace_;  // disabled: ranges are NVTX only without a profiler
  int max_len_ = 0;
  int pool_tokens_ = 0;
  int chunk_tokens_ = 0;  // prefill chunk of run_chunks: pool_tokens_, fewer when the expert slots need it
  int64_t step_ = 0;
  int64_t load_ns_ = 0;
  int64_t store_fill_ns_ = 0;  // filling the shared host store, when this model did
  uint64_t weight_bytes_ = 0;
  QuantFormat expert_fmt_ = QuantFormat::bf16;
  DevicePlan plan_;
  WorkspaceDims wd_{};
  MoeDims md_{};
  size_t attn_floats_ = 0;
  uint64_t ws_b_ = 0, table_b_ = 0;
  std::vector<std::vector<ExpertWeights>> resident_experts_;  // until the resident provider takes them
  cudaStream_t stream_ = nullptr;
  cudaStream_t prefetch_stream_ = nullptr;  // prefetch_attention_out's (made on first use)
  cudaEvent_t prefetch_event_ = nullptr;    // q/k/v written, on stream_
  std::unique_ptr<DeviceArena> arena_;
  std::unique_ptr<Blas> blas_;
  const __nv_bfloat16* embed_ = nullptr;    // (V, H)
  const __nv_bfloat16* norm_ = nullptr;     // (H)
  const __nv_bfloat16* lm_head_ = nullptr;  // (V, H); the embedding when tied
  std::vector<Layer> layers_;
  std::unique_ptr<RoutingDriver> routing_;
  std::shared_ptr<const ExpertHostStore> store_;
  std::unique_ptr<ExpertProvider> provider_;
  std::unique_ptr<Workspace> ws_;
  std::unique_ptr<HostExperts> host_experts_;  // expert_exec cpu | hybrid, cpu_moe_layers (pinned tier)
  std::unique_ptr<MoeLayer> moe_;
  int32_t* zero_i32_ = nullptr;  // (1) device 0: block table and seq_row of the contiguous cache as one paged block
  int32_t* host_io_ = nullptr;  // pinned: (2, pool_tokens) tokens and positions, then 1 argmax
  std::unique_ptr<Paged, PagedDeleter> paged_;
  bool observed_ = false;
  bool use_graphs_ = true;
  bool decode_graphs_on_ = false;                  // set from the environment at construction
  // By 2 x decode_attention_one_split (several splits, one) + timed (multi-GPU: with the
  // all-reduces' timing events, see kTpTimedEvery; one GPU: always 1).
  cudaGraphExec_t decode_graph_[4] = {};
  size_t decode_graph_events_[4] = {};             // multi-GPU: the timing events each graph records
  bool decode_seen_[2] = {};                       // run once eagerly (tables uploaded) before the capture
  bool follow_step_ = false;                       // inside forward_follow
  int64_t decode_graph_replays_ = 0;
  // Tensor parallel (absent: one GPU).
  std::optional<TpRank> tp_;
  ModelConfig full_cfg_;          // the unsharded model's config
  float* tp_sum_ = nullptr;       // (pool_tokens, hidden) a partial output being all-reduced
  std::vector<cudaEvent_t> tp_events_;  // (2 per all-reduce of a forward) start, end
  size_t tp_events_used_ = 0;
  bool tp_residual_ = false;  // settings tp_reduce=residual (cuda_model_tp.cpp)
  bool tp_timing_ = true;  // reduce_partial records the timing events (false: a graph captured without them)
  int64_t collective_ns_ = 0, collective_calls_ = 0;
  int64_t decode_collective_ns_ = 0, decode_collective_calls_ = 0, decode_forwards_ = 0;
  // Expert parallel: (n_layers, n_experts) 1 where this rank holds the expert; counters
  // (experts run, pairs) of decode steps; whether the forward being built counts.
  uint8_t* ep_local_ = nullptr;
  int64_t* ep_counts_ = nullptr;
  bool ep_count_ = false;
  int64_t ep_decode_steps_ = 0;
  int64_t tp_token_experts_ = 0;  // tensor parallel: the experts (and pairs) of its one-token decode steps
  // set_step_expert_count: whether it is on, its device counters (count_step_experts'
  // two, cudaMalloc'd at the first use, outside the arena) and the steps counted.
  bool step_count_on_ = false;
  int64_t* step_count_d_ = nullptr;
  int64_t step_count_steps_ = 0;
};

}  // namespace moebench::cuda
