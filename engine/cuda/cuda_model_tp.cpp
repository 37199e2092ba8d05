// cuda_model_tp.cpp: the two places a CudaModel's forward differs when it is one rank
// of a tensor-parallel model (cuda_model.h, TpRank): o_proj and the MoE block write
// the rank's partial sum into tp_sum_, which is all-reduced over the ranks and then
// added to the residual (and cleared in the same launch: the MoE block's combine adds
// into it); on one GPU both add straight into the residual, as before.
// CUDA events around each all-reduce give the collective time of a forward. Batched
// decode steps are captured in CUDA graphs with their all-reduces (NCCL calls are
// capturable; each rank captures its own stream on its own thread), once with the
// timing events and once without: one replay in kTpTimedEvery is timed.
#include "engine/cuda/check.cuh"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/tp_ops.h"

namespace moebench::cuda {

void CudaModel::o_proj(const Layer& L, ForwardBuffers& b, int m) {
  const int H = cfg_.hidden_size, Q = cfg_.q_dim();
  if (!tp_) return linear_weight(L.lw[3], b.att, b.x, m, Q, H, true, attn_scratch_, blas_->get(), stream_);
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
  // tp_sum_ is zero here: o_proj's reduce_partial cleared it.
  moe_->run_norm(static_cast<int>(step), l, pos0, b.x, L.ffn_norm, eps, L.gate, next_gate, b, tp_sum_, m);
  reduce_partial(b, m);
}

void CudaModel::reduce_partial(ForwardBuffers& b, int m) {
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
  tp_->all_reduce(tp_sum_, count, stream_);
  if (tp_timing_) {
    CUDA_CHECK(cudaEventRecordWithFlags(tp_events_[tp_events_used_ + 1], stream_, flags));
    tp_events_used_ += 2;
  }
  add_and_clear(b.x, tp_sum_, m, cfg_.hidden_size, stream_);  // zero again for the MoE block's combine
}

void CudaModel::read_collective_times(bool decode) {
  if (!tp_ || !tp_timing_) return;  // an untimed graph replay recorded no events
  int64_t ns = 0;
  const int64_t calls = static_cast<int64_t>(tp_events_used_ / 2);
  for (size_t i = 0; i + 1 < tp_events_used_; i += 2) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, tp_events_[i], tp_events_[i + 1]));
    ns += static_cast<int64_t>(static_cast<double>(ms) * 1e6);
  }
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
