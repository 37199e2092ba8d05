// rope.cpp: CPU reference rotary embedding, rotate-half convention (twin: engine/cuda/rope.cu).
// HF computes inv_freq = 1 / theta^(2j/d) in fp32 and cos/sin of (pos * inv_freq) in fp32.
#include <cmath>

#include "engine/ops/ops.h"

namespace moebench::cpu {

void rope(float* x, const int32_t* pos, int n, int heads, int head_dim, float theta) {
  const int half = head_dim / 2;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < half; ++j) {
      float inv_freq = 1.0f / std::pow(theta, static_cast<float>(2 * j) / static_cast<float>(head_dim));
      float ang = static_cast<float>(pos[i]) * inv_freq;
      float c = std::cos(ang), s = std::sin(ang);
      for (int h = 0; h < heads; ++h) {
        float* v = x + (static_cast<size_t>(i) * heads + h) * head_dim;
        float a = v[j], b = v[j + half];
        v[j] = a * c - b * s;
        v[j + half] = b * c + a * s;
      }
    }
  }
}

}  // namespace moebench::cpu
