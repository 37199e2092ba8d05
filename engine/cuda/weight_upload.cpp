// weight_upload.cpp: see weight_upload.h.
#include "engine/cuda/weight_upload.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/ops.cuh"
#include "engine/synth_rng.h"

namespace moebench::cuda {

WeightUploader::WeightUploader(const WeightSource& src, DeviceArena& arena, cudaStream_t stream, Progress* progress)
    : src_(src), arena_(arena), stream_(stream), progress_(progress) {
  if (in_place()) return;
  for (int i = 0; i < 2; ++i) {
    CUDA_CHECK(cudaHostAlloc(&stage_[i], kStageBytes, cudaHostAllocDefault));
    CUDA_CHECK(cudaEventCreateWithFlags(&done_[i], cudaEventDisableTiming));
  }
}

WeightUploader::~WeightUploader() {
  for (int i = 0; i < 2; ++i) {
    if (done_[i]) {
      cudaEventSynchronize(done_[i]);
      cudaEventDestroy(done_[i]);
    }
    if (stage_[i]) cudaFreeHost(stage_[i]);
  }
  if (scratch_) {
    cudaStreamSynchronize(stream_);
    cudaFree(scratch_);
  }
}

// Quantised synthetic experts are made on the host (quantised, then dequantised to bf16).
bool WeightUploader::in_place() const {
  return src_.is_synthetic() && src_.synth_dtype() == DType::bf16 && src_.expert_format() == QuantFormat::bf16;
}

void WeightUploader::copy_host(const uint16_t* src, __nv_bfloat16* dst, int64_t count) {
  const int64_t chunk = static_cast<int64_t>(kStageBytes / 2);
  for (int64_t i = 0; i < count; i += chunk) {
    const int64_t c = std::min(chunk, count - i);
    const int b = next_;
    next_ ^= 1;
    CUDA_CHECK(cudaEventSynchronize(done_[b]));  // the copy that last used this buffer is done
    std::memcpy(stage_[b], src + i, static_cast<size_t>(c) * 2);
    CUDA_CHECK(cudaMemcpyAsync(dst + i, stage_[b], static_cast<size_t>(c) * 2, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaEventRecord(done_[b], stream_));
    if (progress_) progress_->add(static_cast<uint64_t>(c) * 2);
  }
}

__nv_bfloat16* WeightUploader::upload(const TensorSpec& s) {
  const int64_t n = s.numel();
  auto* dst = arena_.alloc_n<__nv_bfloat16>(static_cast<uint64_t>(n), s.name);
  if (in_place()) {
    const uint64_t key = synth::tensor_key(src_.seed(), synth::name_hash(s.name));
    synth_fill_bf16(dst, key, 0, n, s.init_scale, s.init_offset, stream_);
    if (progress_) {
      if (progress_->active()) CUDA_CHECK(cudaStreamSynchronize(stream_));  // report bytes made, not launched
      progress_->add(static_cast<uint64_t>(n) * 2);
    }
    return dst;
  }
  if (const TensorView* v = src_.stored_bf16(s)) {  // straight from the mapping
    copy_host(reinterpret_cast<const uint16_t*>(v->data), dst, n);
    return dst;
  }
  std::vector<uint16_t> host(static_cast<size_t>(n));  // converted on the host (f32 / f16 / packed sources)
  src_.read_bf16(s, host.data());
  copy_host(host.data(), dst, n);
  CUDA_CHECK(cudaStreamSynchronize(stream_));  // `host` dies here
  return dst;
}

__nv_bfloat16* WeightUploader::upload_slice(const TensorSpec& full, const TensorSlice& slice) {
  if (slice.kind == TensorSlice::Kind::full) return upload(full);
  const TensorSpec part = slice_spec(full, slice);
  const int64_t n = part.numel(), rows = full.shape[0], cols = full.shape[1];
  auto* dst = arena_.alloc_n<__nv_bfloat16>(static_cast<uint64_t>(n), part.name);
  if (in_place()) {
    const uint64_t key = synth::tensor_key(src_.seed(), synth::name_hash(full.name));
    if (slice.kind == TensorSlice::Kind::rows) {  // a contiguous run of the full tensor's values
      synth_fill_bf16(dst, key, static_cast<int64_t>(slice.range.begin) * cols, n, full.init_scale, full.init_offset, stream_);
    } else {
      const uint64_t need = static_cast<uint64_t>(full.numel()) * 2;
      if (need > scratch_bytes_) {
        if (scratch_) {
          CUDA_CHECK(cudaStreamSynchronize(stream_));
          CUDA_CHECK(cudaFree(scratch_));
          scratch_ = nullptr;
        }
        CUDA_CHECK(cudaMalloc(&scratch_, need));
        scratch_bytes_ = need;
      }
      auto* whole = static_cast<__nv_bfloat16*>(scratch_);
      synth_fill_bf16(whole, key, 0, full.numel(), full.init_scale, full.init_offset, stream_);
      CUDA_CHECK(cudaMemcpy2DAsync(dst, static_cast<size_t>(slice.range.size()) * 2, whole + slice.range.begin,
                                   static_cast<size_t>(cols) * 2, static_cast<size_t>(slice.range.size()) * 2,
                                   static_cast<size_t>(rows), cudaMemcpyDeviceToDevice, stream_));
    }
    if (progress_) progress_->add(static_cast<uint64_t>(n) * 2);
    return dst;
  }
  std::vector<uint16_t> host(static_cast<size_t>(full.numel()));
  src_.read_bf16(full, host.data());
  const std::vector<uint16_t> mine = slice_tensor(host.data(), full, slice);
  copy_host(mine.data(), dst, n);
  CUDA_CHECK(cudaStreamSynchronize(stream_));  // `mine` dies here
  return dst;
}

void WeightUploader::finish() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace moebench::cuda
