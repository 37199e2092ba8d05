// graph_capture.cpp: see graph_capture.h.
#include "engine/cuda/graph_capture.h"

#include "engine/cuda/check.cuh"

namespace moebench::cuda {

cudaGraphExec_t capture_graph(cudaStream_t stream, const std::function<void()>& body) {
  cudaGraph_t g = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    body();
  } catch (...) {
    cudaStreamEndCapture(stream, &g);
    if (g) cudaGraphDestroy(g);
    throw;
  }
  CUDA_CHECK(cudaStreamEndCapture(stream, &g));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
  cudaGraphDestroy(g);
  CUDA_CHECK(e);
  return exec;
}

}  // namespace moebench::cuda
