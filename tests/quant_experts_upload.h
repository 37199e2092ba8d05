// quant_experts_upload.h: E experts of one (rows x cols) matrix each, drawn from N(0, 0.05)
// (the experts in order, each row-major), quantised on the host in format f (with zero
// points where asked; int4 in the paired word order where asked) and uploaded into an
// arena, their parts' device addresses in tables of E entries. For the CUDA tests of the
// quantised MoE launches; only for test files built with CUDA.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <random>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/quant_dequant.h"
#include "engine/cuda/quant_gemv.h"
#include "engine/quant.h"
#include "tests/device_copy.h"

namespace moebench::test {

inline cuda::QuantExperts upload_random_experts(cuda::DeviceArena& arena, QuantFormat f, int rows, int cols, int E,
                                                bool zero_points, bool paired, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<const uint8_t*> q(E), sc(E), zp(E);
  for (int e = 0; e < E; ++e) {
    std::vector<float> w(static_cast<size_t>(rows) * cols);
    for (auto& v : w) v = nd(rng);
    const QuantMatrix m = quantize(f, w.data(), rows, cols, zero_points);
    uint8_t* qd = upload(arena, m.q);
    if (paired) cuda::int4_pair_words(qd, static_cast<int64_t>(m.q.size()), nullptr);
    q[e] = qd;
    sc[e] = upload(arena, m.scale);
    zp[e] = zero_points ? upload(arena, m.zero) : nullptr;
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  cuda::QuantExperts qe;
  qe.format = f;
  qe.q = upload(arena, q);
  qe.scale = upload(arena, sc);
  qe.zero = zero_points ? upload(arena, zp) : nullptr;
  qe.int4_paired = paired;
  qe.n_experts = E;
  return qe;
}

}  // namespace moebench::test
