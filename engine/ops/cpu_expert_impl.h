// cpu_expert_impl.h: what the CPU expert kernels of each ISA share (internal to
// engine/ops/cpu_expert*.cpp): the per-ISA row-block entry points and the scalar
// dequantisation of one weight that the column tails use.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "engine/dtype.h"
#include "engine/ops/cpu_expert.h"

namespace moebench::cpu::expert_detail {

// Rows r0..r1 of y (n, w.rows) = x (n, w.cols) @ W^T; x is fp32, or bf16 for the
// kernels that take bf16 activations.
using RowBlockFn = void (*)(const CpuMatrix& w, int64_t r0, int64_t r1, const void* x, int n, float* y);

void row_block_generic(const CpuMatrix& w, int64_t r0, int64_t r1, const void* x, int n, float* y);
void row_block_avx2(const CpuMatrix& w, int64_t r0, int64_t r1, const void* x, int n, float* y);
void row_block_avx512(const CpuMatrix& w, int64_t r0, int64_t r1, const void* x, int n, float* y);
void row_block_avx512_bf16dp(const CpuMatrix& w, int64_t r0, int64_t r1, const void* x, int n, float* y);
// int4 through a per-group table of the 16 dequantised values (vpermps): x fp32 in
// int4_chunk_order.
void row_block_avx512_int4(const CpuMatrix& w, int64_t r0, int64_t r1, const void* x, int n, float* y);

// Which int4 kernel the avx512 ISAs run (MOEBENCH_CPU_INT4): old = the table kernel above
// in blocks of kCpuExpertRowBlock rows; new (the default) = the same arithmetic in blocks
// of `rows` rows (0: one block per thread) read as stripes, each prefetching the stripe
// `prefetch` stripes ahead (0: none), a block's first stripe its own rows `lead` cache
// lines ahead (0: none), into L1 or (l2) into L2 only; threads take blocks one at a time,
// or (steal) each a contiguous range of them in order, prefetching on across its blocks,
// then the others' last ones (cpu_expert_int4_avx512.cpp). Spelled "old" or
// "new[:rows=N][:prefetch=N][:lead=N][:l2=0|1][:steal=0|1]", unset fields (and an unset
// variable) as below: the best of the settings measured on a 16-core Sapphire Rapids.
struct Int4Kernel {
  bool stripes = true;
  int64_t rows = 32;
  int prefetch = 1;
  int lead = 8;
  bool l2 = false;
  bool steal = true;
};
Int4Kernel parse_int4_kernel(const std::string& spec);  // Error in one line on a bad spec
Int4Kernel int4_kernel_from_env();
// The stripe kernel's rows per block of a matrix of `rows` rows on `threads` threads.
int64_t int4_block_rows(const Int4Kernel& k, int64_t rows, int threads);
// y (n, w.rows) = x (n, w.cols) W^T with the stripe kernel, all rows (OpenMP threads
// when parallel); x as given (it puts a copy in int4_chunk_order).
void int4_stripes_linear(const CpuMatrix& w, const float* x, int n, float* y, const Int4Kernel& k, bool parallel);

// The int4 table kernel's input order: every full 32-column chunk of each token's row
// (columns 32k .. 32k+31) as its 16 even columns then its 16 odd ones — the order the
// low and high nibbles of the chunk's 16 bytes come out in; the last cols % 32 columns
// as they are. out (n, cols).
inline void int4_chunk_order(const float* x, int n, int64_t cols, float* out) {
  const int64_t full = cols / 32 * 32;
  for (int t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    float* ot = out + t * cols;
    for (int64_t c = 0; c < full; c += 32)
      for (int j = 0; j < 16; ++j) {
        ot[c + j] = xt[c + 2 * j];
        ot[c + 16 + j] = xt[c + 2 * j + 1];
      }
    for (int64_t c = full; c < cols; ++c) ot[c] = xt[c];
  }
}

// Calls fn(std::integral_constant<int, NT>{}) with NT = nt (1..kCpuExpertTokenBlock):
// the kernels take their token count as a compile-time constant (one register per token).
template <class Fn>
inline void with_token_count(int nt, Fn&& fn) {
  static_assert(kCpuExpertTokenBlock == 8, "with_token_count covers 1..8 tokens");
  switch (nt) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 5: fn(std::integral_constant<int, 5>{}); break;
    case 6: fn(std::integral_constant<int, 6>{}); break;
    case 7: fn(std::integral_constant<int, 7>{}); break;
    default: fn(std::integral_constant<int, 8>{}); break;
  }
}

// Calls fn(std::integral_constant<int, NT>{}, x, y) for each group of up to
// kCpuExpertTokenBlock token rows of x (n, w.cols) and y (n, w.rows): the group's rows.
template <class T, class Fn>
inline void for_token_groups(const CpuMatrix& w, const T* x, int n, float* y, Fn&& fn) {
  for (int t0 = 0; t0 < n; t0 += kCpuExpertTokenBlock) {
    const int nt = n - t0 < kCpuExpertTokenBlock ? n - t0 : kCpuExpertTokenBlock;
    const T* xt = x + static_cast<int64_t>(t0) * w.cols;
    float* yt = y + static_cast<int64_t>(t0) * w.rows;
    with_token_count(nt, [&](auto k) { fn(k, xt, yt); });
  }
}

inline int64_t groups_of(int64_t cols) { return (cols + 127) / 128; }

// Elements from one row's start to the next (CpuMatrix::ld; 0 means cols).
inline int64_t row_stride(const CpuMatrix& w) { return w.ld > 0 ? w.ld : w.cols; }
// Scale (and int4 zero point) entries from one row's (fp8: block row's) start to the next.
inline int64_t scale_stride(const CpuMatrix& w) { return groups_of(row_stride(w)); }

inline float load_f32(const uint8_t* p, int64_t i) {
  float s;
  std::memcpy(&s, p + 4 * i, 4);
  return s;
}
inline float load_bf16_f32(const uint8_t* p, int64_t i) {
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return bf16_to_f32(h);
}

// An e4m3 code as the kernels read it: e4m3_to_f32, except 0x7f/0xff (NaN, never
// written by quantize()), which read as +-480 as the vector conversion makes them.
inline float weight_e4m3(uint8_t code) {
  if ((code & 0x7f) == 0x7f) return code & 0x80 ? -480.0f : 480.0f;
  return e4m3_to_f32(code);
}

// Weight (r, c) as dequantize() defines it, except int8, which is the bare code (its
// row scale multiplies the finished dot product).
template <QuantFormat F>
inline float weight_value(const CpuMatrix& w, int64_t r, int64_t c) {
  if constexpr (F == QuantFormat::bf16) {
    return load_bf16_f32(w.q, r * row_stride(w) + c);
  } else if constexpr (F == QuantFormat::int8) {
    return static_cast<float>(static_cast<int8_t>(w.q[r * row_stride(w) + c]));
  } else if constexpr (F == QuantFormat::int4) {
    const int64_t g = r * scale_stride(w) + c / kInt4Group;
    const uint8_t b = w.q[r * (row_stride(w) / 2) + c / 2];
    const int u = (c & 1) ? b >> 4 : b & 0xf;
    return static_cast<float>(u - (w.zero ? w.zero[g] : 8)) * load_bf16_f32(w.scale, g);
  } else {
    const float s = load_f32(w.scale, (r / kFp8Block) * scale_stride(w) + c / kFp8Block);
    return weight_e4m3(w.q[r * row_stride(w) + c]) * s;
  }
}

}  // namespace moebench::cpu::expert_detail
