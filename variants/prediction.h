// prediction.h: the simulated prefetch predictor shared by the simulator and the
// engine (when routing comes from a synthetic source or a trace, the next layer's gate
// cannot predict it). Given the true choices of layer L+1, each predicted id is kept
// with probability `accuracy`, otherwise replaced by a random expert outside the
// token's true top-k and not already predicted. accuracy 1 is the oracle. The same
// seed and the same call order give the same predictions in both.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "variants/rng.h"

namespace moebench {

// truth: (n_tokens, top_k) flat; out gets the predictions in the same layout.
void degrade_prediction(std::span<const int32_t> truth, int top_k, int n_experts, double accuracy, Rng& rng,
                        std::vector<int32_t>& out);

// The predictor's generator for a run seeded `seed` (one stream, consumed step-major,
// layer-minor).
inline Rng prediction_rng(uint64_t seed) { return Rng(mix_seed(seed, 0x9ef, 0)); }

}  // namespace moebench
