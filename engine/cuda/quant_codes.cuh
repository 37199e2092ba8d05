// quant_codes.cuh: how a stored format's 16-byte chunk becomes tensor-core operands
// (.cu only): the exact code -> bf16 conversions of int8, fp8 and int4 (stored or paired
// word order), the scale words of a super-step (4 chunks), and the matching activation
// registers. Shared by the tile kernels (quant_gemv.cu) and the warp-row kernels
// (quant_gemv_rows.cu).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <cstring>

#include "engine/quant.h"

namespace moebench::cuda::qcodes {

// The same 32 bits as another type (a bf16 or fp16 pair and its bits, either way).
template <typename To, typename From>
__device__ __forceinline__ To bits32(From v) {
  static_assert(sizeof(To) == 4 && sizeof(From) == 4, "32-bit values");
  To u;
  memcpy(&u, &v, 4);
  return u;
}
__device__ __forceinline__ uint32_t bf16x2_bits(__nv_bfloat162 v) { return bits32<uint32_t>(v); }
__device__ __forceinline__ __nv_bfloat162 bits_bf16x2(uint32_t u) { return bits32<__nv_bfloat162>(u); }
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  return bf16x2_bits(__floats2bfloat162_rn(lo, hi));
}
__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
// (a & b) | c as ONE lop3. Written in C++ with b and c constants, the compiler emits an AND
// and an OR (a LOP3 takes one immediate): twice the integer instructions of the int4
// conversions, on the integer pipe that bounds those kernels (docs/QUANT.md).
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t v;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(v) : "r"(a), "r"(b), "r"(c));
  return v;
}

// Per format: kValues codes per 16-byte chunk; kDepth super-steps whose weight loads
// are issued together; kScaled: whether a scale multiplies each
// super-step's sum (else the sums go straight into the totals); raw(): the loads of the
// scale words of row `row` for super-step ss, as loaded (no arithmetic on them, so that
// issuing them stalls nothing); row(): what the loop needs from them;
// mma step s (of kValues / 4) of a chunk as A registers (lo: k slots 2t, 2t+1; hi: 2t+8,
// 2t+9) and the matching activation registers from the chunk's kValues / 2 x words.
// kPaired (int4 only): the codes in the paired word order (int4_pair_words).
template <QuantFormat F, bool kPaired = false>
struct Codes;

// Step s takes the chunk's elements 4s .. 4s + 3 in memory order, and so the activations.
struct InOrder {
  struct Row {
    float s;
  };
  using Raw = float;
  __device__ static Row row(Raw r) { return {r}; }
  __device__ static void b_regs(const uint32_t* xw, int s, uint32_t& b0, uint32_t& b1) {
    b0 = xw[2 * s];
    b1 = xw[2 * s + 1];
  }
};

// bf16 weights: the codes are the weights, 8 per chunk.
template <>
struct Codes<QuantFormat::bf16> : InOrder {
  static constexpr int kValues = 8;
  static constexpr int kDepth = 8;  // super-steps whose weight loads are issued together
  static constexpr bool kScaled = false;
  __device__ static Raw raw(const uint8_t*, const uint8_t*, int, int, int) { return 1.0f; }
  __device__ static void a_regs(const uint4& raw, int s, const Row&, uint32_t& lo, uint32_t& hi) {
    lo = word(raw, 2 * s);
    hi = word(raw, 2 * s + 1);
  }
};

// int8, per-row fp32 scale. Code byte i = q_i; q + 128 = byte ^ 0x80 goes into the low
// mantissa bits of 2^23 (0x4B000000) and 2^23 + 128 comes off again: exact, no I2F.
template <>
struct Codes<QuantFormat::int8> : InOrder {
  static constexpr int kValues = 16;
  static constexpr int kDepth = 4;
  static constexpr bool kScaled = true;
  __device__ static Raw raw(const uint8_t* scale, const uint8_t*, int row, int, int) {
    return __ldg(reinterpret_cast<const float*>(scale) + row);
  }
  // The plain loop's scale words (no zero points): scale_at(scale, row, s0, K) the address of
  // super-step s0's, raw_at(p, d) for super-step s0 + d, d even (what raw() loads for it).
  __device__ static const uint8_t* scale_at(const uint8_t* scale, int row, int, int) { return scale + 4 * row; }
  __device__ static Raw raw_at(const uint8_t* p, int) { return __ldg(reinterpret_cast<const float*>(p)); }
  __device__ static float code(uint32_t biased, int i) {
    return __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7440u + i)) - 8388736.0f;  // 2^23 + 128
  }
  __device__ static void a_regs(const uint4& raw, int s, const Row&, uint32_t& lo, uint32_t& hi) {
    const uint32_t b = word(raw, s) ^ 0x80808080u;
    lo = pack_bf16x2(code(b, 0), code(b, 1));
    hi = pack_bf16x2(code(b, 2), code(b, 3));
  }
};

// fp8 e4m3, fp32 scale per 128x128 block; e4m3 -> f16 (hardware) -> fp32 -> bf16, exact.
template <>
struct Codes<QuantFormat::fp8> : InOrder {
  static constexpr int kValues = 16;
  static constexpr int kDepth = 4;
  static constexpr bool kScaled = true;
  __device__ static Raw raw(const uint8_t* scale, const uint8_t*, int row, int ss, int K) {
    const int cb = (K + static_cast<int>(kFp8Block) - 1) / static_cast<int>(kFp8Block);
    const int block = (ss * 4 * kValues) / static_cast<int>(kFp8Block);
    return __ldg(reinterpret_cast<const float*>(scale) + (row / static_cast<int>(kFp8Block)) * cb + block);
  }
  // Super-step ss's block is ss / 2 (64 inputs a super-step), and (s0 + d) / 2 = s0 / 2 + d / 2
  // for even d.
  static_assert(4 * kValues * 2 == kFp8Block, "two super-steps a 128-input block");
  __device__ static const uint8_t* scale_at(const uint8_t* scale, int row, int s0, int K) {
    const int cb = (K + static_cast<int>(kFp8Block) - 1) / static_cast<int>(kFp8Block);
    return scale + 4 * ((row / static_cast<int>(kFp8Block)) * cb + s0 / 2);
  }
  __device__ static Raw raw_at(const uint8_t* p, int d) { return __ldg(reinterpret_cast<const float*>(p) + d / 2); }
  __device__ static uint32_t pair(uint32_t w16) {
    const float2 f = __half22float2(
        __half2(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w16), __NV_E4M3)));
    return pack_bf16x2(f.x, f.y);
  }
  __device__ static void a_regs(const uint4& raw, int s, const Row&, uint32_t& lo, uint32_t& hi) {
    const uint32_t w = word(raw, s);
    lo = pair(w & 0xffffu);
    hi = pair(w >> 16);
  }
};

// int4, bf16 scale and optional zero point per group of 128 inputs of a row; element 2i
// in the low nibble of byte i, 2i + 1 in the high one. A 32-bit word holds elements
// e0..e7; (w >> 4j) & 0x000F000F puts e_j and e_{j+4} into the low mantissa bits of two
// bf16 128.0s (0x4300), and subtracting 128 + zero leaves q - zero exactly. Step 2v of
// word v takes (e0, e4 | e1, e5), step 2v + 1 (e2, e6 | e3, e7); the activations are
// paired the same way with byte permutes.
template <>
struct Codes<QuantFormat::int4> {
  static constexpr int kValues = 32;
  static constexpr int kDepth = 4;
  static constexpr bool kScaled = true;
  struct Row {
    float s;
    uint32_t bias;  // bf16x2 (128 + zero, 128 + zero)
  };
  struct Raw {
    uint32_t s, z;  // the scale's bf16 bits, the zero point (8: symmetric)
  };
  __device__ static Raw raw(const uint8_t* scale, const uint8_t* zero, int row, int ss, int K) {
    const int groups = (K + static_cast<int>(kInt4Group) - 1) / static_cast<int>(kInt4Group);
    const int g = row * groups + ss;
    return {__ldg(reinterpret_cast<const unsigned short*>(scale) + g), zero ? __ldg(zero + g) : 8u};
  }
  // The plain loop's (symmetric: zero point 8): one group a super-step.
  __device__ static const uint8_t* scale_at(const uint8_t* scale, int row, int s0, int K) {
    const int groups = (K + static_cast<int>(kInt4Group) - 1) / static_cast<int>(kInt4Group);
    return scale + 2 * (row * groups + s0);  // the index raw() takes, in 32 bits as there
  }
  __device__ static Raw raw_at(const uint8_t* p, int d) {
    return {__ldg(reinterpret_cast<const unsigned short*>(p) + d), 8u};
  }
  __device__ static Row row(Raw r) {
    const uint32_t b = 0x4300u + r.z;  // bf16 of 128 + z (z <= 15)
    return {__uint_as_float(r.s << 16), b | (b << 16)};
  }
  // (w >> shift) & 0x000F000F | 0x43004300 (one lop3, and_or), minus 128 + zero.
  __device__ static uint32_t nibbles(uint32_t w, int shift, uint32_t bias) {
    return bf16x2_bits(__hsub2(bits_bf16x2(and_or(w >> shift, 0x000F000Fu, 0x43004300u)), bits_bf16x2(bias)));
  }
  __device__ static void a_regs(const uint4& raw, int s, const Row& r, uint32_t& lo, uint32_t& hi) {
    const uint32_t w = word(raw, s >> 1);
    const int sh = (s & 1) * 8;
    lo = nibbles(w, sh, r.bias);
    hi = nibbles(w, sh + 4, r.bias);
  }
  __device__ static void b_regs(const uint32_t* xw, int s, uint32_t& b0, uint32_t& b1) {
    const uint32_t* x8 = xw + 4 * (s >> 1);  // x of the word's 8 elements: (x0,x1) (x2,x3) (x4,x5) (x6,x7)
    const uint32_t a = x8[s & 1], c = x8[2 + (s & 1)];
    b0 = __byte_perm(a, c, 0x5410u);  // (x0, x4) or (x2, x6)
    b1 = __byte_perm(a, c, 0x7632u);  // (x1, x5) or (x3, x7)
  }
};

// int4 in the paired word order (int4_pair_words: e_2j at nibble j, e_2j+1 at j + 4): the
// same shifts and masks give (e0, e1 | e2, e3) for step 2v and (e4, e5 | e6, e7) for 2v + 1,
// the order of the activations in memory, so their words go to the mma as loaded (no
// byte permutes). The products are the same; the mma adds them in another grouping.
template <>
struct Codes<QuantFormat::int4, true> : Codes<QuantFormat::int4, false> {
  __device__ static void b_regs(const uint32_t* xw, int s, uint32_t& b0, uint32_t& b1) {
    InOrder::b_regs(xw, s, b0, b1);
  }
};

// The fp16 form of the codes (the exact warp kernels' default, quant_gemv_rows.cu): the
// same exact values as Codes<F, kPaired>, as fp16 pairs for mma.f16 with activations that
// were scaled per row by a power of two into fp16 (stage_half). fp16's 10-bit mantissa
// takes a byte or two nibbles where bf16's 7 bits take one nibble, so the conversions are
// shorter (per 32-bit word of codes, integer-pipe instructions: int8 1 xor + 2 permutes
// against 4 permutes, 4 fp32 subtractions and 2 packs; fp8 one hardware e4m3x2 -> f16x2
// conversion a pair against that plus two f16 -> f32 and a pack; int4 1 shift + 4 lop3
// against 3 + 4). Every code is an integer or an e4m3 value, exact in fp16 as in bf16.
// The activations and the weights' scales are those of Codes; b_regs moves 16-bit
// elements, whatever they hold.
__device__ __forceinline__ uint32_t half2_bits(__half2 v) { return bits32<uint32_t>(v); }
__device__ __forceinline__ __half2 bits_half2(uint32_t u) { return bits32<__half2>(u); }

template <QuantFormat F, bool kPaired = false>
struct Codes16;

// int8: (q + 128) into the low mantissa bits of fp16 1024.0 (0x6400, one ulp = 1), then
// 1024 + 128 subtracted: q exactly.
template <>
struct Codes16<QuantFormat::int8> : Codes<QuantFormat::int8> {
  __device__ static void a_regs(const uint4& raw, int s, const Row&, uint32_t& lo, uint32_t& hi) {
    const uint32_t b = word(raw, s) ^ 0x80808080u;
    const __half2 bias = bits_half2(0x64806480u);  // 1152 = 1024 + 128
    lo = half2_bits(__hsub2(bits_half2(__byte_perm(b, 0x64646464u, 0x5140u)), bias));
    hi = half2_bits(__hsub2(bits_half2(__byte_perm(b, 0x64646464u, 0x7362u)), bias));
  }
};

// fp8 e4m3: the hardware's e4m3x2 -> f16x2, exact.
template <>
struct Codes16<QuantFormat::fp8> : Codes<QuantFormat::fp8> {
  __device__ static uint32_t pair(uint32_t w16) {
    return bits32<uint32_t>(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w16), __NV_E4M3));
  }
  __device__ static void a_regs(const uint4& raw, int s, const Row&, uint32_t& lo, uint32_t& hi) {
    const uint32_t w = word(raw, s);
    lo = pair(w & 0xffffu);
    hi = pair(w >> 16);
  }
};

// int4: a word's nibbles j and j + 4 sit in bits 4j and 16 + 4j. Masked with 0x000F000F
// and or-ed into 1024.0 they give 1024 + q (nibbles 0 / 4); masked with 0x00F000F0,
// 1024 + 16 q (nibbles 1 / 5), which one fma by 1/16 minus 64 + zero takes to q - zero
// exactly; the word shifted by 8 gives nibbles 2 / 6 and 3 / 7 the same way. The pairs
// are Codes<int4>'s: step 2v takes (e0, e4 | e1, e5), step 2v + 1 (e2, e6 | e3, e7).
template <bool kPaired>
struct Codes16Int4 : Codes<QuantFormat::int4, kPaired> {
  using Base = Codes<QuantFormat::int4, kPaired>;
  using Raw = typename Base::Raw;
  struct Row {
    float s;
    uint32_t lo, hi;  // fp16x2 (1024 + zero), -(64 + zero)
  };
  __device__ static Row row(Raw r) {
    const uint32_t lo = 0x6400u + r.z, hi = 0xD400u + 16u * r.z;  // 64 + z: one ulp is 1/16
    return {__uint_as_float(r.s << 16), lo | (lo << 16), hi | (hi << 16)};
  }
  __device__ static void a_regs(const uint4& raw, int s, const Row& r, uint32_t& lo, uint32_t& hi) {
    const uint32_t w = word(raw, s >> 1) >> ((s & 1) * 8);
    lo = half2_bits(__hsub2(bits_half2(and_or(w, 0x000F000Fu, 0x64006400u)), bits_half2(r.lo)));
    hi = half2_bits(__hfma2(bits_half2(and_or(w, 0x00F000F0u, 0x64006400u)), bits_half2(0x2C002C00u),
                            bits_half2(r.hi)));  // x 1/16
  }
};
template <>
struct Codes16<QuantFormat::int4, false> : Codes16Int4<false> {};
template <>
struct Codes16<QuantFormat::int4, true> : Codes16Int4<true> {};

}  // namespace moebench::cuda::qcodes
