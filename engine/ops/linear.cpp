// linear.cpp: CPU reference y = x @ W^T (twin: engine/cuda/linear.cu, GEMV/GEMM).
// OpenMP over output rows; each dot product accumulates in fp32 with 8 lanes.
// With set_extra_work(F) it also recomputes a share of its rows (the CI gate's test hook).
#include <cmath>

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

thread_local double t_extra_rows = 0.0;  // F - 1: rows recomputed per output row
thread_local double t_extra_carry = 0.0; // the fraction of a row not yet recomputed
// Where recomputed rows go: read by nobody, but a volatile store keeps the compiler
// from dropping the work.
volatile float g_extra_sink = 0.0f;

// Recomputes rows 0, 1, ... of w (wrapping round when F > 2): (F - 1) * out rows per
// call plus the carried fraction, for all n tokens, summed into the sink.
void extra_rows(const float* x, const float* w, int n, int in, int out) {
  t_extra_carry += t_extra_rows * out;
  const int rows = static_cast<int>(std::floor(t_extra_carry));
  t_extra_carry -= rows;
  float s = 0.0f;
  for (int r = 0; r < rows; ++r) {
    const float* wr = w + static_cast<size_t>(r % out) * in;
    for (int i = 0; i < n; ++i) s += dot(x + static_cast<size_t>(i) * in, wr, in);
  }
  g_extra_sink = s;
}
}  // namespace

void set_extra_work(double factor) {
  t_extra_rows = factor > 1.0 ? factor - 1.0 : 0.0;
  t_extra_carry = 0.0;
}
double extra_work() { return 1.0 + t_extra_rows; }

void linear(const float* x, const float* w, float* y, int n, int in, int out) {
  const long work = static_cast<long>(n) * in * out;
#pragma omp parallel for schedule(static) if (work > (1L << 18))
  for (int o = 0; o < out; ++o) {
    const float* wr = w + static_cast<size_t>(o) * in;
    for (int i = 0; i < n; ++i) y[static_cast<size_t>(i) * out + o] = dot(x + static_cast<size_t>(i) * in, wr, in);
  }
  if (t_extra_rows > 0.0) extra_rows(x, w, n, in, out);
}

}  // namespace moebench::cpu
