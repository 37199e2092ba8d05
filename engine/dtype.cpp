// dtype.cpp: see dtype.h.
#include "engine/dtype.h"

namespace moebench {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::f8_e4m3: return "F8_E4M3";
    case DType::i8: return "I8";
    case DType::u8: return "U8";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
  }
  return "?";
}

bool parse_dtype(const std::string& s, DType* out) {
  if (s == "F32" || s == "f32" || s == "float32") *out = DType::f32;
  else if (s == "F16" || s == "f16" || s == "float16") *out = DType::f16;
  else if (s == "BF16" || s == "bf16" || s == "bfloat16") *out = DType::bf16;
  else if (s == "F8_E4M3") *out = DType::f8_e4m3;
  else if (s == "I8") *out = DType::i8;
  else if (s == "U8") *out = DType::u8;
  else if (s == "I32") *out = DType::i32;
  else if (s == "I64") *out = DType::i64;
  else return false;
  return true;
}

// Checkpoint tensors sit wherever the file puts them: a safetensors header of odd
// length leaves every 16-bit element on an odd address. Elements are therefore
// loaded and stored through memcpy (one unaligned move on x86), never through a
// uint16_t pointer, which would be undefined behaviour there.
namespace {
inline uint16_t load_u16(const uint8_t* p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return h;
}
inline void store_u16(uint8_t* p, uint16_t h) { memcpy(p, &h, 2); }
}  // namespace

void to_f32(DType t, const void* src, float* dst, size_t n) {
  if (n == 0) return;  // an empty tensor's buffers may be null, which memcpy does not allow
  if (t == DType::f32) {
    memcpy(dst, src, n * 4);
    return;
  }
  if (!dtype_is_float(t)) {
    const auto* b = static_cast<const uint8_t*>(src);
    for (size_t i = 0; i < n; ++i) {
      switch (t) {
        case DType::f8_e4m3: dst[i] = e4m3_to_f32(b[i]); break;
        case DType::i8: dst[i] = static_cast<int8_t>(b[i]); break;
        case DType::u8: dst[i] = b[i]; break;
        case DType::i64: {
          int64_t v;
          memcpy(&v, b + 8 * i, 8);
          dst[i] = static_cast<float>(v);
          break;
        }
        default: {
          int32_t v;
          memcpy(&v, b + 4 * i, 4);
          dst[i] = static_cast<float>(v);
        }
      }
    }
    return;
  }
  const uint8_t* s = static_cast<const uint8_t*>(src);
  if (t == DType::bf16) {
#pragma omp parallel for if (n > (1u << 16))
    for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(s + 2 * i));
  } else {
#pragma omp parallel for if (n > (1u << 16))
    for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(s + 2 * i));
  }
}

void from_f32(DType t, const float* src, void* dst, size_t n) {
  if (n == 0) return;
  if (t == DType::f32) {
    memcpy(dst, src, n * 4);
    return;
  }
  if (t == DType::f8_e4m3) {
    auto* d = static_cast<uint8_t*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = f32_to_e4m3(src[i]);
    return;
  }
  uint8_t* d = static_cast<uint8_t*>(dst);
  if (t == DType::bf16) {
    for (size_t i = 0; i < n; ++i) store_u16(d + 2 * i, f32_to_bf16(src[i]));
  } else {
    for (size_t i = 0; i < n; ++i) store_u16(d + 2 * i, f32_to_f16(src[i]));
  }
}

}  // namespace moebench
