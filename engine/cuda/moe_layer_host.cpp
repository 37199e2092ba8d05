// moe_layer_host.cpp: MoeLayer's forward with host experts (expert_exec cpu | hybrid,
// cpu_moe_layers; engine/cuda/host_experts.h). After routing, with the ids on the host:
//   1. HostExperts::plan flags the experts the host computes (some or all misses);
//   2. the activations (m, hidden) bf16 go to the host (the stream is idle: the router's
//      ids came back with a synchronisation);
//   3. the provider acquires the rest (acquire_masked: hits wait on their loads, copied
//      misses load into slots; the flagged ones get no slot);
//   4. the device's pairs run as single-expert rows (gathered inputs, the decode kernels
//      with k = 1) into moe_y rows [0, n_device);
//   5. the next layer's prefetches are issued (they queue behind this layer's copies);
//   6. the host computes its pairs into moe_y rows [n_device, pairs) — beside the copies
//      and the device work already enqueued — and sends them up; a split expert's pairs
//      come first there, and the GPU's part of it (copied into the scratch after this
//      layer's copies, computed after the device pairs into split_y) is added to them;
//   7. the combine, with inv mapping each (token, slot) pair to its row, weights as the
//      router gave them: out[t] += sum_j w[t,j] * y[row(t,j)] in slot order, as always.
#include <algorithm>

#include "common/clock.h"
#include "common/error.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/host_experts.h"
#include "engine/cuda/moe_layer.h"
#include "engine/cuda/offload_provider.h"
#include "engine/cuda/ops.cuh"
#include "profiler/cpu_trace.h"

namespace moebench::cuda {

using profiler::RangeKind;
using profiler::ScopedRange;

void MoeLayer::set_host_experts(HostExperts* h) {
  free_host_buffers();
  host_ = h;
  if (!h) return;
  if (!dynamic_cast<OffloadProvider*>(&provider_))
    fail("moe: host experts need the offload provider (expert_tier=pinned), the model has {}", provider_.describe());
  host_rows_ = pool_tokens_ * d_.top_k;
  const size_t H = static_cast<size_t>(d_.hidden), rows = static_cast<size_t>(host_rows_);
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_x_), static_cast<size_t>(pool_tokens_) * H * sizeof(uint16_t),
                           cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_y_), rows * H * sizeof(float), cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_idx_), 3 * rows * sizeof(int32_t), cudaHostAllocDefault));
  CUDA_CHECK(cudaEventCreateWithFlags(&host_x_ready_, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&host_y_sent_, cudaEventDisableTiming));
}

void MoeLayer::free_host_buffers() {
  if (host_x_ || host_y_ || host_idx_) cudaStreamSynchronize(stream_);
  if (host_x_) cudaFreeHost(host_x_);
  if (host_y_) cudaFreeHost(host_y_);
  if (host_idx_) cudaFreeHost(host_idx_);
  if (host_x_ready_) cudaEventDestroy(host_x_ready_);
  if (host_y_sent_) cudaEventDestroy(host_y_sent_);
  host_x_ = nullptr;
  host_y_ = nullptr;
  host_idx_ = nullptr;
  host_x_ready_ = host_y_sent_ = nullptr;
  host_rows_ = 0;
}

bool MoeLayer::run_with_host(int step, int layer, ForwardBuffers& b, float* x, int m, bool predict,
                             bool gate_predicted) {
  const int K = d_.top_k, E = d_.n_experts, H = d_.hidden, I = d_.inter, pairs = m * K;
  const int64_t t_start = profiler::now_ns();
  if (host_->plan(step, layer, ids_h_, pairs, m) == 0) return false;
  if (pairs > host_rows_) fail("moe: a forward of {} (expert, token) pairs exceeds the {} the host buffers hold", pairs, host_rows_);
  const std::span<const char> mask = host_->mask();
  // The previous layer's uploads from the pinned buffers must have left them.
  CUDA_CHECK(cudaEventSynchronize(host_y_sent_));
  int32_t* perm = host_idx_;
  int32_t* inv = host_idx_ + host_rows_;
  int32_t* dev_ids = host_idx_ + 2 * host_rows_;
  int n_dev = 0;
  for (int p = 0; p < pairs; ++p)
    if (!mask[ids_h_[p]]) {
      perm[n_dev] = p;
      dev_ids[n_dev] = ids_h_[p];
      inv[p] = n_dev++;
    }
  // Host rows: the split expert's pairs first (the GPU computes their other part too,
  // into split_y, rows in the same order), then the other host pairs.
  const int split_e = host_->split_expert();
  int n_split = 0;
  for (int p = 0; p < pairs; ++p)
    if (ids_h_[p] == split_e) {
      perm[n_dev + n_split] = p;
      dev_ids[n_dev + n_split] = 0;  // the scratch's one expert
      inv[p] = n_dev + n_split++;
    }
  if (n_split > kHostMixMaxGpuPairs) fail("moe: a split expert with {} pairs, over the {} its rows hold", n_split, kHostMixMaxGpuPairs);
  int n_host = n_split;
  for (int p = 0; p < pairs; ++p)
    if (mask[ids_h_[p]] && ids_h_[p] != split_e) inv[p] = n_dev + n_host++;
  CUDA_CHECK(cudaMemcpyAsync(host_x_, b.h, static_cast<size_t>(m) * H * sizeof(uint16_t), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaEventRecord(host_x_ready_, stream_));
  CUDA_CHECK(cudaMemcpyAsync(b.inv, inv, pairs * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  if (n_dev + n_split > 0) {
    CUDA_CHECK(cudaMemcpyAsync(b.perm, perm, (n_dev + n_split) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaMemcpyAsync(b.ids, dev_ids, (n_dev + n_split) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  }
  {
    ScopedRange r(trace_, RangeKind::expert_load, layer);
    for (auto& g : got_) g = ExpertWeights{};
    static_cast<OffloadProvider&>(provider_).acquire_masked(step, layer, ids_h_, pairs, got_.data(), stream_, mask);
  }
  if (n_split > 0) host_->issue_split_copy(layer);  // behind this layer's copies, before the next layer's
  if (n_dev > 0) {
    moe_gather_rows(b.h, b.perm, K, b.moe_xin, n_dev, H, stream_);
    ScopedRange r(trace_, RangeKind::expert_compute, layer, -1, "device experts beside the host");
    if (quantised()) {
      quant_decode(layer, b, b.moe_xin, b.ids, n_dev, 1);
    } else {
      const bf16* const* t = reinterpret_cast<const bf16* const*>(tables(layer));
      moe_decode_experts(b.moe_xin, b.ids, t, t + E, t + 2 * E, b.moe_h, b.moe_y, n_dev, 1, E, H, I, stream_);
    }
  }
  if (n_split > 0) {  // the split expert's device part: a dense expert of the scratch's rows
    const int64_t off = static_cast<int64_t>(n_dev) * H;
    moe_gather_rows(b.h, b.perm + n_dev, K, b.moe_xin + off, n_split, H, stream_);
    host_->wait_split_copy(stream_);
    ScopedRange r(trace_, RangeKind::expert_compute, layer, host_->split_expert(), "device part of a split expert");
    const int rows = static_cast<int>(host_->split_device_rows());
    if (quantised()) {  // the scratch's parts packed apart (not gate/up adjacent), codes as stored (not paired)
      quant_decode_table(host_->split_table(), 1, rows, false, false, b, b.moe_xin + off, b.ids + n_dev, n_split, 1,
                         nullptr, host_->split_y());
    } else {
      const bf16* const* t = reinterpret_cast<const bf16* const*>(host_->split_table());
      moe_decode_experts(b.moe_xin + off, b.ids + n_dev, t, t + 1, t + 2, b.moe_h, host_->split_y(), n_split, 1, 1, H,
                         rows, stream_);
    }
    host_->split_done(stream_);
  }
  provider_.release(layer, stream_);
  if (predict && host_->prefetch_allowed(layer + 1)) prefetch_next(step, layer, m, gate_predicted);
  CUDA_CHECK(cudaEventSynchronize(host_x_ready_));
  host_->compute(layer, host_x_, m, ids_h_, pairs, K, inv, host_y_);
  host_->note_overhead(layer, profiler::now_ns() - t_start - host_->last_kernel_ns());
  CUDA_CHECK(cudaMemcpyAsync(b.moe_y + static_cast<int64_t>(n_dev) * H, host_y_ + static_cast<int64_t>(n_dev) * H,
                             static_cast<size_t>(n_host) * H * sizeof(float), cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaEventRecord(host_y_sent_, stream_));
  if (n_split > 0) add_inplace(b.moe_y + static_cast<int64_t>(n_dev) * H, host_->split_y(), n_split, H, stream_);
  combine(b, x, m, true);
  return true;
}

}  // namespace moebench::cuda
