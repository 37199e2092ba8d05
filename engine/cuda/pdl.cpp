// pdl.cpp: see pdl.h.
#include "engine/cuda/pdl.h"

#include "engine/cuda/check.cuh"
#include "engine/cuda/launch_env.h"

namespace moebench::cuda {

bool pdl_enabled(cudaStream_t stream) {
  static const bool on = env_choice("MOEBENCH_PDL", {0, 1}, 1) == 1;
  if (!on || stream == nullptr) return false;
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream, &st));
  return st == cudaStreamCaptureStatusNone;
}

}  // namespace moebench::cuda
