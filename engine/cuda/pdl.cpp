// pdl.cpp: see pdl.h.
#include "engine/cuda/pdl.h"

#include "engine/cuda/check.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/launch_env.h"

namespace moebench::cuda {

namespace {
EnvSwitch g_graph_pdl{"MOEBENCH_GRAPH_PDL", 1};
}  // namespace

void set_graph_pdl(bool on) { g_graph_pdl.set(on); }

bool pdl_enabled(cudaStream_t stream) {
  static const bool on = env_choice("MOEBENCH_PDL", {0, 1}, 1) == 1;
  if (!on || stream == nullptr || device_info_cached().cc_major < 9) return false;  // Hopper on
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream, &st));
  if (st == cudaStreamCaptureStatusNone) return true;
  return g_graph_pdl.get();
}

}  // namespace moebench::cuda
