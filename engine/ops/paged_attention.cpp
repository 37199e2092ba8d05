// paged_attention.cpp: CPU reference of batched causal GQA attention over a paged KV
// cache (twin: engine/cuda/paged_attention.cu). Same arithmetic as attention.cpp
// (fp32 softmax with max subtraction, scale 1/sqrt(head_dim)); keys are found through
// the token's block table.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/ops/attend_head.h"
#include "engine/ops/ops.h"

namespace moebench::cpu {

void paged_attention(const float* q, const float* k_pool, const float* v_pool, const int32_t* block_tables,
                     int table_width, const int32_t* seq_row, const int32_t* pos, float* out, int m, int n_heads,
                     int n_kv, int head_dim, int block_size) {
  const int group = n_heads / n_kv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> scores;
  for (int i = 0; i < m; ++i) {
    const int32_t* table = block_tables + static_cast<size_t>(seq_row[i]) * table_width;
    const int len = pos[i] + 1;
    scores.resize(static_cast<size_t>(len));
    auto slot = [&](int t) {
      return static_cast<size_t>(table[t / block_size]) * block_size + static_cast<size_t>(t % block_size);
    };
    for (int h = 0; h < n_heads; ++h) {
      const int kvh = h / group;
      const float* qi = q + (static_cast<size_t>(i) * n_heads + h) * head_dim;
      attend_head(qi, len, slot, k_pool, v_pool, n_kv, kvh, head_dim, scale, scores.data(),
                  out + (static_cast<size_t>(i) * n_heads + h) * head_dim);
    }
  }
}

}  // namespace moebench::cpu
