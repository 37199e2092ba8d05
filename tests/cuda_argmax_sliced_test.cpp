// cuda_argmax_sliced_test.cpp: the argmax over a block per slice of a row (argmax_sliced,
// ops.cuh) against the one-block argmax: the same ids for Qwen3's vocabulary (151936) and
// others that leave a partial last slice, up to 8 rows, with the maximum repeated across
// slices (ties to the lower index), at a slice's first and last logit, all logits equal,
// and rows holding a NaN or an infinity (-1). Launched twice, the same ids (the per-row
// completion counters are left at zero). Skipped, with a message, without a GPU.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/device.h"
#include "engine/cuda/ops.cuh"
#include "device_copy.h"

namespace cuda_argmax_sliced_test {

using namespace moebench;
using test::download;
using test::upload;

namespace {

TEST(CudaArgmaxSliced, SameIdsAsTheOneBlockArgmax) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA argmax test skipped";
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  cuda::DeviceArena arena(64ull << 20, "argmax test");
  int checked = 0;
  for (const int vocab : {151936, 32768, 50304, 4097, 8192 * 3 + 5}) {
    for (const int n : {1, 3, 8}) {
      SCOPED_TRACE("vocab " + std::to_string(vocab) + ", " + std::to_string(n) + " rows");
      ASSERT_TRUE(cuda::argmax_sliced_supported(n, vocab));
      std::vector<float> l(static_cast<size_t>(n) * vocab);
      for (auto& v : l) v = nd(rng);
      auto row = [&](int i) { return l.begin() + static_cast<int64_t>(i) * vocab; };
      // Row 0: random. Row 1: the maximum at the last logit and again earlier in another
      // slice (the earlier wins). Row 2: the maximum at a slice's first logit, a NaN in
      // the 8-row case's row 2 instead. Rows 3..: all equal; +inf; a tie inside a slice.
      if (n > 1) {
        row(1)[vocab - 1] = 100.0f;
        row(1)[vocab / 3] = 100.0f;
      }
      if (n > 2) row(2)[4096] = 50.0f;
      if (n == 8) {
        row(2)[vocab / 2] = std::numeric_limits<float>::quiet_NaN();
        std::fill(row(3), row(4), 1.5f);
        row(4)[vocab - 2] = std::numeric_limits<float>::infinity();
        row(5)[17] = 70.0f;
        row(5)[18] = 70.0f;
        row(6)[0] = 70.0f;
      }
      const float* ld = upload(arena, l);
      int32_t* want = arena.alloc_n<int32_t>(n, "ids");
      int32_t* have = arena.alloc_n<int32_t>(n, "ids sliced");
      cuda::argmax(ld, want, n, vocab, nullptr);
      const auto w = download(want, n);
      for (int rep = 0; rep < 2; ++rep) {
        cuda::argmax_sliced(ld, have, n, vocab, nullptr);
        EXPECT_EQ(w, download(have, n)) << "launch " << rep + 1;
      }
      if (n > 1) {
        EXPECT_EQ(w[1], vocab / 3);
      }
      if (n == 8) {
        EXPECT_EQ(w[2], -1);
        EXPECT_EQ(w[3], 0);
        EXPECT_EQ(w[4], -1);
        EXPECT_EQ(w[5], 17);
        EXPECT_EQ(w[6], 0);
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 15);
  EXPECT_FALSE(cuda::argmax_sliced_supported(9, 151936));   // 9 rows
  EXPECT_FALSE(cuda::argmax_sliced_supported(1, 4096));     // one slice: the one-block kernel
  EXPECT_FALSE(cuda::argmax_sliced_supported(1, 1 << 20));  // more than 128 slices
}

}  // namespace

}  // namespace cuda_argmax_sliced_test

#endif
