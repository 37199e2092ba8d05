// quant_linear.h: a linear layer whose weight is bf16 or quantised (the attention
// projections under weight_dtype): one call that picks the bf16 path (linear(), ops.cuh)
// or the dequantising one, so a model's call sites stay as they are. Includable from
// host C++.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/quant.h"

namespace moebench::cuda {

// A weight (out x in) on the device: bf16 (w) or quantised (q, scale as quant_parts()
// lays them out; int8 or fp8).
struct LinearWeight {
  QuantFormat format = QuantFormat::bf16;
  const __nv_bfloat16* w = nullptr;
  const uint8_t* q = nullptr;
  const uint8_t* scale = nullptr;
};

// y (n, out) fp32 = x (n, in) bf16 @ W^T [+ y if accumulate]. bf16: linear(). Quantised:
// quant_gemv() for n <= 8 (decode), else W dequantised into `scratch` (out x in bf16,
// the values dequantize() defines, rounded to bf16) and linear() on it (prefill).
// scratch may be null when n <= 8 or the weight is bf16; otherwise Error.
void linear_weight(const LinearWeight& w, const __nv_bfloat16* x, float* y, int n, int in, int out, bool accumulate,
                   __nv_bfloat16* scratch, cublasHandle_t blas, cudaStream_t stream);
// y[s] = x @ w[s]^T for n_mats <= 4 weights sharing x (q/k/v): linear_multi() when all
// are bf16 (its single launch at n = 1), else linear_weight() for each.
void linear_multi_weight(const LinearWeight* w, const __nv_bfloat16* x, float* const* y, const int* out, int n_mats,
                         int n, int in, __nv_bfloat16* scratch, cublasHandle_t blas, cudaStream_t stream);

}  // namespace moebench::cuda
