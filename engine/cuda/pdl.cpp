// pdl.cpp: see pdl.h.
#include "engine/cuda/pdl.h"

#include <atomic>

#include "engine/cuda/check.cuh"
#include "engine/cuda/launch_env.h"

namespace moebench::cuda {

namespace {
std::atomic<int> g_graph_pdl{-1};  // -1: MOEBENCH_GRAPH_PDL's value
}  // namespace

void set_graph_pdl(bool on) { g_graph_pdl = on ? 1 : 0; }

bool pdl_enabled(cudaStream_t stream) {
  static const bool on = env_choice("MOEBENCH_PDL", {0, 1}, 1) == 1;
  if (!on || stream == nullptr) return false;
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream, &st));
  if (st == cudaStreamCaptureStatusNone) return true;
  const int g = g_graph_pdl.load();
  return g < 0 ? graph_pdl_from_env() : g == 1;
}

}  // namespace moebench::cuda
