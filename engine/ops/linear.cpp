// linear.cpp: CPU reference y = x @ W^T (twin: engine/cuda/linear.cu, GEMV/GEMM).
// OpenMP over output rows; each dot product accumulates in fp32 with 8 lanes.
#include "engine/ops/ops.h"

namespace moebench::cpu {

namespace {
inline float dot(const float* a, const float* b, int len) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= len; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[j + l] * b[j + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; j < len; ++j) s += a[j] * b[j];
  return s;
}
}  // namespace

void linear(const float* x, const float* w, float* y, int n, int in, int out) {
  const long work = static_cast<long>(n) * in * out;
#pragma omp parallel for schedule(static) if (work > (1L << 18))
  for (int o = 0; o < out; ++o) {
    const float* wr = w + static_cast<size_t>(o) * in;
    for (int i = 0; i < n; ++i) y[static_cast<size_t>(i) * out + o] = dot(x + static_cast<size_t>(i) * in, wr, in);
  }
}

}  // namespace moebench::cpu
