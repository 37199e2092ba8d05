// attend_head.h: the per-head core shared by the CPU attention references
// (attention.cpp over a contiguous cache, paged_attention.cpp over a paged pool):
// softmax(q . k_t * scale) over keys 0..len-1, in fp32 with max subtraction, then the
// weighted sum of the values. `row(t)` is key t's row in the cache (its slot); a row
// holds n_kv heads of head_dim. scores: len floats of scratch.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>

namespace moebench::cpu {

template <class RowOf>
inline void attend_head(const float* qi, int len, RowOf row, const float* k, const float* v, int n_kv, int kvh,
                        int head_dim, float scale, float* scores, float* oi) {
  float mx = -INFINITY;
  for (int t = 0; t < len; ++t) {
    const float* kt = k + (static_cast<size_t>(row(t)) * n_kv + kvh) * head_dim;
    float s = 0;
    for (int d = 0; d < head_dim; ++d) s += qi[d] * kt[d];
    s *= scale;
    scores[t] = s;
    mx = std::max(mx, s);
  }
  float sum = 0;
  for (int t = 0; t < len; ++t) {
    scores[t] = std::exp(scores[t] - mx);
    sum += scores[t];
  }
  const float inv = 1.0f / sum;
  std::fill(oi, oi + head_dim, 0.0f);
  for (int t = 0; t < len; ++t) {
    const float p = scores[t] * inv;
    const float* vt = v + (static_cast<size_t>(row(t)) * n_kv + kvh) * head_dim;
    for (int d = 0; d < head_dim; ++d) oi[d] += p * vt[d];
  }
}

}  // namespace moebench::cpu
