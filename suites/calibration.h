// calibration.h: the reference workload of a suite's `calibration` case. It
// runs no moebench engine code — a plain fp32 matrix-vector loop over a 16 MiB
// matrix (the size of the tiny model's lm_head) — so its timings measure the
// machine (memory bandwidth, load from other processes), not moebench. The CI
// gate divides every case's timings by it (`compare --normalize-by`), so a
// slower or busier machine cancels out while a slower engine does not.
#pragma once
#include <cstdint>
#include <vector>

namespace moebench::suites {

class Calibration {
 public:
  static constexpr int kRows = 32768;  // (rows, cols) fp32 = 16 MiB
  static constexpr int kCols = 128;

  Calibration();
  // One "prefill" step: one pass over the matrix, `n_tokens` products per row.
  void prefill(int n_tokens);
  // One "decode" step: one matrix-vector product.
  void decode();
  float checksum() const;

 private:
  std::vector<float> m_;    // (kRows, kCols)
  std::vector<float> xs_;   // (n_tokens, kCols) prefill inputs
  std::vector<float> x_;    // (kCols)
  std::vector<float> y_;    // (kRows)
};

}  // namespace moebench::suites
