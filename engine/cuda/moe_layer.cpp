// moe_layer.cpp: see moe_layer.h.
#include "engine/cuda/moe_layer.h"

#include <algorithm>
#include <cstring>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/ep_ops.h"
#include "engine/cuda/gate_up.h"
#include "engine/cuda/host_experts.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/moe_small_block.h"
#include "engine/cuda/moe_small_experts.h"
#include "engine/cuda/norm_router.h"
#include "engine/cuda/o_proj_router.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/quant_dequant.h"
#include "engine/cuda/quant_gemv.h"
#include "engine/cuda/quant_linear.h"
#include "engine/cuda/router_reweight.h"
#include "common/error.h"
#include "common/log.h"
#include "engine/ops/ops.h"
#include "profiler/cpu_trace.h"
#include "variants/routing_driver.h"

namespace moebench::cuda {

using profiler::RangeKind;
using profiler::ScopedRange;

Dispatch parse_dispatch(const std::string& s) {
  if (s == "serial") return Dispatch::serial;
  if (s == "grouped") return Dispatch::grouped;
  if (s == "fused") return Dispatch::fused;
  fail("dispatch '{}': expected serial|grouped|fused", s);
}
Combine parse_combine(const std::string& s) {
  if (s == "loop") return Combine::loop;
  if (s == "index_add") return Combine::index_add;
  if (s == "fused") return Combine::fused;
  fail("combine '{}': expected loop|index_add|fused", s);
}

namespace {
constexpr int kFusedMaxPairs = 64;  // moe_decode_fused's limit on n * k
}  // namespace

bool MoeLayer::fused_decode_ok(int m) const {
  return m <= std::min(fused_max_tokens_, kGemvMaxRows) && m * d_.top_k <= kFusedMaxPairs;
}

bool MoeLayer::gate_up_takes_router(int m) const {
  const bool persistent = quant_moe_persistent() >= 2;
  if (m != 1 || !(gate_up_router_on() || persistent) || !quantised() || !quant_decode_ok(m) ||
      combine_ != Combine::fused || dispatch_ == Dispatch::grouped || !quant_decode_fused_from_env() ||
      !gate_up_adjacent(d_.layout) || routing_ || observer_ || filter_ || host_ || provider_.needs_ids() ||
      provider_.wants_prediction())
    return false;
  if (persistent && persistent_takes(true)) return true;
  QuantExperts q;
  q.format = d_.format;
  q.int4_paired = d_.int4_paired;
  q.n_experts = d_.n_experts;
  return gate_up_router_on() && quant_moe_gemv_gate_up_router_supported(q, d_.top_k, d_.inter, d_.hidden, d_.n_experts);
}

bool MoeLayer::persistent_takes(bool router) const {
  if (!persist_counter_ || !gate_up_adjacent(d_.layout)) return false;
  QuantExperts q;
  q.format = d_.format;
  q.int4_paired = d_.int4_paired;
  // Only whether the experts have zero points matters here: any non-null table says they do.
  static const uint8_t* const kZeroPoints = nullptr;
  q.zero = d_.layout.n_parts > 2 ? &kZeroPoints : nullptr;
  q.n_experts = d_.n_experts;
  return quant_moe_block_persistent_supported(q, q, d_.top_k, d_.inter, d_.hidden, d_.n_experts, router);
}

int MoeLayer::quant_pass_tokens() const {
  return std::max(1, std::min(std::max(kGemvMaxRows, quant_decode_tokens()), kFusedMaxPairs / d_.top_k));
}

bool MoeLayer::quant_decode_ok(int m) const { return m <= quant_pass_tokens(); }

int MoeLayer::prefill_slice(int m) const {
  if (!quantised() || quant_decode_ok(m) || m > quant_prefill_slices(d_.format) || filter_) return 0;
  return quant_pass_tokens();
}

size_t MoeLayer::predict_row_bytes() const {
  const ExpertLayout& L = d_.layout;
  const int I = d_.inter;
  if (!quantised() || !gate_up_adjacent(L) || I <= 0 || L.bytes[0][0] % I != 0) return 0;
  const size_t row_bytes = L.bytes[0][0] / I;
  return row_bytes % 16 == 0 ? row_bytes : 0;
}

MoeLayer::PredictTarget MoeLayer::prediction_target(int layer) const {
  if (provider_.needs_ids() || layer < 0 || layer >= static_cast<int>(table_valid_.size()) || !table_valid_[layer])
    return {};
  const int E = d_.n_experts, I = d_.inter;
  const void* const* base = table_d_ + static_cast<size_t>(layer) * table_rows_ * E;
  if (!quantised())
    return {base, 0, I, moe_gate_up_block_rows(I), static_cast<size_t>(d_.hidden) * sizeof(bf16), expert_predict_bytes()};
  const size_t row_bytes = predict_row_bytes();
  if (row_bytes == 0) return {};
  const unsigned bytes = expert_predict_quant_bytes();
  // The default exact gate/up launches (quant_gemv.cu exact_default) keep 32 warps an SM of
  // one row pair each, or 16 of two: 32 rows of w1 and of w3 an SM come first.
  const int first = std::min(I, 32 * device_info_cached().sm_count);
  const int whole = static_cast<int>(std::max<size_t>(1, 16384 / row_bytes));  // rows a request, whole rows
  const bool rows = bytes >= row_bytes;
  // Row 0 of the table: w1's codes, w3's following them.
  return {base, d_.layout.offset[1][0] - d_.layout.offset[0][0], first, rows ? whole : 1, row_bytes,
          rows ? static_cast<unsigned>(whole * row_bytes) : bytes};
}

bool MoeLayer::takes_prediction(int m) const {
  if (m != 1 || routing_ || host_ || filter_ || d_.n_experts > kExpertPredictMax) return false;
  if (quantised())  // the side stream only, over the resident experts' table
    return expert_predict_quant_bytes() > 0 && expert_predict_at_from_env() != 0 && !provider_.needs_ids() &&
           quant_decode_ok(m) && combine_ == Combine::fused && quant_decode_fused_from_env() && predict_row_bytes() > 0;
  // The side stream's requests (MOEBENCH_EXPERT_PREDICT_AT=1) need the resident experts' table.
  return expert_predict_bytes() > 0 && (expert_predict_at_from_env() != 1 || !provider_.needs_ids()) &&
         dispatch_ == Dispatch::fused && combine_ == Combine::fused && fused_decode_ok(m) &&
         !(small_experts_enabled() && small_experts_supported(m, d_.top_k, d_.n_experts, d_.hidden, d_.inter));
}

uint64_t MoeLayer::device_bytes(const MoeDims& d, int pool_tokens) {
  auto r = [](uint64_t b) { return (b + 255) / 256 * 256; };
  const uint64_t pool = static_cast<uint64_t>(std::max(1, pool_tokens));
  const bool quant = d.format != QuantFormat::bf16;
  const uint64_t rows = quant ? 9 : 3;
  const uint64_t deq = quant ? r(3ull * d.hidden * d.inter * sizeof(bf16)) : 0;
  const uint64_t staged = r(static_cast<uint64_t>(d.n_layers) * pool * d.top_k * 4);
  return r(static_cast<uint64_t>(d.n_layers) * rows * d.n_experts * sizeof(void*)) + r(pool * d.n_experts * 4) +
         2 * r(pool * d.top_k * 4) + deq + staged;
}

MoeLayer::MoeLayer(const MoeDims& d, Dispatch dispatch, Combine combine, ExpertProvider& provider, DeviceArena& arena,
                   cublasHandle_t blas, cudaStream_t stream, profiler::CpuTrace& trace, int pool_tokens,
                   RoutingDriver* routing)
    : d_(d), dispatch_(dispatch), combine_(combine), provider_(provider), arena_(arena), blas_(blas), stream_(stream),
      trace_(trace), got_(d.n_experts), routing_(routing), pool_tokens_(std::max(1, pool_tokens)) {
  table_rows_ = quantised() ? 9 : 3;
  const uint64_t table = static_cast<uint64_t>(d.n_layers) * table_rows_ * d.n_experts;
  table_d_ = static_cast<const void**>(arena_.alloc(table * sizeof(void*), "moe expert pointer tables"));
  if (quantised()) {
    if (d.layout.format != d.format)
      fail("moe: expert layout is {}, the experts are {}", quant_format_name(d.layout.format),
           quant_format_name(d.format));
    deq_ = arena_.alloc_n<bf16>(3ull * d.hidden * d.inter, "moe dequantised expert (prefill)");
    persist_counter_ = arena_.alloc_n<unsigned long long>(1, "moe persistent launch's barrier counter");
    CUDA_CHECK(cudaMemsetAsync(persist_counter_, 0, sizeof(unsigned long long), stream_));
  }
  const uint64_t pool = static_cast<uint64_t>(pool_tokens_);
  pred_logits_d_ = arena_.alloc_n<float>(pool * d.n_experts, "moe next-layer router logits");
  pred_ids_d_ = arena_.alloc_n<int32_t>(pool * d.top_k, "moe next-layer router ids");
  pred_wts_d_ = arena_.alloc_n<float>(pool * d.top_k, "moe next-layer router weights");
  const uint64_t staged = static_cast<uint64_t>(d.n_layers) * pool * d.top_k;
  staged_d_ = arena_.alloc_n<int32_t>(staged, "moe staged routing choices");
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&staged_h_), staged * sizeof(int32_t), cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&table_h_), table * sizeof(void*), cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&offsets_h_), (d.n_experts + 1) * sizeof(int32_t),
                           cudaHostAllocDefault));
  mirror_.assign(table, nullptr);
  table_valid_.assign(d.n_layers, false);
  ensure_host(std::max(1, pool_tokens) * d.top_k);
}

MoeLayer::~MoeLayer() {
  cudaStreamSynchronize(stream_);
  if (pred_seen_ > 0)
    log::warn("expert prediction (MOEBENCH_EXPERT_PREDICT_STATS): {} layer steps, slots guessed right {:.1f}%, experts guessed right {:.1f}%",
             pred_seen_, 100.0 * static_cast<double>(pred_slot_right_) / static_cast<double>(pred_seen_ * d_.top_k),
             100.0 * static_cast<double>(pred_expert_right_) / static_cast<double>(pred_seen_ * d_.top_k));
  if (ids_h_) cudaFreeHost(ids_h_);
  if (sort_h_) cudaFreeHost(sort_h_);
  if (wts_h_) cudaFreeHost(wts_h_);
  if (offsets_h_) cudaFreeHost(offsets_h_);
  if (table_h_) cudaFreeHost(table_h_);
  if (logits_h_) cudaFreeHost(logits_h_);
  if (pred_h_) cudaFreeHost(pred_h_);
  if (staged_h_) cudaFreeHost(staged_h_);
  if (staged_d_) arena_.free(staged_d_);
  if (table_d_) arena_.free(table_d_);
  if (deq_) arena_.free(deq_);
  if (persist_counter_) arena_.free(persist_counter_);
  if (pred_logits_d_) arena_.free(pred_logits_d_);
  if (pred_ids_d_) arena_.free(pred_ids_d_);
  if (pred_wts_d_) arena_.free(pred_wts_d_);
  free_host_buffers();
}

void MoeLayer::ensure_host(int pairs) {
  if (pairs <= host_pairs_) return;
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (ids_h_) CUDA_CHECK(cudaFreeHost(ids_h_));
  if (sort_h_) CUDA_CHECK(cudaFreeHost(sort_h_));
  if (wts_h_) CUDA_CHECK(cudaFreeHost(wts_h_));
  if (logits_h_) CUDA_CHECK(cudaFreeHost(logits_h_));
  if (pred_h_) CUDA_CHECK(cudaFreeHost(pred_h_));
  const size_t rows = static_cast<size_t>(pairs + d_.top_k - 1) / d_.top_k;
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&logits_h_), rows * d_.n_experts * sizeof(float), cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&pred_h_), pairs * sizeof(int32_t), cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&ids_h_), pairs * sizeof(int32_t), cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&wts_h_), pairs * sizeof(float), cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&sort_h_), 2 * pairs * sizeof(int32_t), cudaHostAllocDefault));
  host_pairs_ = pairs;
}

bool MoeLayer::stages_routing() const {
  return routing_ && !provider_.needs_ids() && !provider_.wants_prediction() && !observer_;
}

void MoeLayer::begin_step(int step, int m) {
  staged_step_ = -1;
  if (!stages_routing() || m > pool_tokens_) return;
  const int K = d_.top_k, E = d_.n_experts, pairs = m * K;
  for (int l = 0; l < d_.n_layers; ++l) {
    int32_t* ids = staged_h_ + static_cast<size_t>(l) * pairs;
    routing_->route(step, l, m, std::span<int32_t>(ids, pairs));
    for (int p = 0; p < pairs; ++p)
      if (ids[p] < 0 || ids[p] >= E)
        fail("routing source {} gave expert id {} at layer {} (expected 0..{})", routing_->describe(), ids[p], l, E - 1);
  }
  // The previous forward ended with a sync, so the pinned staging is free to overwrite.
  CUDA_CHECK(cudaMemcpyAsync(staged_d_, staged_h_, static_cast<size_t>(d_.n_layers) * pairs * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  staged_step_ = step;
  staged_m_ = m;
}

bool MoeLayer::syncs(int m) const {
  if (provider_.needs_ids() || observer_ || (routing_ && !stages_routing())) return true;
  if (quantised()) return dispatch_ == Dispatch::grouped || !(quant_decode_ok(m) || prefill_slice(m));  // grouped's router copies ids
  return !(dispatch_ == Dispatch::fused && fused_decode_ok(m));
}

void MoeLayer::ids_to_host(const ForwardBuffers& b, int pairs) {
  CUDA_CHECK(cudaMemcpyAsync(ids_h_, b.ids, pairs * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

const void* const* MoeLayer::tables(int layer) {
  const int E = d_.n_experts, R = table_rows_;
  const size_t base = static_cast<size_t>(layer) * R * E;
  // Row (3 * matrix + part) of expert e: the part's address in the acquired expert.
  auto entry = [&](int row, int e) -> const void* {
    const int mat = R == 3 ? row : row / 3, part = R == 3 ? 0 : row % 3;
    const void* w = mat == 0 ? got_[e].w1 : mat == 1 ? got_[e].w3 : got_[e].w2;
    if (!w || part >= d_.layout.n_parts) return nullptr;
    return static_cast<const uint8_t*>(w) + (d_.layout.offset[mat][part] - d_.layout.offset[mat][0]);
  };
  bool same = table_valid_[layer];
  for (int row = 0; row < R && same; ++row)
    for (int e = 0; e < E && same; ++e) same = mirror_[base + static_cast<size_t>(row) * E + e] == entry(row, e);
  if (!same) {  // upload this layer's table (per-layer staging: safe until the forward's final sync)
    for (int row = 0; row < R; ++row)
      for (int e = 0; e < E; ++e) {
        const size_t i = base + static_cast<size_t>(row) * E + e;
        mirror_[i] = table_h_[i] = entry(row, e);
      }
    CUDA_CHECK(cudaMemcpyAsync(table_d_ + base, table_h_ + base, static_cast<size_t>(R) * E * sizeof(void*),
                               cudaMemcpyHostToDevice, stream_));
    table_valid_[layer] = true;
  }
  return table_d_ + base;
}

bool MoeLayer::route(int step, int layer, int pos0, const bf16* gate, const bf16* next_gate, ForwardBuffers& b,
                     int m, bool predict, const FusedNorm* norm) {
  const int K = d_.top_k, E = d_.n_experts, H = d_.hidden, pairs = m * K;
  ScopedRange r(trace_, RangeKind::router, layer);
  const bool staged = routing_ && staged_step_ == step && staged_m_ == m;
  if (router_in_gate_up_.gate) fail("moe: layer {}: a norm + router left to a gate/up launch that did not run", layer);
  if (norm && !deferred_.att && !predict && gate_up_takes_router(m)) {  // the gate/up launch takes it
    router_in_gate_up_ = DeferredRouter{norm->x, norm->w, norm->eps, gate};
    return false;
  }
  if (deferred_.att) {  // defer_o_proj's o_proj, then the norm and the router, in one launch
    const DeferredOProj o = deferred_;
    deferred_ = DeferredOProj{};
    if (!norm || m != 1 || norm->x != o.x)
      fail("moe: layer {}: an o_proj left to the router's launch but the router runs {} tokens {} the fused norm",
           layer, m, norm ? "of another x with" : "without");
    o_proj_norm_router(o.att, o.wo, o.q_dim, o.x, norm->w, norm->eps, gate, b.h, b.router_logits,
                       staged ? nullptr : b.ids, b.wts, H, E, K, stream_, d_.norm_topk_prob);
  } else if (norm) {  // h, the logits and (the gate routing) the top-k in one launch
    norm_router(norm->x, norm->w, norm->eps, gate, b.h, b.router_logits, staged ? nullptr : b.ids, b.wts, m, H, E, K,
                stream_, d_.norm_topk_prob);
  } else {
    linear(b.h, gate, b.router_logits, m, H, E, false, blas_, stream_);
    if (!staged) router_topk(b.router_logits, b.ids, b.wts, m, E, K, stream_, d_.norm_topk_prob);
  }
  // The gate predicts the next layer only when it also routes it.
  const bool gate_predicts = predict && !routing_;
  if (gate_predicts) {
    if (m > pool_tokens_) fail("moe: a forward of {} tokens exceeds the {}-token pool", m, pool_tokens_);
    linear(b.h, next_gate, pred_logits_d_, m, H, E, false, blas_, stream_);
    router_topk(pred_logits_d_, pred_ids_d_, pred_wts_d_, m, E, K, stream_);
    CUDA_CHECK(cudaMemcpyAsync(pred_h_, pred_ids_d_, pairs * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  }
  if (staged) {  // chosen at begin_step, weighed here on the device
    const size_t at = static_cast<size_t>(layer) * pairs;
    router_reweight(b.router_logits, staged_d_ + at, b.ids, b.wts, m, E, K, d_.norm_topk_prob, stream_);
    std::copy(staged_h_ + at, staged_h_ + at + pairs, ids_h_);  // for host consumers (grouped dispatch)
  } else if (routing_) {  // another source picks the experts; the gate's softmax weighs them (as CpuModel)
    CUDA_CHECK(cudaMemcpyAsync(logits_h_, b.router_logits, static_cast<size_t>(m) * E * sizeof(float),
                               cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    routing_->route(step, layer, m, std::span<int32_t>(ids_h_, pairs));
    cpu::router_reweight(logits_h_, ids_h_, wts_h_, m, E, K, d_.norm_topk_prob);
    CUDA_CHECK(cudaMemcpyAsync(b.ids, ids_h_, pairs * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaMemcpyAsync(b.wts, wts_h_, pairs * sizeof(float), cudaMemcpyHostToDevice, stream_));
  } else if (observer_) {
    CUDA_CHECK(cudaMemcpyAsync(wts_h_, b.wts, pairs * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    ids_to_host(b, pairs);
  } else if (provider_.needs_ids() || dispatch_ == Dispatch::grouped || gate_predicts) {
    ids_to_host(b, pairs);
  }
  if (observer_) observer_(layer, pos0, m, ids_h_, wts_h_);
  return gate_predicts;
}

void MoeLayer::run_norm(int step, int layer, int pos0, const float* x_in, const bf16* norm_w, float eps,
                        const bf16* gate, const bf16* next_gate, ForwardBuffers& b, float* x, int m) {
  const FusedNorm fused{x_in, norm_w, eps};
  if (small_block_ok(m, gate, b)) {
    if (deferred_.att) fail("moe: layer {}: an o_proj left to the router's launch but the small-block launch runs", layer);
    small_block(step, layer, nullptr, nullptr, 0, x_in, norm_w, eps, gate, b, x);
    return;
  }
  const bool one_launch = norm_router_supported(m, d_.hidden, d_.n_experts, d_.top_k, gate, b.h) ||
                          norm_router_wide_supported(m, d_.hidden, d_.n_experts, d_.top_k, gate, b.h);
  if (!one_launch) rmsnorm(x_in, norm_w, b.h, m, d_.hidden, eps, stream_);
  run(step, layer, pos0, gate, next_gate, b, x, m, one_launch ? &fused : nullptr);
}

bool MoeLayer::small_block_ok(int m, const bf16* gate, const ForwardBuffers& b) const {
  // One token over many small resident experts, routed by its own gate and seen by no host
  // consumer: the norm, router and experts in one launch (moe_small_block.h).
  return m == 1 && moe_small_block_enabled() && small_experts_enabled() && !quantised() &&
         dispatch_ == Dispatch::fused && combine_ == Combine::fused && fused_decode_ok(m) && !routing_ &&
         !observer_ && !filter_ && !host_ && !provider_.needs_ids() && !provider_.wants_prediction() &&
         moe_small_block_supported(m, d_.top_k, d_.n_experts, d_.hidden, d_.inter, gate, b.h);
}

void MoeLayer::small_block(int step, int layer, const bf16* att, const bf16* wo, int q_dim, const float* x_in,
                           const bf16* norm_w, float eps, const bf16* gate, ForwardBuffers& b, float* x) {
  const int K = d_.top_k, E = d_.n_experts, H = d_.hidden, I = d_.inter;
  {
    ScopedRange r(trace_, RangeKind::expert_load, layer);
    for (auto& g : got_) g = ExpertWeights{};
    provider_.acquire(step, layer, nullptr, 0, got_.data(), stream_);
  }
  const bf16* const* t = reinterpret_cast<const bf16* const*>(tables(layer));
  ScopedRange r(trace_, RangeKind::expert_compute, layer, -1, "moe_small_block");
  if (att)
    moe_small_block_o_proj(att, wo, q_dim, x, norm_w, eps, gate, b.h, b.router_logits, b.ids, b.wts, t, t + E,
                           t + 2 * E, b.moe_h, K, E, H, I, d_.norm_topk_prob, stream_);
  else
    moe_small_block(x_in, norm_w, eps, gate, b.h, b.router_logits, b.ids, b.wts, t, t + E, t + 2 * E, b.moe_h, x, K,
                    E, H, I, d_.norm_topk_prob, stream_);
  provider_.release(layer, stream_);
}

bool MoeLayer::defer_o_proj(const bf16* att, const bf16* wo, int q_dim, float* x, const bf16* gate,
                            const ForwardBuffers& b) {
  if (!o_proj_router_on() || small_block_ok(1, gate, b) ||
      !o_proj_norm_router_supported(q_dim, d_.hidden, d_.n_experts, d_.top_k, att, wo, gate, b.h))
    return false;
  deferred_ = DeferredOProj{att, wo, q_dim, x};
  return true;
}

bool MoeLayer::run_norm_o_proj(int step, int layer, const bf16* att, const bf16* wo, int q_dim, float* x,
                               const bf16* norm_w, float eps, const bf16* gate, ForwardBuffers& b) {
  if (!moe_small_block_o_proj_enabled() || !small_block_ok(1, gate, b) ||
      !moe_small_block_o_proj_supported(q_dim, att, wo))
    return false;
  small_block(step, layer, att, wo, q_dim, x, norm_w, eps, gate, b, x);
  return true;
}

void MoeLayer::run(int step, int layer, int pos0, const bf16* gate, const bf16* next_gate, ForwardBuffers& b, float* x,
                   int m, const FusedNorm* norm) {
  const int K = d_.top_k, pairs = m * K;
  ensure_host(pairs);
  const bool predict = provider_.wants_prediction() && next_gate && layer + 1 < d_.n_layers &&
                       (!host_ || host_->prefetch_allowed(layer + 1));
  const bool gate_predicted = route(step, layer, pos0, gate, next_gate, b, m, predict, norm);
  if (filter_) filter_(layer, b.ids, pairs, stream_);
  if (counter_ && m > 1) counter_(layer, b.ids, pairs, stream_);
  if (host_ && run_with_host(step, layer, b, x, m, predict, gate_predicted)) return;
  {
    ScopedRange r(trace_, RangeKind::expert_load, layer);
    for (auto& g : got_) g = ExpertWeights{};
    if (provider_.needs_ids()) provider_.acquire(step, layer, ids_h_, pairs, got_.data(), stream_);
    else provider_.acquire(step, layer, nullptr, 0, got_.data(), stream_);
  }
  experts(layer, b, x, m);
  provider_.release(layer, stream_);
  if (predict) prefetch_next(step, layer, m, gate_predicted);  // after this layer's experts are launched
}

// MOEBENCH_EXPERT_PREDICT_STATS=1, eager forwards only (a sync): how often the scores on the
// layer's input rank the router's choice, slot by slot and as a set.
void MoeLayer::count_prediction(const float* pred, const int32_t* ids) {
  static const bool stats = env_choice("MOEBENCH_EXPERT_PREDICT_STATS", {0, 1}, 0) == 1;
  if (!stats) return;
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream_, &capturing));
  if (capturing != cudaStreamCaptureStatusNone) return;
  const int E = d_.n_experts, K = d_.top_k;
  std::vector<float> p(E);
  std::vector<int32_t> chosen(K);
  CUDA_CHECK(cudaMemcpyAsync(p.data(), pred, E * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaMemcpyAsync(chosen.data(), ids, K * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::vector<int> order(E);
  for (int e = 0; e < E; ++e) order[e] = e;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
  ++pred_seen_;
  for (int j = 0; j < K; ++j) {
    pred_slot_right_ += order[j] == chosen[j] ? 1 : 0;
    pred_expert_right_ += std::find(chosen.begin(), chosen.end(), order[j]) != chosen.end() ? 1 : 0;
  }
}

void MoeLayer::prefetch_next(int step, int layer, int m, bool gate_predicted) {
  const int pairs = m * d_.top_k;
  ScopedRange r(trace_, RangeKind::expert_load, layer + 1, -1, "prefetch");  // the loads overlap this layer's compute
  if (gate_predicted) pred_.assign(pred_h_, pred_h_ + pairs);
  else routing_->predict(step, layer + 1, m, pred_);
  if (host_) host_->filter_prefetch(layer + 1, pred_);
  provider_.prefetch(step, layer + 1, pred_.data(), static_cast<int>(pred_.size()));
}

void MoeLayer::experts(int layer, ForwardBuffers& b, float* x, int m) {
  const int K = d_.top_k, E = d_.n_experts, H = d_.hidden, I = d_.inter;
  // The scores of set_prediction: counted here (the requests went on the side stream, or
  // the bf16 gate/up takes them), forgotten either way.
  const float* pred = m == 1 ? pred_logits_ : nullptr;
  pred_logits_ = nullptr;
  // With the router inside the gate/up launch the ids exist only after that launch.
  const bool ids_later = router_in_gate_up_.gate != nullptr;
  if (pred) {
    ++predicted_launches_;
    if (!ids_later) count_prediction(pred, b.ids);
  }
  if (quantised() && quant_decode_ok(m)) {
    if (!quant_decode(layer, b, b.h, b.ids, m * K, K, combine_ == Combine::fused ? x : nullptr)) combine(b, x, m, false);
    if (pred && ids_later) count_prediction(pred, b.ids);
    return;
  }
  if (ids_later) fail("moe: layer {}: a norm + router left to a quantised gate/up launch that does not run", layer);
  if (const int slice = prefill_slice(m)) {  // a short quantised prefill: the decode launches, a slice at a time
    for (int t0 = 0; t0 < m; t0 += slice) {
      const int n = std::min(slice, m - t0);
      ForwardBuffers s = b;
      s.h = b.h + static_cast<size_t>(t0) * H;
      s.ids = b.ids + static_cast<size_t>(t0) * K;
      s.wts = b.wts + static_cast<size_t>(t0) * K;
      float* xs = x + static_cast<size_t>(t0) * H;
      if (!quant_decode(layer, s, s.h, s.ids, n * K, K, combine_ == Combine::fused ? xs : nullptr)) combine(s, xs, n, false);
    }
    return;
  }
  if (!quantised() && dispatch_ == Dispatch::fused && fused_decode_ok(m)) {
    const bf16* const* t = reinterpret_cast<const bf16* const*>(tables(layer));
    ScopedRange r(trace_, RangeKind::expert_compute, layer, -1, "moe_decode_fused");
    if (combine_ == Combine::fused) {
      if (small_experts_enabled() && small_experts_supported(m, K, E, H, I)) {  // many small experts, one token
        moe_decode_small(b.h, b.ids, b.wts, t, t + E, t + 2 * E, b.moe_h, x, K, E, H, I, stream_);
        return;
      }
      const unsigned pred_bytes = pred && expert_predict_at_from_env() != 1 ? expert_predict_bytes() : 0u;
      moe_decode_fused(b.h, b.ids, b.wts, t, t + E, t + 2 * E, b.moe_h, x, m, K, E, H, I, stream_, MoeDownAlgo::grouped,
                       pred, pred_bytes);
      return;
    }
    moe_decode_experts(b.h, b.ids, t, t + E, t + 2 * E, b.moe_h, b.moe_y, m, K, E, H, I, stream_);
    combine(b, x, m, false);
    return;
  }
  if (dispatch_ == Dispatch::serial) serial_experts(layer, b, m);
  else grouped_experts(layer, b, m);
  combine(b, x, m, true);
}

bool MoeLayer::quant_decode(int layer, ForwardBuffers& b, const bf16* x, const int32_t* ids, int pairs, int K,
                            float* residual) {
  ScopedRange r(trace_, RangeKind::expert_compute, layer, -1, "quant_moe_gemv");
  const DeferredRouter d = router_in_gate_up_;
  router_in_gate_up_ = DeferredRouter{};
  GateUpRouter router;
  if (d.gate) {
    if (!residual || pairs != K || x != b.h || ids != b.ids)
      fail("moe: layer {}: the gate/up launch with the router takes one token into b.h and b.ids, fused combine",
           layer);
    router = GateUpRouter{d.x, d.w, d.eps, d.gate, b.h, b.router_logits, b.ids, b.wts, d_.n_experts,
                          d_.norm_topk_prob ? 1 : 0};
  }
  return quant_decode_table(tables(layer), d_.n_experts, d_.inter, gate_up_adjacent(d_.layout), d_.int4_paired, b, x,
                            ids, pairs, K, residual, b.moe_y, d.gate ? &router : nullptr);
}

bool MoeLayer::quant_decode_table(const void* const* table, int E, int I, bool adjacent, bool paired,
                                  ForwardBuffers& b, const bf16* x, const int32_t* ids, int pairs, int K,
                                  float* residual, float* out, const GateUpRouter* router) {
  const int H = d_.hidden;
  const auto* t = reinterpret_cast<const uint8_t* const*>(table);
  auto mat = [&](int w) {
    QuantExperts q;
    q.format = d_.format;
    q.q = t + static_cast<size_t>(3 * w) * E;
    q.scale = t + static_cast<size_t>(3 * w + 1) * E;
    q.zero = d_.layout.n_parts > 2 ? t + static_cast<size_t>(3 * w + 2) * E : nullptr;
    q.int4_paired = paired;
    q.n_experts = E;
    return q;
  };
  // g, u (pairs, inter) fp32 in the SwiGLU scratch (it holds two such arrays and more).
  float* g = static_cast<float*>(b.swiglu);
  float* u = g + static_cast<size_t>(pairs) * I;
  const bool fused = quant_decode_fused_from_env();
  if (router && !(adjacent && fused && residual))
    fail("moe: the gate/up launch with the router needs the fused kernels, w1 and w3 adjacent and the fused combine");
  const int persistent = quant_moe_persistent();
  if (persistent >= 1 && adjacent && fused && residual && pairs == K && (!router || persistent >= 2) &&
      persistent_takes(router != nullptr)) {  // the gate/up and the down + combine in one launch
    quant_moe_block_persistent(mat(0), mat(2), router, x, ids, b.wts, K, I, H, E, b.moe_h, residual, persist_counter_,
                               stream_, persistent == 3);
    ++persistent_launches_;
    if (router) ++persistent_router_launches_;
    return true;
  }
  if (adjacent) {  // w1 and w3 as one (2 inter, hidden) matrix: g, u of each pair side by side
    if (router) {
      quant_moe_gemv_gate_up_router(mat(0), *router, K, I, H, b.moe_h, stream_);
      ++router_in_gate_up_launches_;
    } else if (fused) {
      quant_moe_gemv_gate_up(mat(0), x, ids, pairs, K, I, H, E, b.moe_h, stream_);
    } else {
      quant_moe_gemv(mat(0), x, false, ids, pairs, K, 2 * I, H, E, g, stream_);
      silu_mul_gate_up(g, b.moe_h, pairs, I, stream_);
    }
  } else {
    quant_moe_gemv(mat(0), x, false, ids, pairs, K, I, H, E, g, stream_);
    quant_moe_gemv(mat(1), x, false, ids, pairs, K, I, H, E, u, stream_);
    silu_mul_bf16(g, u, b.moe_h, static_cast<int64_t>(pairs) * I, stream_);
  }
  if (residual && fused) {  // the ids came from the router: before the gate/up launch, or inside it
    quant_moe_down_combine(mat(2), b.moe_h, ids, b.wts, pairs, K, H, I, E, residual, router == nullptr, stream_);
    return true;
  }
  quant_moe_gemv(mat(2), b.moe_h, true, ids, pairs, K, H, I, E, out, stream_);
  return false;
}

void MoeLayer::bf16_expert(int layer, int e, const bf16* w[3]) {
  const void* src[3] = {got_[e].w1, got_[e].w3, got_[e].w2};
  if (!src[0] || !src[1] || !src[2]) fail("expert provider gave no weights for layer {} expert {}", layer, e);
  if (!quantised()) {
    for (int i = 0; i < 3; ++i) w[i] = static_cast<const bf16*>(src[i]);
    return;
  }
  const int64_t H = d_.hidden, I = d_.inter;
  const int64_t rows[3] = {I, I, H}, cols[3] = {H, H, I};
  const ExpertLayout& L = d_.layout;
  for (int i = 0; i < 3; ++i) {
    const auto* base = static_cast<const uint8_t*>(src[i]) - L.offset[i][0];  // the expert's start
    bf16* out = deq_ + static_cast<int64_t>(i) * H * I;
    dequantize_bf16(d_.format, rows[i], cols[i], base + L.offset[i][0], base + L.offset[i][1],
                    L.n_parts > 2 ? base + L.offset[i][2] : nullptr, out, stream_, d_.int4_paired);
    w[i] = out;
  }
}

// grouped (host grouping) and fused prefill (device sort): the pairs sorted by expert,
// gathered once, one GEMM per active expert on its contiguous block of rows.
void MoeLayer::grouped_experts(int layer, ForwardBuffers& b, int m) {
  const int K = d_.top_k, E = d_.n_experts, H = d_.hidden, I = d_.inter, pairs = m * K;
  if (dispatch_ == Dispatch::grouped) {
    std::vector<int> count(E + 1, 0);
    for (int p = 0; p < pairs; ++p) {
      if (ids_h_[p] < 0 || ids_h_[p] >= E) fail("router gave expert id {} (expected 0..{})", ids_h_[p], E - 1);
      ++count[ids_h_[p] + 1];
    }
    for (int e = 0; e < E; ++e) count[e + 1] += count[e];
    std::memcpy(offsets_h_, count.data(), (E + 1) * sizeof(int32_t));
    int32_t* perm = sort_h_;
    int32_t* inv = sort_h_ + pairs;
    for (int p = 0; p < pairs; ++p) {  // stable: pairs in order within an expert
      const int r = count[ids_h_[p]]++;
      perm[r] = p;
      inv[p] = r;
    }
    CUDA_CHECK(cudaMemcpyAsync(b.perm, perm, pairs * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaMemcpyAsync(b.inv, inv, pairs * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  } else {
    moe_sort_by_expert(b.ids, pairs, E, b.perm, b.inv, b.offsets, stream_);
    CUDA_CHECK(cudaMemcpyAsync(offsets_h_, b.offsets, (E + 1) * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  // Every pair, but those marked for another GPU (expert parallelism), which no expert counts.
  moe_gather_rows(b.h, b.perm, K, b.moe_xin, offsets_h_[E], H, stream_);
  for (int e = 0; e < E; ++e) {
    const int off = offsets_h_[e], cnt = offsets_h_[e + 1] - offsets_h_[e];
    if (cnt == 0) continue;
    ScopedRange r(trace_, RangeKind::expert_compute, layer, e);
    const bf16* w[3];
    bf16_expert(layer, e, w);
    swiglu_expert(b.moe_xin + static_cast<int64_t>(off) * H, w[0], w[1], w[2], b.moe_y + static_cast<int64_t>(off) * H,
                  b.swiglu, cnt, H, I, false, blas_, stream_);
  }
}

// serial: every expert in turn, its pairs selected with a mask on the device; the count
// comes back to the host (as torch.nonzero / torch.where make it) before the expert runs.
void MoeLayer::serial_experts(int layer, ForwardBuffers& b, int m) {
  const int K = d_.top_k, E = d_.n_experts, H = d_.hidden, I = d_.inter, pairs = m * K;
  int base = 0;
  for (int e = 0; e < E; ++e) {
    moe_select_expert(b.ids, pairs, e, base, b.perm, b.inv, b.offsets + e, stream_);
    CUDA_CHECK(cudaMemcpyAsync(offsets_h_ + e, b.offsets + e, sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    const int cnt = offsets_h_[e];
    if (cnt == 0) continue;
    ScopedRange r(trace_, RangeKind::expert_compute, layer, e);
    moe_gather_rows(b.h, b.perm + base, K, b.moe_xin + static_cast<int64_t>(base) * H, cnt, H, stream_);
    const bf16* w[3];
    bf16_expert(layer, e, w);
    swiglu_expert(b.moe_xin + static_cast<int64_t>(base) * H, w[0], w[1], w[2], b.moe_y + static_cast<int64_t>(base) * H,
                  b.swiglu, cnt, H, I, false, blas_, stream_);
    base += cnt;
  }
  if (base != pairs) fail("serial dispatch: the experts' masks selected {} of {} (token, slot) pairs", base, pairs);
}

void MoeLayer::combine(ForwardBuffers& b, float* x, int m, bool sorted) {
  const int K = d_.top_k, H = d_.hidden;
  const int32_t* inv = sorted ? b.inv : nullptr;
  ScopedRange r(trace_, RangeKind::combine);
  if (filter_ && sorted) {  // expert parallelism (combine fused): the marked pairs' inv is unset
    moe_combine_held(b.moe_y, inv, b.ids, b.wts, m, K, x, H, stream_);
    return;
  }
  switch (combine_) {
    case Combine::loop:
      CUDA_CHECK(cudaMemsetAsync(b.moe_out, 0, static_cast<size_t>(m) * H * sizeof(float), stream_));
      for (int p = 0; p < m * K; ++p) moe_combine_pair(b.moe_y, inv, b.wts, p, K, b.moe_out, H, stream_);
      add_inplace(x, b.moe_out, m, H, stream_);
      break;
    case Combine::index_add:
      CUDA_CHECK(cudaMemsetAsync(b.moe_out, 0, static_cast<size_t>(m) * H * sizeof(float), stream_));
      moe_combine_all(b.moe_y, inv, b.wts, m, K, b.moe_out, H, stream_);
      add_inplace(x, b.moe_out, m, H, stream_);
      break;
    case Combine::fused:  // straight into the residual
      moe_combine_all(b.moe_y, inv, b.wts, m, K, x, H, stream_);
      break;
  }
}

}  // namespace moebench::cuda
