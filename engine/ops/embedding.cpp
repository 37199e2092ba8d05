// embedding.cpp: CPU reference of the token-embedding lookup (twin: engine/cuda/embedding.cu).
#include <cstring>

#include "engine/ops/ops.h"

namespace moebench::cpu {

void embedding(const float* table, const int32_t* ids, float* out, int n, int dim) {
  for (int i = 0; i < n; ++i) std::memcpy(out + static_cast<size_t>(i) * dim, table + static_cast<size_t>(ids[i]) * dim, sizeof(float) * dim);
}

void add_inplace(float* x, const float* y, int n, int dim) {
  size_t total = static_cast<size_t>(n) * dim;
  for (size_t i = 0; i < total; ++i) x[i] += y[i];
}

}  // namespace moebench::cpu
