// weight_upload.h: puts a model's tensors into the device arena as bf16, one named
// arena block per tensor. Checkpoints go through two pinned staging buffers (the next
// chunk is read while the previous one is copied); synthetic bf16 weights are generated
// in place on the GPU (synth_fill_bf16: bit-identical to `moebench make-model`'s files),
// so no checkpoint is needed on the GPU machine's disk. Host C++.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/progress.h"
#include "engine/shard.h"
#include "engine/weight_source.h"

namespace moebench::cuda {

class DeviceArena;

class WeightUploader {
 public:
  static constexpr uint64_t kStageBytes = 32ull << 20;  // per pinned staging buffer
  // progress may be null.
  WeightUploader(const WeightSource& src, DeviceArena& arena, cudaStream_t stream, Progress* progress);
  ~WeightUploader();
  WeightUploader(const WeightUploader&) = delete;
  WeightUploader& operator=(const WeightUploader&) = delete;

  // A new arena block holding the tensor as bf16 (shape checked by the source).
  __nv_bfloat16* upload(const TensorSpec& s);
  // A new arena block holding one tensor-parallel rank's slice of the tensor `full`
  // (engine/shard.h), row-major: synthetic bf16 row blocks are generated in place at
  // their offset, column blocks generated whole into a scratch block and copied out
  // (cudaMemcpy2D); checkpoint tensors are sliced on the host (slice_tensor), then copied.
  __nv_bfloat16* upload_slice(const TensorSpec& full, const TensorSlice& slice);
  // Waits for every copy / fill issued so far.
  void finish();
  bool in_place() const;  // synthetic bf16: generated on the device

 private:
  void copy_host(const uint16_t* src, __nv_bfloat16* dst, int64_t count);
  const WeightSource& src_;
  DeviceArena& arena_;
  cudaStream_t stream_;
  Progress* progress_;
  void* stage_[2] = {nullptr, nullptr};  // pinned, kStageBytes each
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int next_ = 0;
  void* scratch_ = nullptr;  // cudaMalloc'd: a whole tensor whose column block is wanted
  uint64_t scratch_bytes_ = 0;
};

}  // namespace moebench::cuda
