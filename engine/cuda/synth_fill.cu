// synth_fill.cu: synthetic weights generated in place on the GPU (no checkpoint on
// disk). Same counter-based generator as the host (engine/synth_rng.h): element i of a
// tensor is bf16(fma(scale, u(key, i), offset)), bit-identical to moebench::synth_fill.
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"
#include "engine/synth_rng.h"

namespace moebench::cuda {

namespace {
__global__ void synth_fill_kernel(bf16* __restrict__ dst, uint64_t key, int64_t begin, int64_t count, float scale,
                                  float offset) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint16_t b = f32_to_bf16(synth::value(key, static_cast<uint64_t>(begin + i), scale, offset));
    dst[i] = __ushort_as_bfloat16(b);
  }
}
}  // namespace

void synth_fill_bf16(bf16* dst, uint64_t key, int64_t begin, int64_t count, float scale, float offset,
                     cudaStream_t stream) {
  MB_NVTX_RANGE("synth_fill");
  if (count <= 0) return;
  const int64_t blocks = ceil_div(count, 256) < 132 * 16 ? ceil_div(count, 256) : 132 * 16;
  synth_fill_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(dst, key, begin, count, scale, offset);
  CUDA_CHECK_LAUNCH("synth_fill_kernel");
}

}  // namespace moebench::cuda
