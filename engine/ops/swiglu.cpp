// swiglu.cpp: CPU reference of one SwiGLU expert (twin: engine/cuda/swiglu.cu):
// out = w2 @ (silu(w1 @ x) * (w3 @ x)), as HF MixtralBlockSparseTop2MLP.
#include <cmath>

#include "engine/ops/ops.h"

namespace moebench::cpu {

void swiglu_expert(const float* x, const float* w1, const float* w3, const float* w2, float* out,
                   float* scratch, int n, int hidden, int inter) {
  float* g = scratch;                                // (n, inter)
  float* u = scratch + static_cast<size_t>(n) * inter;  // (n, inter)
  linear(x, w1, g, n, hidden, inter);
  linear(x, w3, u, n, hidden, inter);
  const size_t total = static_cast<size_t>(n) * inter;
  for (size_t i = 0; i < total; ++i) {
    float a = g[i];
    g[i] = (a / (1.0f + std::exp(-a))) * u[i];
  }
  linear(g, w2, out, n, inter, hidden);
}

}  // namespace moebench::cpu
