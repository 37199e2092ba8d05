// cpu_expert.h: fast CPU kernels of one SwiGLU expert, out = w2 @ (silu(w1 @ x) * (w3 @ x)),
// on the GPU's weight layouts (bf16) and the quantised formats of engine/quant.h (int8,
// int4, fp8), for decode (a few tokens) and prefill (many). The weights are read once
// and dequantised in registers; every product and sum is fp32. The reference is the fp32
// expert on dequantised weights (engine/ops swiglu_expert): these kernels are a separate
// fast path, the CUDA model's host experts (expert_exec cpu | hybrid).
//
// Work: OpenMP threads take the output rows in blocks of kCpuExpertRowBlock, dynamic
// chunks of 4 blocks (a thread the scheduler delays leaves its rows to the others
// instead of holding the team at the barrier); inside a
// block the tokens go in groups of up to kCpuExpertTokenBlock, each group one pass over
// the block's rows (which stay in the core's cache), so a prefill still reads every
// weight from memory once. int4 on the AVX-512 ISAs may instead run the stripe kernel
// (MOEBENCH_CPU_INT4=new, cpu_expert_int4_avx512.cpp): larger blocks read 4 rows side by
// side, prefetching the next 4; the same values.
//
// Values: on every ISA but avx512_bf16 the dequantised weights equal dequantize()'s
// bit for bit and only the order of the fp32 sums differs from the reference. On
// avx512_bf16 the bf16 format's matrices run through vdpbf16ps: the activations (x, and
// silu(w1 x) * (w3 x) before w2) are rounded to bf16 (relative error <= 2^-9 each),
// products are exact and sums fp32. fp8 codes 0x7f/0xff (NaN in e4m3, never written by
// quantize()) read as +-480 here.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/ops/cpu_isa.h"
#include "engine/quant.h"

namespace moebench::cpu {

constexpr int64_t kCpuExpertRowBlock = 8;  // output rows per unit of thread work
constexpr int kCpuExpertTokenBlock = 8;    // tokens that share one pass over a row block

// A matrix W (rows = outputs, cols = inputs) in one format, its parts where they lie
// (the layouts of engine/quant.h); zero is null unless int4 with zero points.
// ld: elements from one row's start to the next (0: cols; else >= cols), so that W may be
// a block of columns of a wider matrix (a split expert's part of w2). Every part's row
// stride follows from ld as if W were ld columns wide: values ld bf16 / int8 / e4m3 codes
// (int4: ld / 2 bytes, ld even); int4 scales and zero points groups_of(ld) = ceil(ld / 128)
// per row; fp8 scales ceil(ld / 128) per block row of 128 rows; int8 scales one per row
// (no stride). A block of columns starting at column c0 points q at c0's code and, int4
// and fp8, scale / zero at c0's group (c0 % 128 == 0): cpu_expert_rows does that.
struct CpuMatrix {
  QuantFormat format = QuantFormat::bf16;
  int64_t rows = 0, cols = 0, ld = 0;
  const uint8_t* q = nullptr;
  const uint8_t* scale = nullptr;
  const uint8_t* zero = nullptr;
};
CpuMatrix cpu_matrix(const QuantMatrix& m);

// One expert: w1, w3 (inter x hidden) and w2 (hidden x inter), all in one format.
struct CpuExpert {
  CpuMatrix w1, w3, w2;
};

// y (n, w.rows) = x (n, w.cols) @ W^T with the kernels of `isa` (cpu_isa_from_env /
// select_cpu_isa pick one). Throws Error on an ISA this CPU lacks, or a matrix its
// format cannot hold (int4 with cols % 8 != 0, missing parts).
void cpu_expert_linear(const CpuMatrix& w, const float* x, float* y, int n, CpuIsa isa);

// The expert restricted to intermediate rows [r0, r1): those rows of w1 and w3, those
// columns of w2 (read in place through ld), in every format. int4 and fp8 cut only at
// their scale groups: r0 a multiple of 128, r1 one too or inter. Error for a cut there,
// an empty range or one outside [0, inter), or mixed formats. Its forward is that part's
// share of the whole expert's output: the forwards of a partition of the rows sum to it.
CpuExpert cpu_expert_rows(const CpuExpert& e, int64_t r0, int64_t r1);

// Floats of scratch cpu_expert_forward needs: two (n, inter) activations.
size_t cpu_expert_scratch_floats(int n, int64_t inter);
// out (n, hidden) = w2 @ (silu(w1 @ x) * (w3 @ x)) for x (n, hidden). Throws Error when
// the three shapes do not fit together or the formats differ.
void cpu_expert_forward(const CpuExpert& e, const float* x, float* out, float* scratch, int n, CpuIsa isa);

// True when `isa` runs format f with bf16-rounded activations (vdpbf16ps).
bool cpu_expert_rounds_activations(CpuIsa isa, QuantFormat f);

}  // namespace moebench::cpu
