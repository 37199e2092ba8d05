// gate_up.h: the quantised experts' gate and up projections as one matrix. In a layout
// where an expert's w1 and w3 lie back to back in every part (gate_up_layout,
// engine/device_plan.h: row r of w3 is row inter + r of one (2 x inter, hidden) matrix),
// one dequantising GEMV launch over 2 x inter rows gives g and u of every pair together,
// and silu_mul_gate_up makes h = silu(g) * u from them: the same rows, the same
// arithmetic, one launch less and a grid twice as tall. Includable from host C++.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace moebench::cuda {

// gu (pairs, 2 x inter) fp32, g then u per pair -> h (pairs, inter) bf16 = silu(g) * u
// (the SwiGLU activation of the other kernels, gemv_core.cuh's silu, bit for bit).
void silu_mul_gate_up(const float* gu, __nv_bfloat16* h, int pairs, int inter, cudaStream_t stream);

}  // namespace moebench::cuda
