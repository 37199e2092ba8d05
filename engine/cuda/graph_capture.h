// graph_capture.h: a CUDA graph of the launches a piece of host code makes on a stream,
// captured (thread-local mode) and instantiated, for the decode steps that replay one
// (cuda_model_batch.cpp, cuda_model_graph.cpp). Host C++.
#pragma once
#include <cuda_runtime_api.h>

#include <functional>

namespace moebench::cuda {

// Runs body() with `stream` capturing and returns the instantiated graph; on an error in
// body() or in the capture, ends the capture, frees what it made and rethrows.
cudaGraphExec_t capture_graph(cudaStream_t stream, const std::function<void()>& body);

}  // namespace moebench::cuda
