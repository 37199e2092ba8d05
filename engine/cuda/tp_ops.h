// tp_ops.h: the elementwise kernel of tensor parallelism's step (engine/cuda/cuda_model_tp.cpp),
// defined beside add_inplace in embedding.cu. Host C++ declaration.
#pragma once
#include <cuda_runtime_api.h>

namespace moebench::cuda {

// x (n, dim) += y as add_inplace (the same bits), then y = 0 (fp32, on the device): the
// residual add of an all-reduced partial sum, leaving the buffer zeroed for the next.
void add_and_clear(float* x, float* y, int n, int dim, cudaStream_t stream);

}  // namespace moebench::cuda
