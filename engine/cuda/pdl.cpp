// pdl.cpp: see pdl.h.
#include "engine/cuda/pdl.h"

#include "common/env.h"
#include "common/error.h"
#include "engine/cuda/check.cuh"

namespace moebench::cuda {

namespace {
bool pdl_from_env() {
  const std::string v = env_str("MOEBENCH_PDL");
  if (v.empty() || v == "1") return true;
  if (v == "0") return false;
  fail("MOEBENCH_PDL={}: expected 0 (off) or 1 (on, the default)", v);
}
}  // namespace

bool pdl_enabled(cudaStream_t stream) {
  static const bool on = pdl_from_env();
  if (!on || stream == nullptr) return false;
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream, &st));
  return st == cudaStreamCaptureStatusNone;
}

}  // namespace moebench::cuda
