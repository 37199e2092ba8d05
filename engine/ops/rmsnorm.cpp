// rmsnorm.cpp: CPU reference RMSNorm (twin: engine/cuda/rmsnorm.cu). Matches HF
// MixtralRMSNorm: variance in fp32, x * rsqrt(var + eps) * weight.
#include <cmath>

#include "engine/ops/ops.h"

namespace moebench::cpu {

void rmsnorm(const float* x, const float* w, float* out, int n, int dim, float eps) {
  for (int i = 0; i < n; ++i) {
    const float* xi = x + static_cast<size_t>(i) * dim;
    float* oi = out + static_cast<size_t>(i) * dim;
    double ss = 0;
    for (int j = 0; j < dim; ++j) ss += static_cast<double>(xi[j]) * xi[j];
    float inv = 1.0f / std::sqrt(static_cast<float>(ss / dim) + eps);
    for (int j = 0; j < dim; ++j) oi[j] = (xi[j] * inv) * w[j];
  }
}

}  // namespace moebench::cpu
