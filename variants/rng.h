// rng.h: the one small random generator of the synthetic parts (routing sources,
// simulated predictions). splitmix64: fast and identical on every platform, unlike
// the std distributions, so a seed gives the same trace everywhere.
#pragma once
#include <cstdint>

namespace moebench {

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed = 0) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  int below(int n) { return static_cast<int>(uniform() * n); }                                 // [0, n)
};

// Derives an independent seed for stream (a, b) of `seed`.
inline uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b) {
  Rng r(seed ^ (a * 0x9E3779B97F4A7C15ULL) ^ (b * 0xC2B2AE3D27D4EB4FULL));
  r.next();
  return r.next();
}

}  // namespace moebench
