// quant_cuda_test.cpp: the dequantising decode GEMV over selected experts
// (engine/cuda/quant_gemv.h) against the CPU reference: dequantize() (engine/quant.h)
// then an fp32 dot product in double, for int8, int4 (symmetric and with zero points)
// and fp8 (and one int8 / fp8 matrix through linear_weight, weight_dtype's path), with odd row counts, partial fp8 blocks / int4 groups, several tokens
// sharing an expert, inputs per token (w1/w3) and per pair (w2). Skipped, with a
// message, when no GPU is present.
// Tolerance: the reference multiplies the dequantised fp32 weights (code x scale, rounded
// to fp32) by the bf16 activations and sums in double; the GPU multiplies the codes by
// the activations exactly, sums them in fp32 per scale group (tensor cores), scales each
// group's sum and adds the groups and its warps' parts in fp32, in its own order. Each
// way rounds every term a bounded number of times, far fewer than K, so
// |got - ref| <= K * 2^-24 * sum |w x| (the recursive-summation bound with fp32's unit
// roundoff, K terms) + 1e-30 holds. A wrong scale, nibble, block or k slot shows up far
// above it.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/cuda/check.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/blas.h"
#include "engine/cuda/quant_gemv.h"
#include "engine/cuda/quant_linear.h"
#include "engine/dtype.h"
#include "common/error.h"
#include "engine/quant.h"

using namespace moebench;

namespace {

struct DeviceBuffers {  // frees what it uploaded
  std::vector<void*> ptrs;
  ~DeviceBuffers() {
    for (void* p : ptrs) cudaFree(p);
  }
  template <typename T>
  T* up(const T* src, size_t n) {
    void* d = nullptr;
    CUDA_CHECK(cudaMalloc(&d, std::max<size_t>(n * sizeof(T), 16)));
    CUDA_CHECK(cudaMemcpy(d, src, n * sizeof(T), cudaMemcpyHostToDevice));
    ptrs.push_back(d);
    return static_cast<T*>(d);
  }
  template <typename T>
  T* up(const std::vector<T>& v) {
    return up(v.data(), v.size());
  }
};

void run_case(QuantFormat f, bool zero_points, int N, int K, int E, const std::vector<int32_t>& ids, int k,
              bool x_per_pair, uint32_t seed, cuda::QuantGemvShape shape = {}) {
  SCOPED_TRACE(testing::Message() << quant_format_name(f) << (zero_points ? " zp" : "") << " N=" << N << " K=" << K
                                  << (x_per_pair ? " per pair" : " per token") << " warps " << shape.warps
                                  << " depth " << shape.depth << " tiles " << shape.tiles
                                  << (shape.pipe ? " pipelined" : ""));
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  const int pairs = static_cast<int>(ids.size()), n_x = x_per_pair ? pairs : pairs / k;
  DeviceBuffers dev;
  std::vector<QuantMatrix> mats;
  std::vector<const uint8_t*> q(E), sc(E), zp(E);
  for (int e = 0; e < E; ++e) {
    std::vector<float> w(static_cast<size_t>(N) * K);
    for (auto& v : w) v = nd(g);
    w[static_cast<size_t>(e) * 7] = 0.8f;  // an outlier per expert
    mats.push_back(quantize(f, w.data(), N, K, zero_points));
    q[e] = dev.up(mats.back().q);
    sc[e] = dev.up(mats.back().scale);
    zp[e] = zero_points ? dev.up(mats.back().zero) : nullptr;
  }
  std::vector<uint16_t> xb(static_cast<size_t>(n_x) * K);
  for (auto& v : xb) v = f32_to_bf16(nd(g) * 20);
  cuda::QuantExperts qe;
  qe.format = f;
  qe.q = dev.up(q);
  qe.scale = dev.up(sc);
  qe.zero = zero_points ? dev.up(zp) : nullptr;
  const auto* x = reinterpret_cast<const __nv_bfloat16*>(dev.up(xb));
  const int32_t* d_ids = dev.up(ids);
  std::vector<float> sentinel(static_cast<size_t>(pairs) * N, -12345.0f);
  float* out = dev.up(sentinel);
  if (shape.warps || shape.depth || shape.tiles || shape.pipe)
    cuda::quant_moe_gemv_shaped(qe, x, x_per_pair, d_ids, pairs, k, N, K, E, out, shape, nullptr);
  else
    cuda::quant_moe_gemv(qe, x, x_per_pair, d_ids, pairs, k, N, K, E, out, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> got(sentinel.size());
  CUDA_CHECK(cudaMemcpy(got.data(), out, got.size() * 4, cudaMemcpyDeviceToHost));
  size_t bad = 0;
  for (int p = 0; p < pairs; ++p) {
    std::vector<float> wd(static_cast<size_t>(N) * K);
    dequantize(mats[ids[p]], wd.data());
    const uint16_t* xp = xb.data() + static_cast<size_t>(x_per_pair ? p : p / k) * K;
    for (int r = 0; r < N; ++r) {
      double ref = 0, mag = 0;
      for (int c = 0; c < K; ++c) {
        const double t = static_cast<double>(wd[static_cast<size_t>(r) * K + c]) * bf16_to_f32(xp[c]);
        ref += t;
        mag += std::fabs(t);
      }
      const double d = std::fabs(got[static_cast<size_t>(p) * N + r] - ref);
      if (!(d <= mag * K * std::ldexp(1.0, -24) + 1e-30) && bad++ < 5)
        ADD_FAILURE() << "pair " << p << " row " << r << ": got " << got[static_cast<size_t>(p) * N + r] << ", ref " << ref;
    }
  }
  EXPECT_EQ(bad, 0u);
}

class QuantCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: quantised GEMV tests skipped";
  }
};

}  // namespace

TEST_F(QuantCuda, GemvMatchesTheCpuReference) {
  // 2 tokens x top-2 sharing expert 1; expert 0 and 3 unused (their blocks exit early).
  const std::vector<int32_t> ids = {1, 2, 1, 4};
  for (QuantFormat f : {QuantFormat::int8, QuantFormat::int4, QuantFormat::fp8})
    for (auto [N, K] : {std::pair<int, int>{200, 384}, {64, 160}, {37, 512}})
      for (bool per_pair : {false, true}) {
        if (f == QuantFormat::int4 && K % 32 != 0) continue;
        run_case(f, false, N, K, 5, ids, 2, per_pair, static_cast<uint32_t>(N + K));
        if (f == QuantFormat::int4) run_case(f, true, N, K, 5, ids, 2, per_pair, static_cast<uint32_t>(N * K));
      }
}

TEST_F(QuantCuda, TokensSharingAnExpert) {
  // 10 tokens x top-2 over 8 experts, every token choosing expert 3: 10 pairs on one
  // expert, more than one pass of 8 pairs over its weights.
  std::vector<int32_t> ids;
  for (int i = 0; i < 10; ++i) {
    ids.push_back(3);
    ids.push_back(i % 7 < 3 ? i % 7 : i % 7 + 1);
  }
  run_case(QuantFormat::int4, false, 256, 256, 8, ids, 2, false, 7);
  run_case(QuantFormat::int8, false, 256, 256, 8, ids, 2, true, 8);
  run_case(QuantFormat::fp8, false, 256, 256, 8, ids, 2, false, 9);
}

TEST_F(QuantCuda, TailsOfTilesAndOfTheSplitRow) {
  // 16-row tiles with a partial last tile (33, 40 rows); rows whose last super-step (4
  // chunks of 16 bytes) is partial (2080 inputs: int8/fp8 130 chunks, int4 65) and rows
  // long enough for several passes of every warp of the split (14336 inputs, the
  // Mixtral w2 row); 4 tokens x top-2 on 8 experts: 8 pairs, one per expert; and every
  // token's first slot on expert 6 (one pass with 4 of the 8 pair columns used).
  std::vector<int32_t> spread, shared = {6, 1, 6, 3, 6, 5, 6, 0};
  for (int p = 0; p < 8; ++p) spread.push_back((p * 3) % 8);
  for (QuantFormat f : {QuantFormat::int8, QuantFormat::int4, QuantFormat::fp8})
    for (auto [N, K] : {std::pair<int, int>{33, 2080}, {40, 14336}})
      for (bool per_pair : {false, true}) {
        run_case(f, false, N, K, 8, spread, 2, per_pair, static_cast<uint32_t>(N + K + per_pair));
        if (N == 33) run_case(f, false, N, K, 8, shared, 2, per_pair, static_cast<uint32_t>(N * 3 + K));
        if (f == QuantFormat::int4 && N == 33) run_case(f, true, N, K, 8, spread, 2, per_pair, static_cast<uint32_t>(N * K));
      }
}

TEST_F(QuantCuda, EveryLaunchShapeMatchesTheCpuReference) {
  // Every warps x (depth, tiles) the benchmarks offer, on rows with a partial last tile
  // (33 rows: with 2 tiles a block, the second block's second tile lies wholly past the
  // end) and a partial last super-step (2080 inputs), and on the Mixtral w2 row length
  // (14336: several passes of every warp at depth 8), int4 with zero points too.
  std::vector<int32_t> ids = {1, 2, 1, 4};
  for (int warps : {2, 4, 8, 16})
    for (auto [depth, tiles] : {std::pair<int, int>{4, 1}, {8, 1}, {4, 2}, {2, 1}})
      for (QuantFormat f : {QuantFormat::int8, QuantFormat::int4, QuantFormat::fp8})
        for (auto [N, K] : {std::pair<int, int>{33, 2080}, {40, 14336}}) {
          const cuda::QuantGemvShape shape{warps, depth, tiles};
          run_case(f, false, N, K, 5, ids, 2, K == 2080, static_cast<uint32_t>(N + K + warps + depth), shape);
          if (f == QuantFormat::int4 && N == 33) run_case(f, true, N, K, 5, ids, 2, false, 11, shape);
        }
}

TEST_F(QuantCuda, EveryPipelinedShapeMatchesTheCpuReference) {
  // The pipelined kernel (blocks resident across tiles, next loads issued before the
  // current ones are used) at 4 and 8 warps, depth 2 and the format's depth: the shapes of
  // the plain kernel's test, 10 tokens on one expert (two passes of pair columns), and
  // 4200 rows (263 tiles: more than a GPU's resident blocks per used expert, so blocks
  // walk several tiles, the last one partial, and the two shared partial-sum arrays
  // alternate).
  std::vector<int32_t> ids = {1, 2, 1, 4}, crowd;
  for (int i = 0; i < 10; ++i) {
    crowd.push_back(3);
    crowd.push_back(i % 7 < 3 ? i % 7 : i % 7 + 1);
  }
  for (int warps : {4, 8})
    for (int depth : {2, 4})
      for (QuantFormat f : {QuantFormat::int8, QuantFormat::int4, QuantFormat::fp8}) {
        const cuda::QuantGemvShape shape{warps, depth, 0, 1};
        for (auto [N, K] : {std::pair<int, int>{33, 2080}, {40, 14336}, {4200, 256}}) {
          run_case(f, false, N, K, 5, ids, 2, K == 2080, static_cast<uint32_t>(N + K + warps + depth), shape);
          if (f == QuantFormat::int4 && N != 40) run_case(f, true, N, K, 5, ids, 2, false, 12, shape);
        }
        run_case(f, false, 256, 256, 8, crowd, 2, depth == 2, 13, shape);
      }
}

// One quantised matrix (weight_dtype's attention projections) through linear_weight:
// n <= 8 rows take quant_gemv (held to the CPU reference as above, accumulate adding to
// y's old values), more rows dequantise into a bf16 scratch and take linear() (held to
// the dot products of the bf16-rounded dequantised weights, the values it multiplies).
// Rows past a 128-row fp8 block and partial column blocks (K = 2080); a wrong block or
// row scale shows far above the bound.
TEST_F(QuantCuda, QuantisedLinearWeightMatchesTheCpuReference) {
  cuda::Blas blas;
  for (QuantFormat f : {QuantFormat::int8, QuantFormat::fp8})
    for (auto [N, K] : {std::pair<int, int>{300, 2080}, {33, 256}})
      for (int n : {1, 3, 8, 12})
        for (bool acc : {false, true}) {
          SCOPED_TRACE(testing::Message() << quant_format_name(f) << " N=" << N << " K=" << K << " n=" << n
                                          << (acc ? " accumulate" : ""));
          std::mt19937 g(static_cast<uint32_t>(N + K + n));
          std::normal_distribution<float> nd(0.0f, 0.05f);
          std::vector<float> w(static_cast<size_t>(N) * K), y0(static_cast<size_t>(n) * N);
          for (auto& v : w) v = nd(g);
          w[5] = 0.9f;  // an outlier in the first block / row
          for (auto& v : y0) v = nd(g);
          const QuantMatrix m = quantize(f, w.data(), N, K);
          std::vector<float> wd(w.size());
          dequantize(m, wd.data());
          if (n > 8)
            for (auto& v : wd) v = bf16_to_f32(f32_to_bf16(v));  // linear() multiplies the bf16-rounded values
          std::vector<uint16_t> xb(static_cast<size_t>(n) * K);
          for (auto& v : xb) v = f32_to_bf16(nd(g) * 20);
          DeviceBuffers dev;
          cuda::LinearWeight lw;
          lw.format = f;
          lw.q = dev.up(m.q);
          lw.scale = dev.up(m.scale);
          std::vector<uint16_t> scratch_h(static_cast<size_t>(N) * K);
          auto* scratch = reinterpret_cast<__nv_bfloat16*>(dev.up(scratch_h));
          float* y = dev.up(y0);
          cuda::linear_weight(lw, reinterpret_cast<const __nv_bfloat16*>(dev.up(xb)), y, n, K, N, acc, scratch,
                              blas.get(), nullptr);
          CUDA_CHECK(cudaDeviceSynchronize());
          std::vector<float> got(y0.size());
          CUDA_CHECK(cudaMemcpy(got.data(), y, got.size() * 4, cudaMemcpyDeviceToHost));
          size_t bad = 0;
          for (int i = 0; i < n; ++i)
            for (int r = 0; r < N; ++r) {
              double ref = acc ? y0[static_cast<size_t>(i) * N + r] : 0.0, mag = std::fabs(ref);
              for (int c = 0; c < K; ++c) {
                const double t = static_cast<double>(wd[static_cast<size_t>(r) * K + c]) *
                                 bf16_to_f32(xb[static_cast<size_t>(i) * K + c]);
                ref += t;
                mag += std::fabs(t);
              }
              const double d = std::fabs(got[static_cast<size_t>(i) * N + r] - ref);
              if (!(d <= mag * (K + 1) * std::ldexp(1.0, -24) + 1e-30) && bad++ < 5)
                ADD_FAILURE() << "row " << i << " out " << r << ": got " << got[static_cast<size_t>(i) * N + r]
                              << ", ref " << ref;
            }
          EXPECT_EQ(bad, 0u);
        }
}

TEST_F(QuantCuda, FirstUsesPastThe32ndPair) {
  // 24 tokens x top-2 = 48 pairs: pairs 0..35 alternate experts 0 and 1, pairs 36..47
  // bring experts 2..7 (each twice), so the grid rows 2..7 find their expert in the second
  // word of the first-use mask.
  std::vector<int32_t> ids;
  for (int p = 0; p < 36; ++p) ids.push_back(p % 2);
  for (int p = 36; p < 48; ++p) ids.push_back(2 + (p - 36) / 2);
  run_case(QuantFormat::int8, false, 48, 256, 8, ids, 2, true, 21);
  run_case(QuantFormat::int4, false, 48, 256, 8, ids, 2, false, 22);
}

TEST_F(QuantCuda, UnknownLaunchShapeIsAOneLineError) {
  cuda::QuantExperts qe;
  qe.format = QuantFormat::int8;
  try {
    cuda::quant_moe_gemv_shaped(qe, nullptr, false, nullptr, 2, 2, 64, 64, 4, nullptr, cuda::QuantGemvShape{4, 6},
                                nullptr);
    FAIL() << "depth 6 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("depth 6 x 1 tiles for int8, expected 4, 2 or 8 x 1 tile, or 4 x 2 tiles"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(QuantCuda, BadShapesAreOneLineErrors) {
  cuda::QuantExperts qe;
  qe.format = QuantFormat::int4;
  try {
    cuda::quant_moe_gemv(qe, nullptr, false, nullptr, 2, 2, 64, 48, 4, nullptr, nullptr);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("48 inputs is not a multiple of 32"), std::string::npos) << e.what();
  }
}

#endif  // MOEBENCH_HAVE_CUDA
