// cuda_model_tp.cpp: where a CudaModel's forward differs when it is one rank of a
// multi-GPU model (cuda_model.h, TpRank).
// Tensor parallel: o_proj and the MoE block give the rank's partial output, summed over
// the ranks by an all-reduce. Expert parallel: attention runs whole on every rank (one
// GPU's path); after the router the pairs whose expert another rank holds are marked
// (ep_ops.h) and skipped, so the MoE block's output here is the sum over the held pairs:
// a partial output, all-reduced once per layer. On one GPU both add straight into the
// residual. What is all-reduced (settings tp_reduce):
//   residual  the residual stream itself, which then lives in tp_sum_ (symmetric memory
//             where tp_allreduce asks for it): rank 0 adds its partial into it as one GPU
//             does, every other rank writes its partial alone (o_proj without the add;
//             the MoE block's combine adds into a residual cleared once the router has
//             read it), and the all-reduce leaves the next residual on every rank. No
//             launch besides the all-reduce.
//   partial   the partial outputs in tp_sum_, all-reduced, then added to the residual
//             and cleared in one launch (add_and_clear; the MoE block's combine adds
//             into the cleared buffer).
// Expert counters (ep_counters): expert parallel counts the distinct held experts each
// decode step ran (ep_ops.h, after the router); tensor parallel holds a block of every
// expert and counts the distinct experts of a batched decode step the same way (one
// more one-block launch a layer), one token's top_k on the host (distinct by the top-k).
// CUDA events around each all-reduce give the collective time of a forward. Batched
// decode steps are captured in CUDA graphs with their all-reduces (NCCL calls are
// capturable; each rank captures its own stream on its own thread), once with the
// timing events and once without: one replay in kTpTimedEvery is timed.
#include <vector>

#include "common/error.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/ep_ops.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/tp_ops.h"
#include "engine/shard.h"

namespace moebench::cuda {

ModelConfig CudaModel::rank_config(const ModelConfig& full, const TpRank* tp) {
  if (!tp || tp->placement) return full;  // one GPU, or expert parallel: the whole model's shapes
  return tp_rank_config(full, tp->rank, tp->world);
}

bool CudaModel::holds_expert(int l, int e) const { return !expert_parallel() || tp_->placement->rank(l, e) == tp_->rank; }

void CudaModel::setup_pair_filter() {
  const ModelConfig& c = cfg_;
  const bool clear = tp_residual_ && tp_->rank > 0;  // see the file comment
  setup_expert_parallel();
  const int E = c.num_local_experts, K = c.num_experts_per_tok, H = c.hidden_size;
  moe_->set_pair_filter([this, clear, E, K, H](int layer, int32_t* ids, int pairs, cudaStream_t s) {
    if (expert_parallel())
      ep_mark_foreign(ids, pairs, ep_local_ + static_cast<size_t>(layer) * E, E, ep_count_ ? ep_counts_ : nullptr, s);
    else if (ep_count_ && pairs > K)  // tensor parallel, several tokens: count the distinct experts (every one held)
      ep_mark_foreign(ids, pairs, ep_local_, E, ep_counts_, s);
    if (clear) CUDA_CHECK(cudaMemsetAsync(tp_sum_, 0, static_cast<size_t>(pairs / K) * H * sizeof(float), s));
  });
}

void CudaModel::note_decode_step(int m) {
  if (!tp_) return;
  // Tensor parallel, one token: its top_k experts, distinct (the router's top-k), uncounted on the device.
  if (!expert_parallel() && m == 1)
    tp_token_experts_ += static_cast<int64_t>(cfg_.num_hidden_layers) * cfg_.num_experts_per_tok;
  ++ep_decode_steps_;
}

void CudaModel::setup_expert_parallel() {
  const ModelConfig& c = cfg_;
  ep_counts_ = arena_->alloc_n<int64_t>(2, "expert counters");
  CUDA_CHECK(cudaMemset(ep_counts_, 0, 2 * sizeof(int64_t)));
  if (!expert_parallel()) {  // tensor parallel: every expert held (a block of each), one layer's table serves all
    const std::vector<uint8_t> all(static_cast<size_t>(c.num_local_experts), 1);
    ep_local_ = arena_->alloc_n<uint8_t>(all.size(), "tensor-parallel held experts");
    CUDA_CHECK(cudaMemcpy(ep_local_, all.data(), all.size(), cudaMemcpyHostToDevice));
    return;
  }
  const ExpertPlacement& p = *tp_->placement;
  if (p.n_layers != c.num_hidden_layers || p.n_experts != c.num_local_experts || p.n_ranks != tp_->world)
    fail("expert parallel: a placement of {} layers x {} experts over {} ranks for a model of {} x {} on {}", p.n_layers,
         p.n_experts, p.n_ranks, c.num_hidden_layers, c.num_local_experts, tp_->world);
  const size_t n = static_cast<size_t>(c.num_hidden_layers) * c.num_local_experts;
  std::vector<uint8_t> local(n);
  for (int l = 0; l < c.num_hidden_layers; ++l)
    for (int e = 0; e < c.num_local_experts; ++e) local[static_cast<size_t>(l) * c.num_local_experts + e] = holds_expert(l, e);
  ep_local_ = arena_->alloc_n<uint8_t>(n, "expert-parallel held experts");
  CUDA_CHECK(cudaMemcpy(ep_local_, local.data(), n, cudaMemcpyHostToDevice));
}

CudaModel::EpCounters CudaModel::ep_counters() {
  EpCounters out;
  if (!tp_) return out;
  for (int l = 0; l < cfg_.num_hidden_layers; ++l)
    for (int e = 0; e < cfg_.num_local_experts; ++e) out.experts_held += holds_expert(l, e) ? 1 : 0;
  int64_t counts[2] = {0, 0};
  CUDA_CHECK(cudaMemcpyAsync(counts, ep_counts_, sizeof counts, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  out.decode_steps = ep_decode_steps_;
  out.experts_run = counts[0] + tp_token_experts_;
  out.pairs = counts[1] + tp_token_experts_;  // one token: as many pairs as experts
  return out;
}

bool CudaModel::set_step_expert_count(bool on) {
  if (tp_ || settings_.expert_tier != "resident") return false;
  if (on == step_count_on_) return true;
  if (on) {
    if (!step_count_d_) CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&step_count_d_), 2 * sizeof(int64_t)));
    CUDA_CHECK(cudaMemsetAsync(step_count_d_, 0, 2 * sizeof(int64_t), stream_));
    step_count_steps_ = 0;
    const int E = cfg_.num_local_experts;
    int64_t* counts = step_count_d_;
    // ep_count_: this forward is a decode step (forward_batch sets it per forward).
    moe_->set_step_counter([this, E, counts](int, int32_t* ids, int pairs, cudaStream_t s) {
      if (ep_count_) count_step_experts(ids, pairs, E, counts, s);
    });
  } else {
    moe_->set_step_counter({});
  }
  step_count_on_ = on;
  return true;
}

Model::StepExperts CudaModel::step_expert_count() {
  StepExperts out;
  if (!step_count_d_) return out;
  int64_t counts[2] = {0, 0};
  CUDA_CHECK(cudaMemcpyAsync(counts, step_count_d_, sizeof counts, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  out.steps = step_count_steps_;
  out.experts = counts[0];
  return out;
}

void CudaModel::bind_residual(ForwardBuffers& b) const {
  if (tp_ && tp_residual_) b.x = tp_sum_;
}

void CudaModel::o_proj(const Layer& L, ForwardBuffers& b, int m) {
  const int H = cfg_.hidden_size, Q = cfg_.q_dim();
  if (!tp_ || expert_parallel() || (tp_residual_ && tp_->rank == 0)) {
    linear_weight(L.lw[3], b.att, b.x, m, Q, H, true, attn_scratch_, blas_->get(), stream_);  // x += att @ wo^T
    if (tp_ && !expert_parallel()) all_reduce_timed(b.x, m);
    return;
  }
  if (tp_residual_) {  // another rank: x = its part, then x = the sum
    linear(b.att, L.wo, b.x, m, Q, H, false, blas_->get(), stream_);
    return all_reduce_timed(b.x, m);
  }
  linear(b.att, L.wo, tp_sum_, m, Q, H, false, blas_->get(), stream_);
  reduce_partial(b, m);
}

void CudaModel::moe_block(int64_t step, int l, int pos0, ForwardBuffers& b, int m) {
  const Layer& L = layers_[l];
  const float eps = cfg_.rms_norm_eps;
  const bf16* next_gate = l + 1 < cfg_.num_hidden_layers ? layers_[l + 1].gate : nullptr;
  // h = rmsnorm(x), then x += moe(h) (the norm and the router in one launch for decode).
  if (!tp_) {
    moe_->run_norm(static_cast<int>(step), l, pos0, b.x, L.ffn_norm, eps, L.gate, next_gate, b, b.x, m);
    return family_shared_expert(L, b, m);
  }
  if (tp_residual_) {  // ranks > 0: the pair filter clears x once the router has read it
    moe_->run_norm(static_cast<int>(step), l, pos0, b.x, L.ffn_norm, eps, L.gate, next_gate, b, b.x, m);
    all_reduce_timed(b.x, m);
  } else {  // tp_sum_ is zero here: the last reduce_partial cleared it
    moe_->run_norm(static_cast<int>(step), l, pos0, b.x, L.ffn_norm, eps, L.gate, next_gate, b, tp_sum_, m);
    reduce_partial(b, m);
  }
  // Expert parallel: a family's shared expert is replicated, run whole on every rank.
  if (expert_parallel()) family_shared_expert(L, b, m);
}

void CudaModel::reduce_partial(ForwardBuffers& b, int m) {
  all_reduce_timed(tp_sum_, m);
  add_and_clear(b.x, tp_sum_, m, cfg_.hidden_size, stream_);  // zero again for the MoE block's combine
}

void CudaModel::all_reduce_timed(float* buf, int m) {
  const size_t count = static_cast<size_t>(m) * cfg_.hidden_size;
  unsigned flags = 0;
  if (tp_timing_) {
    while (tp_events_.size() < tp_events_used_ + 2) {
      cudaEvent_t e = nullptr;
      CUDA_CHECK(cudaEventCreate(&e));
      tp_events_.push_back(e);
    }
    // Inside a CUDA graph capture (batched decode) the events become record nodes of the
    // graph, so every replay of a timed graph times its all-reduces.
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(stream_, &capturing));
    flags = capturing == cudaStreamCaptureStatusActive ? cudaEventRecordExternal : 0;
    CUDA_CHECK(cudaEventRecordWithFlags(tp_events_[tp_events_used_], stream_, flags));
  }
  tp_->all_reduce(buf, count, stream_);
  if (tp_timing_) {
    CUDA_CHECK(cudaEventRecordWithFlags(tp_events_[tp_events_used_ + 1], stream_, flags));
    tp_events_used_ += 2;
  }
}

void CudaModel::read_collective_times(bool decode) {
  if (!tp_ || !tp_timing_) return;  // an untimed graph replay recorded no events
  int64_t ns = 0;
  const int64_t calls = static_cast<int64_t>(tp_events_used_ / 2);
  for (size_t i = 0; i + 1 < tp_events_used_; i += 2) ns += event_elapsed_ns(tp_events_[i], tp_events_[i + 1]);
  tp_events_used_ = 0;
  collective_ns_ += ns;
  collective_calls_ += calls;
  if (decode) {
    decode_collective_ns_ += ns;
    decode_collective_calls_ += calls;
    ++decode_forwards_;
  }
}

}  // namespace moebench::cuda
