// sampler.h: next-token choice from logits — greedy (temperature 0; ties go to the
// lowest id) or temperature + top-p (nucleus) sampling from a seeded generator.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace moebench {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  float top_p = 1.0f;        // (0, 1]
  uint64_t seed = 0;
};

// Checks ranges; throws Error naming the bad value.
void validate_sampling(const SamplingParams& p);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {}
  int32_t sample(const float* logits, int vocab);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> buf_;
};

int32_t argmax(const float* logits, int n);

}  // namespace moebench
