// paged_kv.cpp: CPU reference of rope + store into a paged KV pool (twin:
// engine/cuda/paged_kv.cu): rope() of q in place, rope() of k, then k and v copied to
// their slot of the pool.
#include <algorithm>
#include <vector>

#include "engine/ops/ops.h"

namespace moebench::cpu {

void rope_kv_store_paged(float* q, const float* k, const float* v, const int32_t* pos, const int32_t* slot,
                         float* k_pool, float* v_pool, int m, int n_heads, int n_kv, int head_dim, float theta) {
  rope(q, pos, m, n_heads, head_dim, theta);
  const size_t row = static_cast<size_t>(n_kv) * head_dim;
  std::vector<float> kr(k, k + static_cast<size_t>(m) * row);
  rope(kr.data(), pos, m, n_kv, head_dim, theta);
  for (int i = 0; i < m; ++i) {
    std::copy(kr.begin() + static_cast<std::ptrdiff_t>(i * row), kr.begin() + static_cast<std::ptrdiff_t>((i + 1) * row),
              k_pool + static_cast<size_t>(slot[i]) * row);
    std::copy(v + i * row, v + (i + 1) * row, v_pool + static_cast<size_t>(slot[i]) * row);
  }
}

}  // namespace moebench::cpu
