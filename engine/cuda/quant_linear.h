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

// The longest forward (tokens) whose quantised expert matrices and projections run the
// decode kernels (quant_gemv, quant_moe_gemv: the codes read and multiplied as they are)
// in slices (8 tokens for the projections, quant_decode_tokens() for the experts), instead
// of each matrix dequantised into a bf16 scratch for cuBLAS: MOEBENCH_QUANT_PREFILL_SLICES
// (0: never; 16, 32, 64, 128, 256, 512), or what set_quant_prefill_slices said last (tests:
// a count, 0 never; negative: the environment's again). A short prompt then reads each
// weight once a slice instead of writing and reading its bf16 form. The slices compute
// what decode computes: each product of the exact dequantised value, not of its bf16
// rounding (the prefill's tolerance against the CPU reference is the looser of the two
// either way).
// quant_prefill_slices(): the count set, or -1 where none is (then the experts take their
// format's default below and the projections are never sliced: 8-row slices read a
// projection once every 8 rows, more than its bf16 form's 5 bytes a weight from about 40
// rows on, and that crossover has not been measured).
// quant_prefill_slices(format): the count set, else the experts' default, the crossover
// measured on an H100 at Mixtral's shape in 32-token passes (docs/QUANT.md, session 47):
// int4 128 tokens (a 128-token prompt's first token 0.83x the dequantising path's time,
// 200 tokens 1.3x), int8 and fp8 64 (0.61-0.62x; 100 tokens 0.97-0.99x, 128 1.1x).
int quant_prefill_slices();
int quant_prefill_slices(QuantFormat f);
void set_quant_prefill_slices(int tokens);

// The longest forward (tokens) whose quantised MoE block runs the decode launches
// (quant_moe_gemv_gate_up, quant_moe_down_combine) in one pass, each expert's codes read
// once for all the tokens that chose it, capped by the launches' 64 pairs (tokens x
// top-k: 32 tokens at top-2, 8 at top-8): MOEBENCH_QUANT_DECODE_TOKENS (8, 16, 32, 64;
// unset 64), or what set_quant_decode_tokens said last (tests; negative: the
// environment's again). 8 is the rule before session 47: a decode step of 16 sequences
// then took the dequantising path (each expert's bf16 form written and read). The
// prefill slices above are this many tokens too. A pair's sums do not depend on how many
// other pairs share its launch, so a forward in one pass gives its slices' bits.
int quant_decode_tokens();
void set_quant_decode_tokens(int tokens);

// y (n, out) fp32 = x (n, in) bf16 @ W^T [+ y if accumulate]. bf16: linear(). Quantised:
// quant_gemv() for n <= 8 (decode) and, in slices of 8, for n <= quant_prefill_slices();
// else W dequantised into `scratch` (out x in bf16, the values dequantize() defines,
// rounded to bf16) and linear() on it (prefill). scratch may be null when no
// dequantisation runs or the weight is bf16; otherwise Error.
void linear_weight(const LinearWeight& w, const __nv_bfloat16* x, float* y, int n, int in, int out, bool accumulate,
                   __nv_bfloat16* scratch, cublasHandle_t blas, cudaStream_t stream);
// y[s] = x @ w[s]^T for n_mats <= 4 weights sharing x (q/k/v): linear_multi() when all
// are bf16 (its single launch at n = 1), else linear_weight() for each.
void linear_multi_weight(const LinearWeight* w, const __nv_bfloat16* x, float* const* y, const int* out, int n_mats,
                         int n, int in, __nv_bfloat16* scratch, cublasHandle_t blas, cudaStream_t stream);

}  // namespace moebench::cuda
