// cuda_gemv_splitk_test.cpp: the one-row GEMV with each row split over several warps
// (cuda::gemv_splitk) against the fp32 CPU product on the same bf16 weights and input:
// Mixtral's k/v projection (1024 x 4096) and small odd row counts, 2, 4 and 8 splits,
// written and accumulated; the same bits on a second run; shapes it does not take are an
// Error. Skipped, with a message, without a GPU.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <cuda_bf16.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/ops.cuh"
#include "engine/dtype.h"
#include "tests/device_copy.h"

using namespace moebench;
using test::download;
using test::upload;

namespace {

TEST(CudaGemvSplitK, MatchesTheCpuProductAndRepeatsItsBits) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA split-K GEMV tests skipped";
  std::mt19937 rng(29);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  struct Shape {
    int out, in;
  };
  for (const Shape sh : {Shape{1024, 4096}, Shape{7, 128}, Shape{13, 1024}, Shape{300, 14336}})
    for (const int splits : {2, 4, 8})
      for (const bool accumulate : {false, true}) {
        if (sh.in % (8 * splits) != 0) continue;
        SCOPED_TRACE(std::to_string(sh.out) + " x " + std::to_string(sh.in) + ", " + std::to_string(splits) +
                     " splits" + (accumulate ? ", accumulated" : ""));
        std::vector<uint16_t> w(static_cast<size_t>(sh.out) * sh.in), x(sh.in);
        for (auto& v : w) v = f32_to_bf16(0.05f * nd(rng));
        for (auto& v : x) v = f32_to_bf16(nd(rng));
        std::vector<float> y0(sh.out);
        for (auto& v : y0) v = nd(rng);
        std::vector<double> ref(sh.out), mag(sh.out);  // the product in double, and the sum of |terms|
        for (int r = 0; r < sh.out; ++r) {
          double sum = accumulate ? y0[r] : 0.0, m = accumulate ? std::fabs(y0[r]) : 0.0;
          for (int k = 0; k < sh.in; ++k) {
            const double p = static_cast<double>(bf16_to_f32(w[static_cast<size_t>(r) * sh.in + k])) * bf16_to_f32(x[k]);
            sum += p;
            m += std::fabs(p);
          }
          ref[r] = sum;
          mag[r] = m;
        }
        cuda::DeviceArena arena(256ull << 20, "split-K GEMV test");
        const auto* wd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, w));
        const auto* xd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, x));
        float *y1 = upload(arena, y0), *y2 = upload(arena, y0);
        cuda::gemv_splitk(xd, wd, y1, sh.in, sh.out, accumulate, splits, nullptr);
        cuda::gemv_splitk(xd, wd, y2, sh.in, sh.out, accumulate, splits, nullptr);
        const std::vector<float> g1 = download(y1, sh.out), g2 = download(y2, sh.out);
        EXPECT_EQ(g1, g2) << "two runs differ";
        size_t bad = 0;
        for (int r = 0; r < sh.out; ++r) {
          // fp32 sums in another order than the reference's double sum; a lost chunk of 8
          // terms would be off by about 8 / sh.in of mag: 5x this at 14336 terms, 600x at 128
          const double tol = 1e-4 * mag[r] + 1e-6;
          if (!(std::fabs(g1[r] - ref[r]) <= tol) && bad++ < 5)
            ADD_FAILURE() << "row " << r << ": got " << g1[r] << ", CPU " << ref[r];
        }
        EXPECT_EQ(bad, 0u);
      }
}

TEST(CudaGemvSplitK, RefusesShapesItDoesNotTake) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA split-K GEMV tests skipped";
  cuda::DeviceArena arena(1ull << 20, "split-K GEMV refusal");
  auto* w = arena.alloc_n<__nv_bfloat16>(64 * 96, "w");
  auto* x = arena.alloc_n<__nv_bfloat16>(96, "x");
  auto* y = arena.alloc_n<float>(64, "y");
  for (const int splits : {3, 16}) EXPECT_THROW(cuda::gemv_splitk(x, w, y, 96, 64, false, splits, nullptr), Error);
  EXPECT_THROW(cuda::gemv_splitk(x, w, y, 96, 64, false, 8, nullptr), Error);  // 96 % 64 != 0
}

}  // namespace

#endif  // MOEBENCH_HAVE_CUDA
