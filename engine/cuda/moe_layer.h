// moe_layer.h: the sparse-MoE block of one layer on CUDA, with the three knobs of
// EngineSettings (dispatch, combine; buffers is the Workspace's):
//   router on the device -> ids/weights (n, k) (a non-model routing source: its choices
//   staged for the whole step by begin_step, weighed on the device); the ids go to the host only when the
//   provider needs them or the dispatch does (grouped: host grouping; serial: the mask's
//   count per expert; fused prefill: the expert offsets) -> provider->acquire() -> dispatch:
//     fused    decode (n <= 8): moe_decode_fused, both launches, no host round trip;
//              prefill: device sort by expert + one GEMM per active expert block;
//     grouped  ids to the host, grouped once there, one GEMM per active expert block;
//     serial   every expert in turn: mask-select its pairs (count to the host), gather, run;
//   -> combine: loop (one launch per (token, slot)), index_add (one launch), fused (inside
//      moe_decode_fused, else the single combine launch adds straight into the residual).
// Every variant computes out[t] = sum_j w[t,j] * expert_{ids[t,j]}(x_t) in slot order, as
// CpuModel::moe does, and adds it to the residual x.
// Quantised experts (MoeDims::format fp8|int8|int4, each expert in MoeDims::layout):
//   decode (n <= quant_decode_tokens() tokens, at least 8, and n * k <= 64: up to 32
//     tokens at top-2, so a decode step of 16 sequences too), whatever the dispatch: g = w1.x and u = w3.x with
//     quant_moe_gemv (it groups the pairs by expert itself; one launch over both where the
//     layout puts w3 right after w1, engine/cuda/gate_up.h), h = silu(g) * u (bf16), then
//     y = w2.h (quant_moe_gemv, one input per pair), then the combine knob as above;
//   a short prefill (up to quant_prefill_slices(format) tokens, quant_linear.h: by default
//     128 for int4, 64 for int8 and fp8, where that measured faster): the decode
//     launches above on slices of as many tokens as one pass takes, in order;
//   a longer prefill: every needed expert is dequantised to a bf16 scratch expert
//     (quant_dequant.h: the values quant.cpp defines, rounded to bf16), then the bf16
//     grouped / serial path (fused prefill is the grouped path with a device sort). Host C++.
#pragma once
#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <functional>
#include <string>
#include <vector>

#include "engine/cuda/workspace.h"
#include "engine/device_plan.h"
#include "engine/expert_provider.h"

namespace moebench {
class RoutingDriver;
}
namespace moebench::profiler {
class CpuTrace;
}

namespace moebench::cuda {

struct GateUpRouter;  // quant_gemv.h

class DeviceArena;
class HostExperts;

enum class Dispatch { serial, grouped, fused };
enum class Combine { loop, index_add, fused };
Dispatch parse_dispatch(const std::string& s);
Combine parse_combine(const std::string& s);

struct MoeDims {
  int hidden = 0, inter = 0, n_experts = 0, top_k = 0, n_layers = 0;
  QuantFormat format = QuantFormat::bf16;  // the experts' format
  ExpertLayout layout{};                   // where each matrix's parts lie in an expert (quantised formats)
  bool norm_topk_prob = true;              // top-k weights renormalised (Mixtral) or the softmax's
  bool int4_paired = false;                // int4 codes on the device in the paired word order (quant_dequant.h)
};

class MoeLayer {
 public:
  // pool_tokens: largest forward the scratch is sized for (the host part grows if needed;
  // the device part — the next layer's router for prefetch predictions — is fixed).
  // routing: a non-model routing source (null: the gate routes); not owned.
  MoeLayer(const MoeDims& d, Dispatch dispatch, Combine combine, ExpertProvider& provider, DeviceArena& arena,
           cublasHandle_t blas, cudaStream_t stream, profiler::CpuTrace& trace, int pool_tokens,
           RoutingDriver* routing = nullptr);
  // Device bytes the constructor takes from the arena.
  static uint64_t device_bytes(const MoeDims& d, int pool_tokens);
  ~MoeLayer();
  MoeLayer(const MoeLayer&) = delete;
  MoeLayer& operator=(const MoeLayer&) = delete;

  // Router + experts + combine for m tokens of layer `layer`: b.h = rmsnorm(x_in) * norm_w
  // (x_in (m, hidden) fp32 not yet normed), in one launch with the router (norm_router.h)
  // where that kernel takes the shape, else rmsnorm() and then the router; adds the MoE
  // output to x (m, hidden) fp32. gate (n_experts, hidden) bf16. pos0: position of the
  // first token (for the routing observer). next_gate: layer+1's gate (null for the last
  // layer): when the provider wants predictions it is applied to b.h and the predicted
  // experts are prefetched once this layer's experts are launched.
  void run_norm(int step, int layer, int pos0, const float* x_in, const __nv_bfloat16* norm_w, float eps,
                const __nv_bfloat16* gate, const __nv_bfloat16* next_gate, ForwardBuffers& b, float* x, int m);
  // Called after the router of every layer with its choice (ids, weights (m, k), host
  // memory). Costs a device->host copy and a sync per layer: for tests and routing traces.
  using Observer = std::function<void(int layer, int pos0, int m, const int32_t* ids, const float* weights)>;
  // Decode, one token: x += wo att (the attention's output projection, att q_dim bf16, wo
  // bf16 hidden x q_dim) and then run_norm's work on x, in one launch
  // (moe_small_block_o_proj, MOEBENCH_SMALL_MOE_BLOCK=3); false, nothing done, where that
  // launch is not taken (the caller runs o_proj and run_norm).
  bool run_norm_o_proj(int step, int layer, const __nv_bfloat16* att, const __nv_bfloat16* wo, int q_dim, float* x,
                       const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate, ForwardBuffers& b);
  // Decode, one token: leaves x += wo att (att q_dim bf16, wo bf16 hidden x q_dim; x the
  // x_in of the run_norm that follows) to that run_norm's router launch, o_proj and the norm
  // + router in one (o_proj_router.h, MOEBENCH_OPROJ_ROUTER=1); false, nothing kept, where
  // that launch would not take it (the caller runs o_proj).
  bool defer_o_proj(const __nv_bfloat16* att, const __nv_bfloat16* wo, int q_dim, float* x, const __nv_bfloat16* gate,
                    const ForwardBuffers& b);
  void set_observer(Observer o) { observer_ = std::move(o); }
  // Whether this forward would copy ids to the host (a sync): tests and CUDA graphs.
  bool syncs(int m) const;
  // Before the launches of a forward of m tokens at `step`: a non-model routing source
  // whose choice nobody needs mid-step (no provider ids, predictions or observer) is asked
  // for every layer now, in layer order as run() would, and the choices go to the device
  // in one copy; each layer's router then weighs its staged choice on the device
  // (router_reweight.h) instead of a copy of the gate logits to the host and back (a sync
  // per layer). Forwards without this call route layer by layer.
  void begin_step(int step, int m);
  // Whether begin_step stages the routing source's choices (tests).
  bool stages_routing() const;
  // Largest forward (tokens) that takes the fused decode kernels (settings
  // fused_decode_max_tokens); clamped to what the kernels take.
  void set_fused_decode_max_tokens(int n) { fused_max_tokens_ = n; }
  // The host link (expert_exec cpu | hybrid, cpu_moe_layers): a forward where `h` plans
  // host experts runs run_with_host (moe_layer_host.cpp) instead of the device path.
  // Not owned; null = device only. The provider must be h's OffloadProvider.
  void set_host_experts(HostExperts* h);
  // Multi-GPU models (engine/cuda/parallel_model.h): called after the router of every
  // layer with the device ids (pairs), on the layer's stream, before any expert runs.
  // Expert parallelism marks there the pairs whose expert another GPU holds (id -1,
  // engine/cuda/ep_ops.h), which are then neither computed nor combined here (needs the
  // fused dispatch and combine, resident experts); a rank that all-reduces its residual
  // clears there the residual the combine adds into. With a filter the sorted path
  // combines with moe_combine_held (the same bits as the combine knob's, marks skipped).
  using PairFilter = std::function<void(int layer, int32_t* ids, int pairs, cudaStream_t stream)>;
  void set_pair_filter(PairFilter f) { filter_ = std::move(f); }
  // Called where the pair filter is (after the router of every layer a forward of two or
  // more tokens runs through run(), on the layer's stream), with the device ids: for
  // counters that only read them (CudaModel::set_step_expert_count). Unlike the filter it
  // changes no choice of path or launch. An empty function turns it off.
  void set_step_counter(PairFilter f) { counter_ = std::move(f); }
  // Decode, one token: whether this layer's experts would use scores of the experts taken
  // on the layer's input (ops.cuh ExpertPredict, MOEBENCH_EXPERT_PREDICT_BYTES): the gate
  // routes, the bf16 fused gate/up launch runs (or, quantised, the fused gate/up of one
  // matrix, the side stream asking: MOEBENCH_EXPERT_PREDICT_QUANT_BYTES), at most
  // kExpertPredictMax experts.
  bool takes_prediction(int m) const;
  // The scores for the next run_norm of one token (device, n_experts; null: none). The
  // caller has them written before that launch; the next run_norm uses and forgets them.
  void set_prediction(const float* logits) { pred_logits_ = logits; }
  // Layers whose experts ran with such scores given (captured graphs count once): tests.
  int64_t predicted_launches() const { return predicted_launches_; }
  // Quantised gate/up launches issued with the norm + router inside (captured graphs count
  // once): tests.
  int64_t router_in_gate_up_launches() const { return router_in_gate_up_launches_; }
  // One-token MoE blocks run as one persistent launch (MOEBENCH_QUANT_MOE_PERSISTENT), and
  // those of them with the norm + router inside (captured graphs count once): tests.
  int64_t persistent_launches() const { return persistent_launches_; }
  int64_t persistent_router_launches() const { return persistent_router_launches_; }
  // Where the side stream asks L2 for the guessed expert's gate/up rows at `layer`
  // (l2_prefetch_predicted's arguments past the scores): the layer's device table where an
  // earlier forward has written it and the provider hands out the same experts whatever
  // the ids (resident experts: needs no ids); bf16: every gate/up block's w1 and w3 ranges,
  // MOEBENCH_EXPERT_PREDICT_BYTES of each; quantised (w1 and w3 one matrix): the rows the
  // gate/up launch's resident warps take first, MOEBENCH_EXPERT_PREDICT_QUANT_BYTES of each
  // (whole rows, several a request, where that is at least a row). table null: none.
  struct PredictTarget {
    const void* const* table = nullptr;
    size_t w3_offset = 0;  // 0: the table holds w3's pointers after w1's
    int rows = 0, range_rows = 1;
    size_t row_bytes = 0;
    unsigned bytes = 0;
  };
  PredictTarget prediction_target(int layer) const;

 private:
  void ids_to_host(const ForwardBuffers& b, int pairs);
  // Router (+ routing source, + the next layer's router for predictions): b.ids, b.wts on
  // the device; on the host too when the provider, the dispatch or the source needs them.
  // Returns whether the predictions are in pred_h_.
  // The norm run_norm leaves to the router's launch (b.h not written yet).
  struct FusedNorm {
    const float* x;
    const __nv_bfloat16* w;
    float eps;
  };
  // The o_proj defer_o_proj kept for the next router launch (att null: none).
  struct DeferredOProj {
    const __nv_bfloat16* att = nullptr;
    const __nv_bfloat16* wo = nullptr;
    int q_dim = 0;
    float* x = nullptr;
  };
  DeferredOProj deferred_;
  // The norm + router route() left to the quantised gate/up launch (gate null: none;
  // MOEBENCH_GATEUP_ROUTER=1, quant_gemv.h quant_moe_gemv_gate_up_router): taken by the
  // next quant_decode.
  struct DeferredRouter {
    const float* x = nullptr;
    const __nv_bfloat16* w = nullptr;
    float eps = 0;
    const __nv_bfloat16* gate = nullptr;
  };
  DeferredRouter router_in_gate_up_;
  // Whether this one-token MoE block's norm + router may run inside its quantised gate/up
  // launch: nothing between the router and the experts reads h or the ids (no routing
  // source, observer, filter, host experts or consumer of the ids on the host), the fused
  // quantised kernels with the fused combine, and a gate/up shape the launch takes (the
  // persistent MoE launch with MOEBENCH_QUANT_MOE_PERSISTENT=2 or 3, or the gate/up with
  // MOEBENCH_GATEUP_ROUTER=1).
  bool gate_up_takes_router(int m) const;
  // Whether this layer's one-token quantised MoE block can run as one persistent launch
  // (quant_gemv.h quant_moe_block_persistent; router: with the norm + router inside).
  bool persistent_takes(bool router) const;
  // run_norm after the norm: norm null when b.h holds the normed input, else the norm to
  // fuse into the router's launch.
  void run(int step, int layer, int pos0, const __nv_bfloat16* gate, const __nv_bfloat16* next_gate,
           ForwardBuffers& b, float* x, int m, const FusedNorm* norm);
  bool route(int step, int layer, int pos0, const __nv_bfloat16* gate, const __nv_bfloat16* next_gate,
             ForwardBuffers& b, int m, bool predict, const FusedNorm* norm);
  void experts(int layer, ForwardBuffers& b, float* x, int m);
  void count_prediction(const float* pred, const int32_t* ids);
  // Device pointer table of `layer`: bf16 (3, n_experts) matrices; quantised (9, n_experts),
  // row 3 * matrix + part (values, scales, zero points; null where the part is absent).
  const void* const* tables(int layer);
  bool quantised() const { return d_.format != QuantFormat::bf16; }
  // The quantised gate/up matrix's row bytes where the guess's requests can address its
  // rows (w1 and w3 one matrix, rows a multiple of 16 bytes); else 0.
  size_t predict_row_bytes() const;
  // Tokens one pass of the quantised decode launches takes: quant_decode_tokens() (at
  // least 8) within their 64 pairs.
  int quant_pass_tokens() const;
  bool quant_decode_ok(int m) const;
  // Tokens a slice when a quantised forward of m tokens runs the decode launches slice by
  // slice (quant_prefill_slices(format)); 0 when it does not (bf16, decode, longer forwards,
  // expert parallelism's pair filter).
  int prefill_slice(int m) const;
  // g, u, h through quant_moe_gemv for `pairs` (expert, token) pairs of x ((pairs / k,
  // hidden), ids (pairs)); y (pairs, hidden) unweighted into b.moe_y. residual non-null
  // (and the fused kernels on, quant_gemv.h): y combined into it with b.wts instead
  // (the fused combine), and true returned.
  bool quant_decode(int layer, ForwardBuffers& b, const __nv_bfloat16* x, const int32_t* ids, int pairs, int k,
                    float* residual = nullptr);
  // The same on a given table (the layout of tables(), n_experts experts of `inter` rows;
  // adjacent: w3's parts directly follow w1's, gate_up.h; paired: int4 codes in the paired
  // word order) with y into `out`: quant_decode runs it on the layer's table, the split
  // expert's device part on its one-expert scratch.
  bool quant_decode_table(const void* const* table, int n_experts, int inter, bool adjacent, bool paired,
                          ForwardBuffers& b, const __nv_bfloat16* x, const int32_t* ids, int pairs, int k,
                          float* residual, float* out, const GateUpRouter* router = nullptr);
  // The forward with host experts (see set_host_experts); false when the plan has none
  // (nothing done: the device path runs).
  void free_host_buffers();
  // The predicted experts of layer + 1 to the provider (pred_h_ or the routing source's).
  void prefetch_next(int step, int layer, int m, bool gate_predicted);
  bool run_with_host(int step, int layer, ForwardBuffers& b, float* x, int m, bool predict, bool gate_predicted);
  // The expert's w1, w3, w2 as bf16: the acquired pointers, or (quantised) dequantised
  // into the scratch expert (valid until the next call: stream-ordered).
  void bf16_expert(int layer, int e, const __nv_bfloat16* w[3]);
  void grouped_experts(int layer, ForwardBuffers& b, int m);
  void serial_experts(int layer, ForwardBuffers& b, int m);
  void combine(ForwardBuffers& b, float* x, int m, bool sorted);
  void ensure_host(int pairs);
  bool fused_decode_ok(int m) const;
  // The one-launch MoE block (moe_small_block.h) for this forward; the launch (att null:
  // without the output projection).
  bool small_block_ok(int m, const __nv_bfloat16* gate, const ForwardBuffers& b) const;
  void small_block(int step, int layer, const __nv_bfloat16* att, const __nv_bfloat16* wo, int q_dim, const float* x_in,
                   const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate, ForwardBuffers& b, float* x);

  MoeDims d_;
  Dispatch dispatch_;
  Combine combine_;
  ExpertProvider& provider_;
  DeviceArena& arena_;
  cublasHandle_t blas_;
  cudaStream_t stream_;
  profiler::CpuTrace& trace_;
  std::vector<ExpertWeights> got_;  // (n_experts) this layer's acquired experts
  // Pinned host scratch.
  int host_pairs_ = 0;
  int32_t* ids_h_ = nullptr;      // (pairs)
  float* wts_h_ = nullptr;        // (pairs) for the observer
  int32_t* sort_h_ = nullptr;     // (2, pairs) perm then inv, uploaded by grouped
  int32_t* offsets_h_ = nullptr;  // (n_experts + 1)
  const void** table_h_ = nullptr;  // (n_layers, 3, n_experts) staging of the device tables
  // Device pointer tables (n_layers, 3, n_experts) and their host mirror.
  const void** table_d_ = nullptr;
  std::vector<const void*> mirror_;
  int table_rows_ = 3;                 // 3 (bf16) or 9 (quantised) per layer
  __nv_bfloat16* deq_ = nullptr;       // quantised: one expert's w1 | w3 | w2 as bf16 (prefill)
  std::vector<bool> table_valid_;
  Observer observer_;
  RoutingDriver* routing_ = nullptr;
  const float* pred_logits_ = nullptr;  // set_prediction's, for one run_norm
  int64_t predicted_launches_ = 0;
  int64_t router_in_gate_up_launches_ = 0;
  int64_t persistent_launches_ = 0, persistent_router_launches_ = 0;
  unsigned long long* persist_counter_ = nullptr;  // quantised: the persistent launch's barrier counter
  int64_t pred_seen_ = 0, pred_slot_right_ = 0, pred_expert_right_ = 0;  // MOEBENCH_EXPERT_PREDICT_STATS=1
  int pool_tokens_ = 0;
  int fused_max_tokens_ = 2;
  float* logits_h_ = nullptr;        // (pairs / top_k, n_experts) router logits, routing source only
  int32_t* pred_h_ = nullptr;        // (pairs) predicted ids of the next layer
  std::vector<int32_t> pred_;        // predictions handed to the provider
  float* pred_logits_d_ = nullptr;   // (pool, n_experts)
  int32_t* pred_ids_d_ = nullptr;    // (pool, top_k)
  HostExperts* host_ = nullptr;
  PairFilter filter_;                // expert parallelism: see set_pair_filter
  PairFilter counter_;               // see set_step_counter
  uint16_t* host_x_ = nullptr;       // pinned (pool, hidden) bf16: the activations for the host
  float* host_y_ = nullptr;          // pinned (pairs, hidden): the host experts' outputs
  int32_t* host_idx_ = nullptr;      // pinned (3, pairs): perm, inv, device ids
  int host_rows_ = 0;                // pairs the pinned buffers hold
  cudaEvent_t host_x_ready_ = nullptr, host_y_sent_ = nullptr;
  float* pred_wts_d_ = nullptr;      // (pool, top_k)
  int32_t* staged_h_ = nullptr;      // (n_layers, pool, top_k) pinned: the routing source's choices of the step
  int32_t* staged_d_ = nullptr;      // (n_layers, pool, top_k) their device copy
  int staged_step_ = -1, staged_m_ = 0;  // what staged_d_ holds (-1: nothing)
};

}  // namespace moebench::cuda
