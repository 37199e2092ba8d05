// quant_cuda_test.cpp: the dequantising decode GEMV over selected experts
// (engine/cuda/quant_gemv.h) against the CPU reference: dequantize() (engine/quant.h)
// then an fp32 dot product in double, for int8, int4 (symmetric and with zero points)
// and fp8 (and one int8 / fp8 matrix through linear_weight, weight_dtype's path; the
// fused gate/up and down/combine kernels of decode), with odd row counts, partial fp8 blocks / int4 groups, several tokens
// sharing an expert, inputs per token (w1/w3) and per pair (w2), int4 codes in the paired
// word order of the resident model (int4_pair_words); and the warp-row kernels
// (quant_gemv_rows.h) the same way; the exact warp kernels bit for bit against the tile
// kernel. Skipped, with a message, when no GPU is present.
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
#include <string>
#include <vector>

#include "engine/cuda/check.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/blas.h"
#include "engine/cuda/gate_up.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/quant_dequant.h"
#include "engine/cuda/quant_gemv.h"
#include "engine/cuda/quant_gemv_rows.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/quant_linear.h"
#include "engine/dtype.h"
#include "common/error.h"
#include "engine/quant.h"
#include "device_copy.h"

namespace quant_cuda_test {

using namespace moebench;

namespace {

// Runs `run` for inner-loop variant var. A staged variant (8, 10, 11: a ring of batches in
// dynamic shared memory, up to 128 KiB a block) on a device whose blocks hold less (an
// RTX 30xx/40xx's 99 KiB, MOEBENCH_GPU_CC=8.6) is refused in one line naming the bytes and
// the limit: there the refusal is what is checked, and this returns false; elsewhere any
// error is a failure.
template <typename Run>
bool run_variant(int var, Run&& run) {
  if ((var & 8) == 0 || cuda::device_info_cached().smem_optin >= (128 << 10)) {
    run();
    return true;
  }
  try {
    run();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("bytes of dynamic shared memory, above the"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    return false;
  }
  return true;
}

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

// E experts of one (N, K) matrix each, quantised on the host and uploaded.
struct Experts {
  std::vector<QuantMatrix> mats;
  std::vector<std::vector<float>> deq;  // the CPU reference's weights
  cuda::QuantExperts qe;
  Experts(DeviceBuffers& dev, QuantFormat f, bool zero_points, int N, int K, int E, std::mt19937& g) {
    std::normal_distribution<float> nd(0.0f, 0.05f);
    std::vector<const uint8_t*> q(E), sc(E), zp(E);
    for (int e = 0; e < E; ++e) {
      std::vector<float> w(static_cast<size_t>(N) * K);
      for (auto& v : w) v = nd(g);
      w[static_cast<size_t>(e) * 7] = 0.8f;
      mats.push_back(quantize(f, w.data(), N, K, zero_points));
      deq.emplace_back(w.size());
      dequantize(mats.back(), deq.back().data());
      q[e] = dev.up(mats.back().q);
      sc[e] = dev.up(mats.back().scale);
      zp[e] = zero_points ? dev.up(mats.back().zero) : nullptr;
    }
    qe.format = f;
    qe.q = dev.up(q);
    qe.scale = dev.up(sc);
    qe.zero = zero_points ? dev.up(zp) : nullptr;
    dev_q = q;
  }
  std::vector<const uint8_t*> dev_q;  // each expert's codes on the device
  // int4: the codes reordered into the paired word order on the device (the resident model's).
  void pair() {
    for (size_t e = 0; e < mats.size(); ++e)
      cuda::int4_pair_words(const_cast<uint8_t*>(dev_q[e]), static_cast<int64_t>(mats[e].q.size()), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    qe.int4_paired = true;
  }
  // Row r of expert e, dequantised, dotted with x in double; mag: sum |w x|.
  double dot(int e, int r, int K, const uint16_t* x, double& mag) const {
    const std::vector<float>& wd = deq[e];
    double s = 0;
    mag = 0;
    for (int c = 0; c < K; ++c) {
      const double t = static_cast<double>(wd[static_cast<size_t>(r) * K + c]) * bf16_to_f32(x[c]);
      s += t;
      mag += std::fabs(t);
    }
    return s;
  }
};

void run_case(QuantFormat f, bool zero_points, int N, int K, int E, const std::vector<int32_t>& ids, int k,
              bool x_per_pair, uint32_t seed, cuda::QuantGemvShape shape = {}, bool paired = false) {
  SCOPED_TRACE(testing::Message() << quant_format_name(f) << (zero_points ? " zp" : "") << " N=" << N << " K=" << K
                                  << (x_per_pair ? " per pair" : " per token") << " warps " << shape.warps
                                  << " depth " << shape.depth << " tiles " << shape.tiles
                                  << (shape.pipe ? " pipelined" : "") << " prefetch " << shape.pf << " seq "
                                  << shape.seq << " var " << shape.var << (paired ? " paired" : ""));
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  const int pairs = static_cast<int>(ids.size()), n_x = x_per_pair ? pairs : pairs / k;
  DeviceBuffers dev;
  Experts ex(dev, f, zero_points, N, K, E, g);
  if (paired) ex.pair();
  const cuda::QuantExperts& qe = ex.qe;
  std::vector<uint16_t> xb(static_cast<size_t>(n_x) * K);
  for (auto& v : xb) v = f32_to_bf16(nd(g) * 20);
  const auto* x = reinterpret_cast<const __nv_bfloat16*>(dev.up(xb));
  const int32_t* d_ids = dev.up(ids);
  std::vector<float> sentinel(static_cast<size_t>(pairs) * N, -12345.0f);
  float* out = dev.up(sentinel);
  if (shape.warps || shape.depth || shape.tiles || shape.pipe || shape.pf >= 0 || shape.seq || shape.var >= 0)
    cuda::quant_moe_gemv_shaped(qe, x, x_per_pair, d_ids, pairs, k, N, K, E, out, shape, nullptr);
  else
    cuda::quant_moe_gemv(qe, x, x_per_pair, d_ids, pairs, k, N, K, E, out, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> got(sentinel.size());
  CUDA_CHECK(cudaMemcpy(got.data(), out, got.size() * 4, cudaMemcpyDeviceToHost));
  size_t bad = 0;
  for (int p = 0; p < pairs; ++p) {
    const uint16_t* xp = xb.data() + static_cast<size_t>(x_per_pair ? p : p / k) * K;
    for (int r = 0; r < N; ++r) {
      double mag = 0;
      const double ref = ex.dot(ids[p], r, K, xp, mag);
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

// int4 codes in the paired word order (the resident model's, int4_pair_words): the plain
// and the staged loop (variant 0 and 8) within the CPU reference's bound, symmetric and
// with zero points, per token and per pair, where the staged loop takes its ring (2112
// rows at 4 warps, 2048 inputs) and where it falls back (200 x 384); another variant on
// paired codes is a one-line Error.
TEST_F(QuantCuda, PairedInt4MatchesTheCpuReference) {
  const std::vector<int32_t> ids = {1, 2, 1, 4};
  for (auto [N, K] : {std::pair<int, int>{200, 384}, {2112, 2048}})
    for (int var : {0, 8, 100})  // 100: the plain loop at two tiles a block (batch_tiles)
      for (bool zp : {false, true})
        for (bool per_pair : {false, true}) {
          cuda::QuantGemvShape shape;
          shape.var = var == 100 ? 0 : var;
          shape.tiles = var == 100 ? 2 : 0;
          run_variant(var, [&] {
            run_case(QuantFormat::int4, zp, N, K, 5, ids, 2, per_pair, static_cast<uint32_t>(N + K + var), shape, true);
          });
        }
  std::mt19937 g(3);
  DeviceBuffers dev;
  Experts ex(dev, QuantFormat::int4, false, 64, 256, 2, g);
  ex.pair();
  std::vector<uint16_t> xb(256, f32_to_bf16(0.5f));
  const std::vector<int32_t> one = {0, 1};
  std::vector<float> y(2 * 64);
  cuda::QuantGemvShape shape;
  shape.var = 2;
  try {
    cuda::quant_moe_gemv_shaped(ex.qe, reinterpret_cast<const __nv_bfloat16*>(dev.up(xb)), false, dev.up(one), 2, 2,
                                64, 256, 2, dev.up(y), shape, nullptr);
    ADD_FAILURE() << "no error for variant 2 on paired codes";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("paired"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
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

TEST_F(QuantCuda, EveryPrefetchWindowMatchesTheCpuReference) {
  // The plain kernel's L2 prefetch (none, 1 and 4 passes ahead; 2 in the fused gate/up
  // and down tests; the default is none): rows of one pass and a partial one (2080 inputs), of several passes
  // (14336), a partial last tile, int4 with zero points (their bytes prefetched too).
  std::vector<int32_t> ids = {1, 2, 1, 4};
  for (int pf : {0, 1, 4})
    for (QuantFormat f : {QuantFormat::int8, QuantFormat::int4, QuantFormat::fp8})
      for (auto [N, K] : {std::pair<int, int>{33, 2080}, {40, 14336}}) {
        cuda::QuantGemvShape shape;
        shape.pf = pf;
        run_case(f, false, N, K, 5, ids, 2, K == 2080, static_cast<uint32_t>(N + K + pf), shape);
        if (f == QuantFormat::int4) run_case(f, true, N, K, 5, ids, 2, false, static_cast<uint32_t>(pf), shape);
      }
}

TEST_F(QuantCuda, TilesTakenInTurnMatchTheCpuReference) {
  // A block taking 2 or 3 tiles one after the other (shape.seq), with and without the
  // prefetch: 33 rows (the last block's second tile partial, 3 tiles: one block), 100 rows
  // (7 tiles: the last block has fewer than seq), two tiles a block (kRT 2) too.
  std::vector<int32_t> ids = {1, 2, 1, 4};
  for (int seq : {2, 3})
    for (int pf : {0, 2})
      for (QuantFormat f : {QuantFormat::int8, QuantFormat::int4, QuantFormat::fp8})
        for (auto [N, K] : {std::pair<int, int>{33, 2080}, {100, 14336}}) {
          cuda::QuantGemvShape shape;
          shape.pf = pf;
          shape.seq = seq;
          run_case(f, false, N, K, 5, ids, 2, K == 2080, static_cast<uint32_t>(N + K + seq + pf), shape);
          shape.tiles = 2;
          run_case(f, f == QuantFormat::int4, N, K, 5, ids, 2, false, static_cast<uint32_t>(N + seq + pf), shape);
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
// y's old values), and so do more rows up to quant_prefill_slices(), 8 at a time (12 and
// 20 rows: a whole slice and a partial one); with the slices off (0) more rows dequantise
// into a bf16 scratch and take linear() (held to the dot products of the bf16-rounded
// dequantised weights, the values it multiplies). Rows past a 128-row fp8 block and
// partial column blocks (K = 2080); a wrong block or row scale, or a slice's rows
// misplaced, shows far above the bound.
TEST_F(QuantCuda, QuantisedLinearWeightMatchesTheCpuReference) {
  cuda::Blas blas;
  for (int slices : {0, 64})
  for (QuantFormat f : {QuantFormat::int8, QuantFormat::fp8})
    for (auto [N, K] : {std::pair<int, int>{300, 2080}, {33, 256}})
      for (int n : {1, 3, 8, 12, 20})
        for (bool acc : {false, true}) {
          if (slices > 0 && n <= 8) continue;  // decode rows take the GEMV either way
          const cuda::ScopedSwitch slices_on(cuda::set_quant_prefill_slices, slices);
          SCOPED_TRACE(testing::Message() << quant_format_name(f) << " N=" << N << " K=" << K << " n=" << n
                                          << (acc ? " accumulate" : "") << " slices up to " << slices);
          std::mt19937 g(static_cast<uint32_t>(N + K + n));
          std::normal_distribution<float> nd(0.0f, 0.05f);
          std::vector<float> w(static_cast<size_t>(N) * K), y0(static_cast<size_t>(n) * N);
          for (auto& v : w) v = nd(g);
          w[5] = 0.9f;  // an outlier in the first block / row
          for (auto& v : y0) v = nd(g);
          const QuantMatrix m = quantize(f, w.data(), N, K);
          std::vector<float> wd(w.size());
          dequantize(m, wd.data());
          if (n > 8 && n > slices)
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

namespace {

double silu_d(double a) { return a / (1.0 + std::exp(-a)); }

// h = silu(g) * u through the GEMV over [w1; w3] (2 inter rows, the given shape) and
// silu_mul_gate_up, downloaded: what a fused gate/up launch of that shape must write.
std::vector<uint16_t> gate_up_via_gemv(DeviceBuffers& dev, const cuda::QuantExperts& qe, const __nv_bfloat16* x,
                                       const int32_t* d_ids, int pairs, int k, int inter, int hidden, int E,
                                       cuda::QuantGemvShape shape = {}) {
  const size_t n = static_cast<size_t>(pairs) * inter;
  float* gu = dev.up(std::vector<float>(2 * n, 0.0f));
  auto* h = reinterpret_cast<__nv_bfloat16*>(dev.up(std::vector<uint16_t>(n, 0xffff)));
  cuda::quant_moe_gemv_shaped(qe, x, false, d_ids, pairs, k, 2 * inter, hidden, E, gu, shape, nullptr);
  cuda::silu_mul_gate_up(gu, h, pairs, inter, nullptr);
  return test::download(reinterpret_cast<const uint16_t*>(h), n);
}

// A down + combine case on the device: h (pairs x K), the router weights and the residual
// before (tokens x N), random, and their uploads.
struct DownInputs {
  std::vector<uint16_t> hb;
  std::vector<float> wts, res0;
  const __nv_bfloat16* h = nullptr;
  const int32_t* ids = nullptr;
  const float* w = nullptr;
  DownInputs(DeviceBuffers& dev, const std::vector<int32_t>& id, int k, int N, int K, std::mt19937& g)
      : hb(id.size() * K), wts(id.size()), res0(id.size() / k * N) {
    std::normal_distribution<float> nd(0.0f, 0.05f);
    for (auto& v : hb) v = f32_to_bf16(nd(g) * 20);
    for (auto& v : wts) v = 0.2f + std::fabs(nd(g)) * 8;
    for (auto& v : res0) v = nd(g) * 10;
    h = reinterpret_cast<const __nv_bfloat16*>(dev.up(hb));
    ids = dev.up(id);
    w = dev.up(wts);
  }
};

// Rows (every row_step-th) of a down + combine result outside the CPU reference's bound:
// each slot's fp32 summation bound times its weight, plus the rounding of the k + 1
// additions; the first 5 are reported.
size_t down_combine_misses(const Experts& ex, const std::vector<int32_t>& ids, const DownInputs& in,
                           const std::vector<float>& got, int k, int N, int K, int row_step) {
  size_t bad = 0;
  for (int t = 0; t < static_cast<int>(ids.size()) / k; ++t)
    for (int r = 0; r < N; r += row_step) {
      double ref = in.res0[static_cast<size_t>(t) * N + r], tol = std::fabs(ref) * (k + 1) * std::ldexp(1.0, -24);
      for (int j = 0; j < k; ++j) {
        const int p = t * k + j;
        double mag = 0;
        const double d = ex.dot(ids[p], r, K, in.hb.data() + static_cast<size_t>(p) * K, mag);
        ref += in.wts[p] * d;
        tol += in.wts[p] * (mag * K * std::ldexp(1.0, -24) + std::fabs(d) * (k + 1) * std::ldexp(1.0, -24));
      }
      const double v = got[static_cast<size_t>(t) * N + r];
      if (!(std::fabs(v - ref) <= tol + 1e-30) && bad++ < 5)
        ADD_FAILURE() << "token " << t << " row " << r << ": got " << v << ", ref " << ref;
    }
  return bad;
}

}  // namespace

// The fused gate/up of the plain kernel (a tile: 8 rows of w1 and the same rows of w3,
// h = silu(g) * u written by the GEMV): bit for bit the plain GEMV over [w1; w3] followed
// by silu_mul_gate_up, with and without the L2 prefetch, and within the CPU reference's
// bound (bf16 rounding of h plus the fp32 summation bound of g and u carried through
// silu(g) * u). Inter sizes with a partial last 8-row tile (1000) and both warp counts
// (64 and 1792 tiles of the [w1; w3] matrix), 3 tokens x top-2 with a shared expert, and
// 32 tokens x top-2 (64 pairs, the launch's most: a decode step of 32 sequences) over the
// 4 experts, several passes of 8 pairs over each expert's rows.
TEST_F(QuantCuda, FusedGateUpMatchesTheGemvAndSiluAndTheCpuReference) {
  std::vector<int32_t> wide;
  for (int p = 0; p < 64; ++p) wide.push_back((p * 5 + p / 7) % 4);
  const int k = 2, E = 4;
  struct Shape {
    int inter, hidden;
  };
  for (const std::vector<int32_t>& ids : {std::vector<int32_t>{2, 0, 2, 3, 1, 2}, wide})
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (bool zp : {false, true})
      for (const Shape sh : {Shape{512, 256}, Shape{1000, 2080}, Shape{14336, 256}}) {
        if (zp && f != QuantFormat::int4) continue;
        if (f == QuantFormat::int4 && sh.hidden % 32 != 0) continue;
        const int pairs = static_cast<int>(ids.size());
        const int I = sh.inter, H = sh.hidden;
        SCOPED_TRACE(testing::Message() << quant_format_name(f) << (zp ? " zp" : "") << " inter " << I << " hidden " << H
                                        << " pairs " << pairs);
        std::mt19937 g(static_cast<uint32_t>(I + H + zp + pairs));
        std::normal_distribution<float> nd(0.0f, 0.05f);
        DeviceBuffers dev;
        Experts ex(dev, f, zp, 2 * I, H, E, g);
        std::vector<uint16_t> xb(static_cast<size_t>(pairs / k) * H);
        for (auto& v : xb) v = f32_to_bf16(nd(g) * 20);
        const auto* x = reinterpret_cast<const __nv_bfloat16*>(dev.up(xb));
        const int32_t* d_ids = dev.up(ids);
        const size_t n = static_cast<size_t>(pairs) * I;
        std::vector<uint16_t> nan(n, 0xffff);
        const std::vector<uint16_t> want = gate_up_via_gemv(dev, ex.qe, x, d_ids, pairs, k, I, H, E);
        // 3: prefetch 2 with 2 tiles taken in turn; 4, 5: two row tiles a block (the batched
        // launches' shape, batch_tiles) without and with prefetch 2.
        auto fused = [&](int pf) {
          auto* h = reinterpret_cast<__nv_bfloat16*>(dev.up(nan));
          cuda::QuantGemvShape shape;
          shape.pf = pf == 3 || pf == 5 ? 2 : pf == 4 ? 0 : pf;
          shape.seq = pf == 3 ? 2 : 0;
          shape.tiles = pf >= 4 ? 2 : 0;
          cuda::quant_moe_gemv_gate_up_shaped(ex.qe, x, d_ids, pairs, k, I, H, E, h, shape, nullptr);
          return test::download(reinterpret_cast<const uint16_t*>(h), n);
        };
        for (int pf : {0, 2, 3, 4, 5}) EXPECT_EQ(fused(pf), want) << "prefetch " << pf;
        size_t bad = 0;
        for (int p = 0; p < pairs; ++p)
          for (int r = 0; r < I; r += (I > 1000 ? 7 : 1)) {
            const uint16_t* xp = xb.data() + static_cast<size_t>(p / k) * H;
            double mg = 0, mu = 0;
            const double gr = ex.dot(ids[p], r, H, xp, mg), ur = ex.dot(ids[p], I + r, H, xp, mu);
            const double ref = silu_d(gr) * ur;
            const double eg = mg * H * std::ldexp(1.0, -24), eu = mu * H * std::ldexp(1.0, -24);
            const double tol = std::fabs(ref) * std::ldexp(1.0, -8) + 1.2 * eg * std::fabs(ur) +
                               (std::fabs(silu_d(gr)) + eg) * eu + 1e-30;
            const double got = bf16_to_f32(want[static_cast<size_t>(p) * I + r]);
            if (!(std::fabs(got - ref) <= tol) && bad++ < 5)
              ADD_FAILURE() << "pair " << p << " row " << r << ": got " << got << ", ref " << ref;
          }
        EXPECT_EQ(bad, 0u);
        if (f == QuantFormat::int4) {  // the paired word order (the model's): one tile a block and two
          ex.pair();
          const std::vector<uint16_t> paired = fused(0);
          EXPECT_EQ(fused(4), paired) << "paired, two tiles a block";
        }
      }
}

// The inner-loop variants (early scales, interleaved mma chains, double-buffered batches,
// and their sums): bit for bit the plain loop for the GEMV over the selected experts (per
// token and per pair, tails of the row and of the tiles: 1000 rows, 2080 inputs; K 4096:
// several passes a warp, so both registers' batches), the fused gate/up and the
// down/combine, 4 warps (many tiles) and 16 (few), with zero points for int4; the staged
// variants (8, 10, 11) take their ring where every warp has a batch of every tile (8192 x
// 2048 at 4 warps: int4 too, several tiles a block; 300 x 4096 at 16 warps: int8, fp8)
// and the plain loop elsewhere (3 tokens share expert 2 there, so 3 pairs); and an
// explicit variant where none is compiled (8 warps) is a one-line Error.
TEST_F(QuantCuda, InnerLoopVariantsAreBitForBitThePlainLoop) {
  const std::vector<int32_t> ids = {2, 0, 2, 3, 1, 2};
  const int pairs = static_cast<int>(ids.size()), k = 2, E = 4;
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (auto [N, K] : {std::pair<int, int>{4096, 512}, {1000, 2080}, {300, 4096}, {8192, 2048}}) {
      const bool zp = f == QuantFormat::int4 && N == 1000;
      SCOPED_TRACE(testing::Message() << quant_format_name(f) << (zp ? " zp" : "") << " N=" << N << " K=" << K);
      std::mt19937 g(static_cast<uint32_t>(N + K));
      std::normal_distribution<float> nd(0.0f, 0.05f);
      DeviceBuffers dev;
      const Experts ex(dev, f, zp, N, K, E, g);
      std::vector<uint16_t> xb(static_cast<size_t>(pairs) * K);
      for (auto& v : xb) v = f32_to_bf16(nd(g) * 20);
      std::vector<float> wts(pairs), res0(static_cast<size_t>(pairs / k) * N);
      for (auto& v : wts) v = 0.2f + std::fabs(nd(g)) * 8;
      for (auto& v : res0) v = nd(g) * 10;
      const auto* x = reinterpret_cast<const __nv_bfloat16*>(dev.up(xb));
      const int32_t* d_ids = dev.up(ids);
      const float* d_w = dev.up(wts);
      const size_t n_out = static_cast<size_t>(pairs) * N, n_h = static_cast<size_t>(pairs) * (N / 2);
      std::vector<float> zeros(n_out, 0.0f);
      std::vector<uint16_t> nan(n_h, 0xffff);
      auto gemv = [&](bool per_pair, int var) {
        float* y = dev.up(zeros);
        cuda::QuantGemvShape shape;
        shape.var = var;
        cuda::quant_moe_gemv_shaped(ex.qe, x, per_pair, d_ids, pairs, k, N, K, E, y, shape, nullptr);
        return test::download(y, n_out);
      };
      auto gate_up = [&](int var) {
        auto* h = reinterpret_cast<__nv_bfloat16*>(dev.up(nan));
        cuda::QuantGemvShape shape;
        shape.var = var;
        cuda::quant_moe_gemv_gate_up_shaped(ex.qe, x, d_ids, pairs, k, N / 2, K, E, h, shape, nullptr);
        return test::download(reinterpret_cast<const uint16_t*>(h), n_h);
      };
      auto down = [&](int var) {
        float* res = dev.up(res0);
        cuda::quant_moe_down_combine(ex.qe, x, d_ids, d_w, pairs, k, N, K, E, res, false, nullptr, 0, var);
        return test::download(res, res0.size());
      };
      const std::vector<float> tok0 = gemv(false, 0), pair0 = gemv(true, 0), down0 = down(0);
      const std::vector<uint16_t> gu0 = gate_up(0);
      for (int var : {1, 2, 3, 4, 5, 6, 7, 8, 10, 11}) {
        run_variant(var, [&] { EXPECT_EQ(gemv(false, var), tok0) << "variant " << var << ", per token"; });
        run_variant(var, [&] { EXPECT_EQ(gemv(true, var), pair0) << "variant " << var << ", per pair"; });
        run_variant(var, [&] { EXPECT_EQ(gate_up(var), gu0) << "variant " << var << ", fused gate/up"; });
        run_variant(var, [&] { EXPECT_EQ(down(var), down0) << "variant " << var << ", down/combine"; });
      }
    }
  cuda::QuantExperts qe;
  qe.format = QuantFormat::int8;
  try {
    cuda::quant_moe_gemv_shaped(qe, nullptr, false, nullptr, 2, 2, 64, 64, 4, nullptr,
                                cuda::QuantGemvShape{8, 0, 0, 0, -1, 0, 2}, nullptr);
    ADD_FAILURE() << "no error for a variant at 8 warps";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("variant 2"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

// The down projection with the combine (quant_moe_down_combine): bit for bit the plain
// GEMV over the pairs (one input row each) followed by moe_combine_all into the same
// residual, for the ids read before or after the wait and with and without the L2
// prefetch; and within the CPU reference's bound (each slot's fp32 summation bound
// times its weight, plus the rounding of the k + 1 additions). Shapes: 4096 rows (256
// tiles: two groups of 4 warps a block) and 300 (19 tiles, a partial one: one group of 16
// warps); 1 token (two experts), 3 tokens sharing an expert, 8 tokens on 8 experts, and
// 32 tokens (64 pairs, the launch's most) with 6 to 9 pairs an expert (one or two passes).
TEST_F(QuantCuda, DownCombineMatchesTheGemvAndCombineAndTheCpuReference) {
  const int k = 2, E = 8;
  std::vector<std::vector<int32_t>> cases = {
      {3, 5}, {2, 0, 2, 3, 1, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 7, 6, 5, 4, 3, 2, 1, 0}, {}};
  for (int t = 0; t < 32; ++t) {  // distinct experts in each token's two slots
    cases.back().push_back((t * 3) % 8);
    cases.back().push_back((t * 3 + 1 + t % 5) % 8);
  }
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (auto [N, K] : {std::pair<int, int>{4096, 512}, {300, 2080}})
      for (const auto& ids : cases) {
        if (f == QuantFormat::int4 && K % 32 != 0) continue;
        const int pairs = static_cast<int>(ids.size()), n_tok = pairs / k;
        SCOPED_TRACE(testing::Message() << quant_format_name(f) << " N=" << N << " K=" << K << " pairs " << pairs);
        std::mt19937 g(static_cast<uint32_t>(N + K + pairs));
        DeviceBuffers dev;
        Experts ex(dev, f, f == QuantFormat::int4 && pairs == 6, N, K, E, g);
        const DownInputs in(dev, ids, k, N, K, g);
        const std::vector<float>& res0 = in.res0;
        const __nv_bfloat16* h = in.h;
        const int32_t* d_ids = in.ids;
        const float* d_w = in.w;
        std::vector<float> y0(static_cast<size_t>(pairs) * N, 0.0f);
        float* y = dev.up(y0);
        float* res_ref = dev.up(res0);
        cuda::quant_moe_gemv(ex.qe, h, true, d_ids, pairs, k, N, K, E, y, nullptr);
        cuda::moe_combine_all(y, nullptr, d_w, n_tok, k, res_ref, N, nullptr);
        const std::vector<float> want = test::download(res_ref, res0.size());
        // tiles 2: two row tiles a block (the batched launches' shape, batch_tiles; 300 rows:
        // the last block's second tile partly past the rows).
        auto fused = [&](bool early, int pf, int tiles) {
          float* res = dev.up(res0);
          cuda::quant_moe_down_combine(ex.qe, h, d_ids, d_w, pairs, k, N, K, E, res, early, nullptr, pf, -1, tiles);
          return test::download(res, res0.size());
        };
        for (bool early : {false, true})
          for (int pf : {0, 2})
            for (int tiles : {0, 2})
              EXPECT_EQ(fused(early, pf, tiles), want) << "ids early " << early << ", prefetch " << pf << ", tiles "
                                                       << tiles;
        EXPECT_EQ(down_combine_misses(ex, ids, in, want, k, N, K, N > 300 ? 5 : 1), 0u);
        if (f == QuantFormat::int4) {  // the paired word order (the model's): one tile a block and two
          ex.pair();
          const std::vector<float> paired = fused(true, 0, 1);
          EXPECT_EQ(fused(true, 0, 2), paired) << "paired, two tiles a block";
        }
      }
}

// The warp-row kernels (quant_gemv_rows.h, variants 32 .. 38: a warp owns two whole rows,
// the mma's pair columns used for 8 segments of the row; and the exact ones, 40 .. 42, at
// shapes where the tile kernel would take 16 warps, so they add in another order than it): the GEMV over the selected
// experts within the CPU reference's bound, for every launch shape and format (int4
// symmetric, with zero points, and in the paired order), per token and per pair, with
// pairs sharing an expert, odd row counts, rows shorter than one 512-byte batch (160
// inputs), partial batches (2080) and many batches (14336); the fused gate/up bit for bit
// the same variant's GEMV over [w1; w3] followed by silu_mul_gate_up; the down + combine
// within the bound of the combine test for top-1, 2 and 4 (the row split into 8, 4 and 2
// parts; parts without batches at 512 inputs), 1, 3 and 8 tokens, ids read before or
// after the wait.
TEST_F(QuantCuda, WarpRowKernelsMatchTheCpuReference) {
  const std::vector<int32_t> ids = {1, 2, 1, 4};
  std::vector<int> vars;
  for (int var = cuda::kQuantVariantRows; var < cuda::kQuantVariantRows + cuda::kQuantRowsShapes; ++var)
    vars.push_back(var);
  for (int var = cuda::kQuantVariantExact; var < cuda::kQuantVariantExact + cuda::kQuantExactShapes; ++var)
    vars.push_back(var);
  for (int var : vars) {
    cuda::QuantGemvShape shape;
    shape.var = var;
    for (QuantFormat f : {QuantFormat::int8, QuantFormat::int4, QuantFormat::fp8})
      for (auto [N, K] : {std::pair<int, int>{33, 2080}, {40, 14336}, {7, 160}})
        for (bool per_pair : {false, true}) {
          const uint32_t seed = static_cast<uint32_t>(N + K + var + per_pair);
          run_case(f, false, N, K, 5, ids, 2, per_pair, seed, shape);
          if (f != QuantFormat::int4 || K == 14336) continue;
          run_case(f, true, N, K, 5, ids, 2, per_pair, seed + 1, shape);
          run_case(f, false, N, K, 5, ids, 2, per_pair, seed + 2, shape, true);
          run_case(f, true, N, K, 5, ids, 2, per_pair, seed + 3, shape, true);
        }
  }
  // Fused gate/up: the same variant's GEMV rows, bit for bit.
  for (int var : {cuda::kQuantVariantRows, cuda::kQuantVariantRows + 2, cuda::kQuantVariantRows + 4,
                  cuda::kQuantVariantExact, cuda::kQuantVariantExact + 2})
    for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
      for (bool paired : {false, true}) {
        if (paired && f != QuantFormat::int4) continue;
        const std::vector<int32_t> gids = {2, 0, 2, 3, 1, 2};
        const int pairs = static_cast<int>(gids.size()), k = 2, E = 4, I = 1000, H = 2080;
        SCOPED_TRACE(testing::Message() << quant_format_name(f) << " gate/up var " << var << (paired ? " paired" : ""));
        std::mt19937 g(static_cast<uint32_t>(var + paired));
        DeviceBuffers dev;
        Experts ex(dev, f, f == QuantFormat::int4, 2 * I, H, E, g);
        if (paired) ex.pair();
        const int32_t* d_ids = dev.up(gids);
        cuda::QuantGemvShape shape;
        shape.var = var;
        const size_t n = static_cast<size_t>(pairs) * I;
        auto* h = reinterpret_cast<__nv_bfloat16*>(dev.up(std::vector<uint16_t>(n, 0xffff)));
        std::normal_distribution<float> nd(0.0f, 0.05f);
        std::vector<uint16_t> xb(static_cast<size_t>(pairs / k) * H);
        for (auto& v : xb) v = f32_to_bf16(nd(g) * 20);
        const auto* x = reinterpret_cast<const __nv_bfloat16*>(dev.up(xb));
        cuda::quant_moe_gemv_gate_up_shaped(ex.qe, x, d_ids, pairs, k, I, H, E, h, shape, nullptr);
        EXPECT_EQ(test::download(reinterpret_cast<const uint16_t*>(h), n),
                  gate_up_via_gemv(dev, ex.qe, x, d_ids, pairs, k, I, H, E, shape));
      }
  // Down + combine against the CPU reference.
  struct DownCase {
    int k;
    std::vector<int32_t> ids;
  };
  const std::vector<DownCase> cases = {{2, {3, 5}},
                                       {2, {2, 0, 2, 3, 1, 2}},
                                       {2, {0, 1, 2, 3, 4, 5, 6, 7, 7, 6, 5, 4, 3, 2, 1, 0}},
                                       {1, {6}},
                                       {4, {0, 3, 5, 6, 1, 3, 2, 7}}};
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (auto [N, K] : {std::pair<int, int>{301, 2080}, {64, 14336}, {40, 512}})
      for (int mode = 0; mode < (f == QuantFormat::int4 ? 3 : 1); ++mode) {  // int4: 1 zero points, 2 paired
        const int E = 8;
        std::mt19937 g(static_cast<uint32_t>(N + K + mode));
        DeviceBuffers dev;
        Experts ex(dev, f, mode == 1, N, K, E, g);
        if (mode == 2) ex.pair();
        for (const DownCase& dc : cases) {
          const int k = dc.k, pairs = static_cast<int>(dc.ids.size());
          const DownInputs in(dev, dc.ids, k, N, K, g);
          for (int var : {cuda::kQuantVariantRows, cuda::kQuantVariantRows + 1, cuda::kQuantVariantRows + 3,
                          cuda::kQuantVariantRows + 4, cuda::kQuantVariantRows + 6, cuda::kQuantVariantExact,
                          cuda::kQuantVariantExact + 1, cuda::kQuantVariantExact + 2})
            for (bool early : {false, true}) {
              SCOPED_TRACE(testing::Message() << quant_format_name(f) << (mode == 1 ? " zp" : mode == 2 ? " paired" : "")
                                              << " down var " << var << " N=" << N << " K=" << K << " k " << k
                                              << " pairs " << pairs << " ids early " << early);
              float* res = dev.up(in.res0);
              cuda::quant_moe_down_combine(ex.qe, in.h, in.ids, in.w, pairs, k, N, K, E, res, early, nullptr, 0, var);
              EXPECT_EQ(down_combine_misses(ex, dc.ids, in, test::download(res, in.res0.size()), k, N, K, 1), 0u);
            }
        }
      }
}

// The exact warp kernels (quant_gemv_rows.h, variants 40 .. 42, the one-token default for
// int8 and fp8): bit for bit the tile kernel's plain loop (variant 0) at its default shape,
// 4 warps a block (from 132 row tiles on): the GEMV per token and per pair, the fused
// gate/up and the down + combine (ids read before and after the wait), with an odd row
// count (2113: a last row pair of one row), rows whose super-steps do not fill the four
// tile warps' chains evenly and end in a partial super-step (2080 inputs), Mixtral's
// gate/up width (4096) and down width (14336, int8 and fp8); int4 symmetric, with zero
// points and in the paired order; top-1, 2 and 4 at one token, and 3 tokens sharing an
// expert (several pairs an expert: the tile kernel puts them in other mma columns). And
// the default launches (no variant named) equal variant 0 where the exact kernel is their
// default.
TEST_F(QuantCuda, ExactWarpKernelsAreBitForBitTheTileKernel) {
  struct IdCase {
    int k;
    std::vector<int32_t> ids;
  };
  const std::vector<IdCase> cases = {{2, {3, 1}}, {1, {2}}, {4, {0, 3, 1, 2}}, {2, {2, 0, 2, 3, 1, 2}}};
  struct Fmt {
    QuantFormat f;
    bool zero_points, paired;
  };
  const Fmt fmts[] = {{QuantFormat::int8, false, false},
                      {QuantFormat::fp8, false, false},
                      {QuantFormat::int4, false, false},
                      {QuantFormat::int4, true, false},
                      {QuantFormat::int4, false, true}};
  for (const Fmt& fm : fmts)
    for (auto [N, K] : {std::pair<int, int>{2113, 2080}, {2112, 4096}, {2112, 14336}}) {
      const QuantFormat f = fm.f;
      if (K == 14336 && f == QuantFormat::int4) continue;  // int4's long rows: 4096 inputs cover several chains
      std::mt19937 rng(static_cast<uint32_t>(N + K + 2 * fm.zero_points + fm.paired));
      DeviceBuffers dev;
      const int E = 4;
      Experts ex(dev, f, fm.zero_points, N, K, E, rng);
      if (fm.paired) ex.pair();
      for (const IdCase& ic : cases) {
        const int k = ic.k, pairs = static_cast<int>(ic.ids.size());
        SCOPED_TRACE(testing::Message() << quant_format_name(f) << (fm.zero_points ? " zp" : "")
                                        << (fm.paired ? " paired" : "") << " N=" << N << " K=" << K << " k " << k
                                        << " pairs " << pairs);
        const DownInputs in(dev, ic.ids, k, N, K, rng);  // h: one input row a pair (also the GEMV's x)
        const size_t n_out = static_cast<size_t>(pairs) * N, n_h = static_cast<size_t>(pairs) * (N / 2);
        auto gemv = [&](bool per_pair, int var) {
          float* y = dev.up(std::vector<float>(n_out, -1.0f));
          cuda::QuantGemvShape shape;
          shape.var = var;
          cuda::quant_moe_gemv_shaped(ex.qe, in.h, per_pair, in.ids, pairs, k, N, K, E, y, shape, nullptr);
          return test::download(y, n_out);
        };
        auto gate_up = [&](int var) {
          auto* h = reinterpret_cast<__nv_bfloat16*>(dev.up(std::vector<uint16_t>(n_h, 0xffff)));
          cuda::QuantGemvShape shape;
          shape.var = var;
          cuda::quant_moe_gemv_gate_up_shaped(ex.qe, in.h, in.ids, pairs, k, N / 2, K, E, h, shape, nullptr);
          return test::download(reinterpret_cast<const uint16_t*>(h), n_h);
        };
        auto down = [&](int var, bool early) {
          float* res = dev.up(in.res0);
          cuda::quant_moe_down_combine(ex.qe, in.h, in.ids, in.w, pairs, k, N, K, E, res, early, nullptr, 0, var);
          return test::download(res, in.res0.size());
        };
        const std::vector<float> tok0 = gemv(false, 0), pair0 = gemv(true, 0), down0 = down(0, false);
        const std::vector<uint16_t> gu0 = gate_up(0);
        for (int var = -1; var < cuda::kQuantVariantExact + cuda::kQuantExactShapes; ++var) {
          if (var >= 0 && !cuda::is_exact_variant(var)) var = cuda::kQuantVariantExact;
          EXPECT_EQ(gemv(false, var), tok0) << "variant " << var << ", per token";
          EXPECT_EQ(gemv(true, var), pair0) << "variant " << var << ", per pair";
          EXPECT_EQ(gate_up(var), gu0) << "variant " << var << ", fused gate/up";
          if (!cuda::quant_rows_down_combine_takes(k)) continue;
          for (bool early : {false, true})
            EXPECT_EQ(down(var, early), down0) << "variant " << var << ", down/combine, ids early " << early;
        }
      }
    }
}

// The exact kernels' fp16 form (the default; quant_gemv_rows.cu stage_half) scales each
// activation row by a power of two into fp16: bit for bit the tile kernel's bf16 sums for
// rows far above or below fp16's range and for a row of zeros; a row whose values span more
// than fp16 holds exactly (one large value, the rest 2^-40 of it) stays within the bound
// stage_half states for the values below its line (2^-24 of the largest each).
TEST_F(QuantCuda, ExactFp16FormAcrossActivationRanges) {
  const int N = 2112, K = 4096, E = 4, k = 2;
  const std::vector<int32_t> ids = {3, 1};
  for (QuantFormat f : {QuantFormat::int8, QuantFormat::fp8, QuantFormat::int4}) {
    std::mt19937 rng(77);
    DeviceBuffers dev;
    Experts ex(dev, f, false, N, K, E, rng);
    if (f == QuantFormat::int4) ex.pair();
    DownInputs in(dev, ids, k, N, K, rng);
    std::uniform_int_distribution<int> spread(-6, 6);
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    struct Rows {
      const char* what;
      double scale0, scale1;  // each pair's row: the inputs times scale 2^spread (0: zeros)
      bool exact;
    };
    for (const Rows& rc : {Rows{"2^30 and 2^-30", std::ldexp(1.0, 30), std::ldexp(1.0, -30), true},
                           Rows{"2^-60 and zeros", std::ldexp(1.0, -60), 0.0, true},
                           Rows{"one large value over 2^-40", -1.0, 1.0, false}}) {
      SCOPED_TRACE(testing::Message() << quant_format_name(f) << ": " << rc.what);
      std::vector<uint16_t> hb = in.hb;
      for (int p = 0; p < 2; ++p) {
        const double sc = p == 0 ? rc.scale0 : rc.scale1;
        for (int i = 0; i < K; ++i) {
          uint16_t& v = hb[static_cast<size_t>(p) * K + i];
          if (sc < 0) v = f32_to_bf16(i == 5 ? 3.0f : std::ldexp(bf16_to_f32(v), -40));
          else  // +-(1 + u) 2^spread times the scale: every value within 2^-13 of the row's largest
            v = f32_to_bf16(static_cast<float>((unit(rng) < 0.5f ? -1.0 : 1.0) * (1.0 + unit(rng)) * sc *
                                               std::ldexp(1.0, spread(rng))));
        }
      }
      const auto* h = reinterpret_cast<const __nv_bfloat16*>(dev.up(hb));
      const size_t n_out = 2 * static_cast<size_t>(N), n_h = 2 * static_cast<size_t>(N / 2);
      auto gemv = [&](int var) {
        float* y = dev.up(std::vector<float>(n_out, -1.0f));
        cuda::QuantGemvShape shape;
        shape.var = var;
        cuda::quant_moe_gemv_shaped(ex.qe, h, true, in.ids, 2, k, N, K, E, y, shape, nullptr);
        return test::download(y, n_out);
      };
      auto gate_up = [&](int var) {
        auto* o = reinterpret_cast<__nv_bfloat16*>(dev.up(std::vector<uint16_t>(n_h, 0xffff)));
        cuda::QuantGemvShape shape;
        shape.var = var;
        cuda::quant_moe_gemv_gate_up_shaped(ex.qe, h, in.ids, 2, k, N / 2, K, E, o, shape, nullptr);
        return test::download(reinterpret_cast<const uint16_t*>(o), n_h);
      };
      auto down = [&](int var) {
        float* res = dev.up(in.res0);
        cuda::quant_moe_down_combine(ex.qe, h, in.ids, in.w, 2, k, N, K, E, res, false, nullptr, 0, var);
        return test::download(res, in.res0.size());
      };
      const std::vector<float> tile = gemv(0), tile_down = down(0);
      const std::vector<uint16_t> tile_gu = gate_up(0);
      for (int var : {cuda::kQuantVariantExact, cuda::kQuantVariantExact + 4}) {
        SCOPED_TRACE(testing::Message() << "variant " << var);
        const std::vector<float> got = gemv(var), got_down = down(var);
        if (rc.exact) {
          EXPECT_EQ(got, tile);
          EXPECT_EQ(got_down, tile_down);
          EXPECT_EQ(gate_up(var), tile_gu);
          continue;
        }
        // Below the line: each of the K - 1 small values moves by at most 2^-39 of the largest
        // (3), times a weight of at most |code x scale| <= 1 here, and the fp32 sums of the two
        // forms round apart by a few units of the last place of a total of at most ~3.
        const double tol = (K - 1) * 3.0 * std::ldexp(1.0, -39) + 8 * 3.0 * std::ldexp(1.0, -24);
        for (size_t i = 0; i < n_out; ++i) ASSERT_LE(std::fabs(got[i] - tile[i]), tol) << "output " << i;
      }
    }
  }
}

}  // namespace quant_cuda_test

#endif  // MOEBENCH_HAVE_CUDA
