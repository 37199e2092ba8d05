// cuda_gemv_staged_test.cpp: the one-row GEMV with its weights staged in shared memory
// (gemv_staged.h) against the GEMV it replaces (linear at one row, accumulating: bit for
// bit) and the CPU reference, launched several times in a row (each launch's tickets must
// give every rank once, whatever the launches before took); and the model's decode steps with
// MOEBENCH_OPROJ_STAGED's levels (the staged o_proj, the attention launches letting its
// blocks in early) against the default, bit for bit. Skipped without a GPU.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/device.h"
#include "engine/cuda/gemv_staged.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/dtype.h"
#include "engine/engine.h"
#include "engine/weight_source.h"
#include "tests/cuda_ctx.h"
#include "tests/cuda_decode_run.h"
#include "tests/device_copy.h"

namespace cuda_gemv_staged_test {

using namespace moebench;
using test::download;
using test::upload;

namespace {

// Shapes: o_proj of Mixtral (4096 x 4096: more chunks than the SMs stage) and Qwen3-30B-A3B
// (2048 rows of 4096), row counts that are no multiple of a chunk's 8, each compiled K.
TEST(CudaGemvStaged, MatchesTheGemvBitForBitAndTheCpuReference) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA staged GEMV test skipped";
  struct Shape {
    int K, N;
  };
  std::mt19937 rng(41);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const Shape sh : {Shape{4096, 4096}, Shape{4096, 2048}, Shape{2048, 1003}, Shape{1024, 2049}, Shape{512, 37},
                         Shape{256, 8}, Shape{4096, 5}}) {
    const int K = sh.K, N = sh.N;
    SCOPED_TRACE("K " + std::to_string(K) + " N " + std::to_string(N));
    std::vector<uint16_t> x(K), w(static_cast<size_t>(N) * K);
    std::vector<float> y(N);
    for (auto& v : x) v = f32_to_bf16(nd(rng));
    for (auto& v : w) v = f32_to_bf16(0.02f * nd(rng));
    for (auto& v : y) v = nd(rng);
    cuda::DeviceArena arena(160ull << 20, "gemv_staged test");
    const auto* xd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, x));
    const auto* wd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, w));
    float* y1 = upload(arena, y, "y, gemv");
    float* y2 = upload(arena, y, "y, staged");
    ASSERT_TRUE(cuda::gemv_staged_supported(xd, wd, K, N));
    std::vector<double> want(y.begin(), y.end());
    for (int rep = 0; rep < 3; ++rep) {
      SCOPED_TRACE("launch " + std::to_string(rep + 1));
      cuda::linear(xd, wd, y1, 1, K, N, true, nullptr, nullptr);
      cuda::gemv_staged(xd, wd, y2, K, N, nullptr);
      const auto got = download(y2, N);
      ASSERT_EQ(download(y1, N), got) << "y differs from the GEMV's";
      for (int r = 0; r < N; ++r) {
        double s = 0;
        for (int k = 0; k < K; ++k)
          s += static_cast<double>(bf16_to_f32(w[static_cast<size_t>(r) * K + k])) * bf16_to_f32(x[k]);
        want[r] += s;
        ASSERT_NEAR(got[r], want[r], 1e-4 * (1.0 + std::fabs(want[r]))) << "row " << r;
      }
    }
  }
  int dummy = 0;
  EXPECT_FALSE(cuda::gemv_staged_supported(&dummy, &dummy, 768, 8));   // K / 256 not compiled
  EXPECT_FALSE(cuda::gemv_staged_supported(&dummy, &dummy, 8192, 8));  // K over 4096
  EXPECT_FALSE(cuda::gemv_staged_supported(&dummy, &dummy, 4100, 8));  // K % 256
  EXPECT_FALSE(cuda::gemv_staged_supported(&dummy, &dummy, 4096, 0));  // no rows
  EXPECT_FALSE(cuda::gemv_staged_supported(reinterpret_cast<char*>(&dummy) + 2, &dummy, 4096, 8));  // alignment
  EXPECT_EQ(cuda::gemv_staged_chunks(4096), 3);  // 192 KiB of shared memory a block
  EXPECT_EQ(cuda::gemv_staged_chunks(512), 8);
  const int sms = cuda::device_info_cached().sm_count;
  EXPECT_EQ(cuda::gemv_staged_holds_all(4096, 24 * sms),
            cuda::device_info_cached().cc_major >= 9);  // 3 chunks of 8 rows a block, on Hopper
  EXPECT_FALSE(cuda::gemv_staged_holds_all(4096, 24 * sms + 1));
}

// The model (synthetic:small: q_dim 512, 4 query heads a KV head, so past 64 keys the key
// splits meet in a merge launch) with each level: the same eager decode logits and the same
// graph-replayed greedy tokens as the one-row GEMV, bf16 and int8 experts.
TEST(CudaGemvStaged, ModelStepsMatchTheDefaultAtEachLevel) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA staged GEMV model test skipped";
  auto src = WeightSource::open("synthetic:small", 5);
  const std::vector<int32_t> prompt = {5, 9, 2, 17, 4, 11, 3};
  const int end = 100;  // past the one-split range: the merge launch runs
  for (const std::string dtype : {"bf16", "int8"}) {
    auto run = [&](int level, std::vector<float>& logits) {
      const cuda::ScopedSwitch staged(cuda::set_o_proj_staged, level, -2);
      EngineContext ctx = test::cuda_ctx(src);
      ctx.settings.expert_dtype = dtype;
      cuda::CudaModel cm(ctx);
      return test::eager_then_graph_decode(cm, prompt, end, logits);
    };
    std::vector<float> l0;
    const auto t0 = run(0, l0);
    for (const int level : {1, 2, -1}) {  // -1: by shape (this one's o_proj fits the SMs: 2)
      SCOPED_TRACE("expert_dtype " + dtype + ", level " + std::to_string(level));
      std::vector<float> l;
      const auto t = run(level, l);
      ASSERT_EQ(l0.size(), l.size());
      EXPECT_TRUE(l0 == l) << "decode logits differ from the one-row GEMV's";
      EXPECT_EQ(t0, t) << "greedy tokens differ from the one-row GEMV's";
    }
  }
}

}  // namespace

}  // namespace cuda_gemv_staged_test

#endif  // MOEBENCH_HAVE_CUDA
