// sampler.cpp: see sampler.h.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace moebench {

void validate_sampling(const SamplingParams& p) {
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature))
    fail("temperature {} must be a finite number >= 0", p.temperature);
  if (!(p.top_p > 0 && p.top_p <= 1)) fail("top-p {} must be in (0, 1]", p.top_p);
}

int32_t argmax(const float* logits, int n) {
  int32_t best = 0;
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(logits[i]))
      throw NonFiniteLogits(fmt::format("logit {} of {} is {}: the model gave non-finite logits (NaN or Inf in "
                                        "the weights, or an overflow)",
                                        i, n, logits[i]));
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

int32_t Sampler::sample(const float* logits, int vocab) {
  if (p_.temperature == 0.0f) return argmax(logits, vocab);
  float mx = logits[argmax(logits, vocab)];
  buf_.resize(vocab);
  double sum = 0;
  for (int i = 0; i < vocab; ++i) {
    float pr = std::exp((logits[i] - mx) / p_.temperature);
    buf_[i] = {pr, i};
    sum += pr;
  }
  std::sort(buf_.begin(), buf_.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  // Keep the smallest prefix whose mass reaches top_p.
  double cum = 0;
  size_t keep = 0;
  while (keep < buf_.size()) {
    cum += buf_[keep].first / sum;
    ++keep;
    if (cum >= p_.top_p) break;
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += buf_[i].first;
  double r = std::uniform_real_distribution<double>(0.0, kept)(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= buf_[i].first;
    if (r < 0) return buf_[i].second;
  }
  return buf_[keep - 1].second;
}

}  // namespace moebench
