// attention.cpp: CPU reference causal GQA attention over a KV cache
// (twin: engine/cuda/attention.cu). Softmax in fp32 with max subtraction;
// scale 1/sqrt(head_dim) as HF's eager attention.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/ops/attend_head.h"
#include "engine/ops/ops.h"

namespace moebench::cpu {

void attention(const float* q, const float* k_cache, const float* v_cache, float* out, int n, int pos0,
               int n_heads, int n_kv, int head_dim) {
  const int group = n_heads / n_kv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int max_len = pos0 + n;
#pragma omp parallel if (static_cast<long>(n) * n_heads * max_len * head_dim > (1L << 16))
  {
    std::vector<float> scores(max_len);
#pragma omp for collapse(2) schedule(static)
    for (int i = 0; i < n; ++i) {
      for (int h = 0; h < n_heads; ++h) {
        const int kvh = h / group;
        const int len = pos0 + i + 1;  // causal: keys 0 .. pos0+i
        const float* qi = q + (static_cast<size_t>(i) * n_heads + h) * head_dim;
        attend_head(qi, len, [](int t) { return t; }, k_cache, v_cache, n_kv, kvh, head_dim, scale, scores.data(),
                    out + (static_cast<size_t>(i) * n_heads + h) * head_dim);
      }
    }
  }
}

}  // namespace moebench::cpu
