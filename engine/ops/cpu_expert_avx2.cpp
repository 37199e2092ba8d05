// cpu_expert_avx2.cpp: the CPU expert's fp32 row kernel with AVX2 + FMA + F16C (8 lanes),
// function-level targets only (engine/ops/cpu_expert_rows.h holds the kernel).
#include <immintrin.h>

#include "engine/ops/cpu_expert_impl.h"

namespace moebench::cpu::expert_detail {
namespace {

#define MB_CPU_TARGET __attribute__((target("avx2,fma,f16c")))

struct V {
  static constexpr int kRows = 1;
  static constexpr int kLanes = 8;
  using vec = __m256;
  MB_CPU_TARGET static vec zero() { return _mm256_setzero_ps(); }
  MB_CPU_TARGET static vec set1(float f) { return _mm256_set1_ps(f); }
  MB_CPU_TARGET static vec loadu(const float* p) { return _mm256_loadu_ps(p); }
  MB_CPU_TARGET static vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  MB_CPU_TARGET static vec fmadd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  MB_CPU_TARGET static float hsum(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  MB_CPU_TARGET static vec bf16(const uint8_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  MB_CPU_TARGET static vec i8(const uint8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  MB_CPU_TARGET static vec i4(const uint8_t* p, int z) {
    int32_t b4;
    __builtin_memcpy(&b4, p, 4);
    const __m128i b = _mm_cvtsi32_si128(b4);
    const __m256i u = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));  // byte i/2 in lane i
    const __m256i nib = _mm256_and_si256(_mm256_srlv_epi32(u, _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4)),
                                         _mm256_set1_epi32(15));
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(nib, _mm256_set1_epi32(z)));
  }
  MB_CPU_TARGET static vec e4m3(const uint8_t* p) {
    // e4m3 s.eeee.mmm -> f16 s.0eeee.mmm0000000: the same digits, 2^8 smaller
    // (subnormals included); cvtph converts exactly.
    const __m128i v = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    const __m128i h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(v, _mm_set1_epi16(0x7f)), 7),
                                   _mm_slli_epi16(_mm_and_si128(v, _mm_set1_epi16(0x80)), 8));
    return _mm256_cvtph_ps(h);
  }
};

#include "engine/ops/cpu_expert_rows.h"

#undef MB_CPU_TARGET
}  // namespace

void row_block_avx2(const CpuMatrix& w, int64_t r0, int64_t r1, const void* x, int n, float* y) {
  row_block_impl(w, r0, r1, x, n, y);
}

}  // namespace moebench::cpu::expert_detail
