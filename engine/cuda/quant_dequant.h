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
// int4_paired: q holds int4 codes in the paired word order (int4_pair_words).
// Rows whose cols are a multiple of 8 (every expert matrix) with aligned parts go 8 codes
// a thread (MOEBENCH_DEQUANT8=0: one element a thread, the same bits, for measuring).
void dequantize_bf16(QuantFormat f, int64_t rows, int64_t cols, const uint8_t* q, const uint8_t* scale,
                     const uint8_t* zero, __nv_bfloat16* out, cudaStream_t stream, bool int4_paired = false);

// int4 codes on the device reordered in place for the decode GEMV ("paired" word order):
// the eight codes e0 .. e7 of each 32-bit word (as stored, e_2i the low nibble of byte
// i, e_2i+1 its high nibble) go to nibbles 0, 4, 1, 5, 2, 6, 3, 7 (e_2j to nibble j,
// e_2j+1 to nibble j + 4), so that (word >> 4j) & 0x000F000F holds e_2j in its low half
// and e_2j+1 in its high half: the order of two adjacent bf16 activations in one 32-bit
// word. bytes % 4 == 0 (an int4 row is a multiple of 16 bytes), else Error.
void int4_pair_words(uint8_t* q, int64_t bytes, cudaStream_t stream);

// Whether resident int4 experts are reordered into the paired word order on upload
// (MOEBENCH_INT4_PAIRED = 0 or 1, unset kDefaultInt4Paired); for measuring one build both
// ways. Read once. On by default: measured on an H200 at Mixtral's shapes, one token, the
// fused gate/up took 57.0 us against 58.4 as stored, the down + combine 32.0 against 33.0.
inline constexpr bool kDefaultInt4Paired = true;
bool int4_paired_from_env();

// h[i] (bf16) = silu(g[i]) * u[i] for i < n, silu(a) = a / (1 + exp(-a)), as the bf16
// expert path computes it.
void silu_mul_bf16(const float* g, const float* u, __nv_bfloat16* h, int64_t n, cudaStream_t stream);

}  // namespace moebench::cuda
