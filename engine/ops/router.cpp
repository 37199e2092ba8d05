// router.cpp: CPU reference MoE router (twin: engine/cuda/router.cu): softmax over
// experts in fp32, top-k descending with ties to the lower index (torch.topk order
// on distinct values), weights renormalised to sum to 1 (Mixtral) or kept as softmax
// probabilities (norm_topk_prob false).
#include <algorithm>
#include <cmath>

#include "engine/ops/ops.h"

namespace moebench::cpu {

void router_topk(const float* logits, int32_t* ids, float* weights, int n, int n_experts, int k, bool renormalise) {
  for (int i = 0; i < n; ++i) {
    const float* li = logits + static_cast<size_t>(i) * n_experts;
    float mx = li[0];
    for (int e = 1; e < n_experts; ++e) mx = std::max(mx, li[e]);
    float probs[256];
    float sum = 0;
    for (int e = 0; e < n_experts; ++e) {
      probs[e] = std::exp(li[e] - mx);
      sum += probs[e];
    }
    for (int e = 0; e < n_experts; ++e) probs[e] /= sum;
    uint64_t taken[4] = {0, 0, 0, 0};  // bitset over up to 256 experts
    float wsum = 0;
    for (int j = 0; j < k; ++j) {
      int best = -1;
      for (int e = 0; e < n_experts; ++e) {
        if (taken[e >> 6] >> (e & 63) & 1) continue;
        if (best < 0 || probs[e] > probs[best]) best = e;
      }
      taken[best >> 6] |= 1ULL << (best & 63);
      ids[static_cast<size_t>(i) * k + j] = best;
      weights[static_cast<size_t>(i) * k + j] = probs[best];
      wsum += probs[best];
    }
    if (renormalise)
      for (int j = 0; j < k; ++j) weights[static_cast<size_t>(i) * k + j] /= wsum;
  }
}

void router_reweight(const float* logits, const int32_t* ids, float* weights, int n, int n_experts, int k,
                     bool renormalise) {
  for (int i = 0; i < n; ++i) {
    const float* li = logits + static_cast<size_t>(i) * n_experts;
    float mx = li[0];
    for (int e = 1; e < n_experts; ++e) mx = std::max(mx, li[e]);
    float sum = 0;
    for (int e = 0; e < n_experts; ++e) sum += std::exp(li[e] - mx);
    float wsum = 0;
    for (int j = 0; j < k; ++j) {
      float p = std::exp(li[ids[static_cast<size_t>(i) * k + j]] - mx) / sum;
      weights[static_cast<size_t>(i) * k + j] = p;
      wsum += p;
    }
    if (renormalise)
      for (int j = 0; j < k; ++j) weights[static_cast<size_t>(i) * k + j] /= wsum;
  }
}

}  // namespace moebench::cpu
