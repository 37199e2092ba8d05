// dtype.h: element types of checkpoints and device tensors, with bf16/f16/e4m3 <-> f32
// conversions usable on host and device (round-to-nearest-even, NaN kept). The
// integer and fp8 types hold quantised weights and their zero points (engine/quant.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#if defined(__CUDACC__)
#define MB_HD __host__ __device__ inline
#else
#define MB_HD inline
#endif

namespace moebench {

enum class DType { f32, f16, bf16, f8_e4m3, i8, u8, i32, i64 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::i64: return 8;
    case DType::f32:
    case DType::i32: return 4;
    case DType::f16:
    case DType::bf16: return 2;
    default: return 1;
  }
}
// True for f32, f16 and bf16: values that are weights as they stand (the others need
// their scales, engine/quant.h).
inline bool dtype_is_float(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16; }
// Safetensors spelling: "F32", "F16", "BF16", "F8_E4M3", "I8", "U8", "I32".
const char* dtype_name(DType t);
// Parses the safetensors spellings, or "f32|f16|bf16" (CLI); returns false otherwise.
bool parse_dtype(const std::string& s, DType* out);

MB_HD float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
MB_HD uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
MB_HD float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      u = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}
MB_HD uint16_t f32_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  int32_t exp = static_cast<int32_t>((u >> 23) & 0xffu) - 127 + 15;
  uint32_t mant = u & 0x7fffffu;
  if (((u >> 23) & 0xffu) == 0xffu) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;
  return static_cast<uint16_t>(half);
}

// fp8 e4m3 ("e4m3fn": bias 7, no infinities, 0x7f/0xff NaN, largest finite 448).
MB_HD float e4m3_to_f32(uint8_t v) {
  const uint32_t sign = v & 0x80u, exp = (v >> 3) & 0xfu, mant = v & 7u;
  float f;
  if (exp == 15 && mant == 7) {
    uint32_t u = 0x7fc00000u;
    memcpy(&f, &u, 4);
  } else if (exp == 0) {
    f = static_cast<float>(mant) * (1.0f / 512.0f);  // subnormal: mant * 2^-9
  } else {
    uint32_t u = ((exp + 127 - 7) << 23) | (mant << 20);
    memcpy(&f, &u, 4);
  }
  return sign ? -f : f;
}
// Round to nearest even; magnitudes above 448 saturate to 448 (as torch's clamp before
// the cast does), NaN stays NaN.
MB_HD uint8_t f32_to_e4m3(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7f);
  float a;
  memcpy(&a, &u, 4);
  if (a >= 448.0f) return static_cast<uint8_t>(sign | 0x7e);
  if (a < 1.0f / 64.0f) {  // subnormal range: multiples of 2^-9 (8 rounds up to the smallest normal, code 8)
    const float x = a * 512.0f;
    uint32_t q = static_cast<uint32_t>(x);
    const float rem = x - static_cast<float>(q);
    if (rem > 0.5f || (rem == 0.5f && (q & 1u))) ++q;
    return static_cast<uint8_t>(sign | q);
  }
  int32_t e = static_cast<int32_t>(u >> 23) - 127;
  uint32_t m = (u & 0x7fffffu) >> 20, rem = u & 0xfffffu;
  if (rem > 0x80000u || (rem == 0x80000u && (m & 1u))) ++m;
  if (m == 8) {
    m = 0;
    ++e;
  }
  uint32_t code = (static_cast<uint32_t>(e + 7) << 3) | m;
  if (code > 0x7eu) code = 0x7eu;
  return static_cast<uint8_t>(sign | code);
}

// Converts n elements of type t at src to f32 (fp8 and integers: their plain values,
// unscaled).
void to_f32(DType t, const void* src, float* dst, size_t n);
// Converts n f32 values to type t at dst (f32, f16, bf16 or f8_e4m3).
void from_f32(DType t, const float* src, void* dst, size_t n);

}  // namespace moebench
