// prediction.cpp: see prediction.h.
#include "variants/prediction.h"

namespace moebench {

void degrade_prediction(std::span<const int32_t> truth, int top_k, int n_experts, double accuracy, Rng& rng,
                        std::vector<int32_t>& out) {
  out.assign(truth.begin(), truth.end());
  if (accuracy >= 1.0) return;
  const int k = top_k;
  if (k >= n_experts) return;  // nothing else to predict
  for (size_t tok = 0; tok + k <= out.size(); tok += k) {
    for (int j = 0; j < k; ++j) {
      if (rng.uniform() < accuracy) continue;
      for (;;) {  // a random expert outside the token's true top-k and not already predicted
        const int32_t e = rng.below(n_experts);
        bool clash = false;
        for (int i = 0; i < k; ++i) clash |= truth[tok + i] == e || out[tok + i] == e;
        if (!clash) {
          out[tok + j] = e;
          break;
        }
      }
    }
  }
}

}  // namespace moebench
