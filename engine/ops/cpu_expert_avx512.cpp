// cpu_expert_avx512.cpp: the CPU expert's row kernels with AVX-512 (function-level
// targets only): the fp32 kernel at 16 lanes (engine/ops/cpu_expert_rows.h), the int4
// kernel on a per-group table of its 16 values (vpermps) and, with AVX512_BF16, the
// bf16-weight kernel on vdpbf16ps (32 bf16 pairs per instruction, activations already
// rounded to bf16 by the caller, fp32 sums).
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as a masked builtin's unused
// source, which -W(maybe-)uninitialized reports at every inlined use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "engine/ops/cpu_expert_impl.h"

namespace moebench::cpu::expert_detail {
namespace {

#define MB_CPU_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

struct V {
  static constexpr int kRows = 2;
  static constexpr int kLanes = 16;
  using vec = __m512;
  MB_CPU_TARGET static vec zero() { return _mm512_setzero_ps(); }
  MB_CPU_TARGET static vec set1(float f) { return _mm512_set1_ps(f); }
  MB_CPU_TARGET static vec loadu(const float* p) { return _mm512_loadu_ps(p); }
  MB_CPU_TARGET static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  MB_CPU_TARGET static vec fmadd(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  MB_CPU_TARGET static float hsum(vec v) { return _mm512_reduce_add_ps(v); }
  MB_CPU_TARGET static vec bf16(const uint8_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  MB_CPU_TARGET static vec i8(const uint8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  MB_CPU_TARGET static vec i4(const uint8_t* p, int z) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    const __m512i u = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));  // byte i/2 in lane i
    const __m512i shift = _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
    const __m512i nib = _mm512_and_si512(_mm512_srlv_epi32(u, shift), _mm512_set1_epi32(15));
    return _mm512_cvtepi32_ps(_mm512_sub_epi32(nib, _mm512_set1_epi32(z)));
  }
  MB_CPU_TARGET static vec e4m3(const uint8_t* p) {
    // e4m3 s.eeee.mmm -> f16 s.0eeee.mmm0000000: the same digits, 2^8 smaller
    // (subnormals included); cvtph converts exactly.
    const __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(v, _mm256_set1_epi16(0x7f)), 7),
                                      _mm256_slli_epi16(_mm256_and_si256(v, _mm256_set1_epi16(0x80)), 8));
    return _mm512_cvtph_ps(h);
  }
};

#include "engine/ops/cpu_expert_rows.h"

#undef MB_CPU_TARGET

#define MB_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))

// R rows of bf16 weights against NT bf16 token rows (each load of x serves R rows);
// the column tail (< 32) through a masked load (zeros beyond it add nothing).
template <int R, int NT>
MB_BF16_TARGET void row_dot_bf16dp(const CpuMatrix& w, int64_t r0, const uint16_t* x, float* y) {
  const int64_t cols = w.cols;
  const int64_t ld = row_stride(w);  // weights: a bf16 row every ld elements
  const uint16_t* wr = reinterpret_cast<const uint16_t*>(w.q) + r0 * ld;
  __m512 acc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 32 <= cols; c += 32) {
    __m512bh wv[R];
    for (int i = 0; i < R; ++i) wv[i] = (__m512bh)_mm512_loadu_si512(wr + i * ld + c);
    for (int t = 0; t < NT; ++t) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + t * cols + c);
      for (int i = 0; i < R; ++i) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv[i], xv);
    }
  }
  if (c < cols) {
    const __mmask32 m = static_cast<__mmask32>((1u << (cols - c)) - 1u);
    __m512bh wv[R];
    for (int i = 0; i < R; ++i) wv[i] = (__m512bh)_mm512_maskz_loadu_epi16(m, wr + i * ld + c);
    for (int t = 0; t < NT; ++t) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, x + t * cols + c);
      for (int i = 0; i < R; ++i) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv[i], xv);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) y[t * w.rows + r0 + i] = _mm512_reduce_add_ps(acc[i][t]);
}

template <int NT>
MB_BF16_TARGET void rows_bf16dp(const CpuMatrix& w, int64_t r0, int64_t r1, const uint16_t* x, float* y) {
  int64_t r = r0;
  for (; r + 2 <= r1; r += 2) row_dot_bf16dp<2, NT>(w, r, x, y);
  for (; r < r1; ++r) row_dot_bf16dp<1, NT>(w, r, x, y);
}

MB_BF16_TARGET void row_block_bf16dp_impl(const CpuMatrix& w, int64_t r0, int64_t r1, const void* xv, int n,
                                          float* y) {
  for_token_groups(w, static_cast<const uint16_t*>(xv), n, y, [&](auto k, const uint16_t* xt, float* yt) {
    rows_bf16dp<decltype(k)::value>(w, r0, r1, xt, yt);
  });
}

#undef MB_BF16_TARGET

#define MB_INT4_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

// R rows of int4 weights against NT fp32 token rows in int4_chunk_order. Per row and
// group a table holds the group's 16 values (q - zero) * scale, computed as the generic
// kernel computes each weight (so every weight is the same float); each 32-column chunk
// is one 16-byte load widened to 16 lanes, whose low nibbles (vpermps reads the index's
// low 4 bits) and high nibbles (after a shift) look the weights up, each against its
// half of the chunk's x. The last cols % 32 columns go through weight_value.
template <int R, int NT>
MB_INT4_TARGET void row_dot_int4(const CpuMatrix& w, int64_t r0, const float* x, float* y) {
  const int64_t cols = w.cols, rows = w.rows, chunks = cols / 32, ng = scale_stride(w), ld = row_stride(w);
  constexpr int64_t kChunksPerGroup = kInt4Group / 32;
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  __m512 acc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
  for (int64_t g = 0; g * kChunksPerGroup < chunks; ++g) {
    __m512 lut[R];
    for (int i = 0; i < R; ++i) {
      const int64_t gi = (r0 + i) * ng + g;
      const int z = w.zero ? w.zero[gi] : 8;
      lut[i] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(iota, _mm512_set1_epi32(z))),
                             _mm512_set1_ps(load_bf16_f32(w.scale, gi)));
    }
    const int64_t k1 = (g + 1) * kChunksPerGroup < chunks ? (g + 1) * kChunksPerGroup : chunks;
    for (int64_t k = g * kChunksPerGroup; k < k1; ++k) {
      __m512 lo[R], hi[R];
      for (int i = 0; i < R; ++i) {
        const __m512i b = _mm512_cvtepu8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.q + (r0 + i) * (ld / 2) + k * 16)));
        lo[i] = _mm512_permutexvar_ps(b, lut[i]);
        hi[i] = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), lut[i]);
      }
      for (int t = 0; t < NT; ++t) {
        const __m512 xe = _mm512_loadu_ps(x + t * cols + k * 32), xo = _mm512_loadu_ps(x + t * cols + k * 32 + 16);
        for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(hi[i], xo, _mm512_fmadd_ps(lo[i], xe, acc[i][t]));
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) {
      float tail = 0.0f;
      for (int64_t c = chunks * 32; c < cols; ++c)
        tail += weight_value<QuantFormat::int4>(w, r0 + i, c) * x[t * cols + c];
      y[t * rows + r0 + i] = _mm512_reduce_add_ps(acc[i][t]) + tail;
    }
}

template <int NT>
MB_INT4_TARGET void rows_int4(const CpuMatrix& w, int64_t r0, int64_t r1, const float* x, float* y) {
  int64_t r = r0;
  for (; r + 2 <= r1; r += 2) row_dot_int4<2, NT>(w, r, x, y);
  for (; r < r1; ++r) row_dot_int4<1, NT>(w, r, x, y);
}

MB_INT4_TARGET void row_block_int4_impl(const CpuMatrix& w, int64_t r0, int64_t r1, const void* xv, int n, float* y) {
  for_token_groups(w, static_cast<const float*>(xv), n, y, [&](auto k, const float* xt, float* yt) {
    rows_int4<decltype(k)::value>(w, r0, r1, xt, yt);
  });
}

#undef MB_INT4_TARGET
}  // namespace

void row_block_avx512(const CpuMatrix& w, int64_t r0, int64_t r1, const void* x, int n, float* y) {
  row_block_impl(w, r0, r1, x, n, y);
}

void row_block_avx512_bf16dp(const CpuMatrix& w, int64_t r0, int64_t r1, const void* x, int n, float* y) {
  row_block_bf16dp_impl(w, r0, r1, x, n, y);
}

void row_block_avx512_int4(const CpuMatrix& w, int64_t r0, int64_t r1, const void* x, int n, float* y) {
  row_block_int4_impl(w, r0, r1, x, n, y);
}

}  // namespace moebench::cpu::expert_detail
