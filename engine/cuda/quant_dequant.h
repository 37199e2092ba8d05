// quant_dequant.h: the quantised experts' helpers besides the decode GEMV
// (quant_gemv.h): dequantising one matrix to bf16 on the device (prefill runs the bf16
// expert path on the result), and the SwiGLU product of decode's w1 / w3 GEMV outputs.
// Includable from host C++.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/quant.h"

namespace moebench::cuda {

// out (rows, cols) bf16 = the matrix's values exactly as quant.cpp's dequantize() defines
// them (value x scale in fp32, the same single multiply), rounded to bf16 (nearest
// even). q, scale, zero: the parts as quant_parts() lays them out (zero null: symmetric
// int4, other formats). bf16 input: a plain copy.
void dequantize_bf16(QuantFormat f, int64_t rows, int64_t cols, const uint8_t* q, const uint8_t* scale,
                     const uint8_t* zero, __nv_bfloat16* out, cudaStream_t stream);

// h[i] (bf16) = silu(g[i]) * u[i] for i < n, silu(a) = a / (1 + exp(-a)), as the bf16
// expert path computes it.
void silu_mul_bf16(const float* g, const float* u, __nv_bfloat16* h, int64_t n, cudaStream_t stream);

}  // namespace moebench::cuda
