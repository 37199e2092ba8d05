// calibration.cpp: see calibration.h. Deliberately single-threaded and simple.
#include "suites/calibration.h"

#include <algorithm>

namespace moebench::suites {

Calibration::Calibration() : m_(static_cast<size_t>(kRows) * kCols), x_(kCols), y_(kRows) {
  uint32_t s = 12345;
  for (float& v : m_) {
    s = s * 1664525u + 1013904223u;
    v = static_cast<float>(s >> 8) * (1.0f / 16777216.0f) - 0.5f;
  }
  for (int j = 0; j < kCols; ++j) x_[j] = 0.01f * static_cast<float>(j % 17);
}

namespace {
// fp32 dot product with 8 independent lanes (vectorises without reassociation),
// the same shape of work as a CPU matrix-vector product of the engine.
inline float dot8(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int j = 0; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[j + l] * b[j + l];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
}  // namespace

void Calibration::decode() {
  for (int i = 0; i < kRows; ++i) y_[i] = dot8(&m_[static_cast<size_t>(i) * kCols], x_.data(), kCols);
  x_[0] = y_[kRows - 1] * 1e-6f;  // a dependency between steps, so nothing is hoisted
}

void Calibration::prefill(int n_tokens) {
  n_tokens = std::max(1, n_tokens);
  xs_.resize(static_cast<size_t>(n_tokens) * kCols);
  for (int t = 0; t < n_tokens; ++t)
    for (int j = 0; j < kCols; ++j) xs_[static_cast<size_t>(t) * kCols + j] = x_[j] * (1.0f + 0.001f * static_cast<float>(t));
  for (int i = 0; i < kRows; ++i) {  // one pass over the matrix, n_tokens products per row
    const float* r = &m_[static_cast<size_t>(i) * kCols];
    float acc = 0;
    for (int t = 0; t < n_tokens; ++t) acc += dot8(r, &xs_[static_cast<size_t>(t) * kCols], kCols);
    y_[i] = acc;
  }
  x_[0] = y_[kRows - 1] * 1e-6f;
}

float Calibration::checksum() const {
  float s = 0;
  for (int i = 0; i < kRows; i += 997) s += y_[i];
  return s;
}

}  // namespace moebench::suites
