// sampler.h: next-token choice from logits — greedy (temperature 0; ties go to the
// lowest id) or temperature + top-p (nucleus) sampling from a seeded generator.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"

namespace moebench {

// Logits with a NaN or an infinity: the weights hold non-finite values (or the forward
// pass overflowed). Thrown where logits are consumed, so no token is made up from them;
// generate() adds the step.
class NonFiniteLogits : public Error {
 public:
  using Error::Error;
};

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

// The index of the largest logit (ties to the lowest); throws NonFiniteLogits naming
// the first NaN or infinity.
int32_t argmax(const float* logits, int n);

}  // namespace moebench
