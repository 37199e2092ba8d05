// synth_rng.h: the counter-based generator behind synthetic weights.
// value(seed, tensor name, index) = fma(scale, u, offset) with u uniform in [-1, 1)
// drawn from splitmix64 of (seed, FNV-1a(name), index): any element can be made
// anywhere (file writer, host, GPU kernel) independently and bit-identically.
#pragma once
#include <cmath>
#include <cstdint>
#include <string_view>

#include "engine/dtype.h"

namespace moebench::synth {

MB_HD uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

inline uint64_t name_hash(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// Per-tensor key: fold seed and the name's hash once.
MB_HD uint64_t tensor_key(uint64_t seed, uint64_t name_h) { return splitmix64(seed ^ splitmix64(name_h)); }

// Uniform in [-1, 1) with 24 random bits (exact in fp32).
MB_HD float uniform(uint64_t key, uint64_t index) {
  uint64_t v = splitmix64(key + index * 0xD1B54A32D192ED03ULL);
  return static_cast<float>(static_cast<int32_t>(v >> 40) - (1 << 23)) * (1.0f / (1 << 23));
}

MB_HD float value(uint64_t key, uint64_t index, float scale, float offset) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(scale, uniform(key, index), offset);
#else
  return std::fma(scale, uniform(key, index), offset);
#endif
}

}  // namespace moebench::synth
