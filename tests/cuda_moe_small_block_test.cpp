// cuda_moe_small_block_test.cpp: the one-launch decode MoE block over many small experts
// (moe_small_block.h) against the launches it replaces, norm_router (the wide kernel)
// then moe_decode_small: the normed token, the router logits, the top-k ids and weights
// and the residual after the routed sum, bit for bit, for Qwen3-30B-A3B's shape (128
// experts of 768 rows, top-8, renormalised), OLMoE's (64 of 1024, softmax weights), a
// hidden and inter that leave partial chunks, top-1, 256 experts, and the residual read
// and written in one buffer or in two; and with the attention's output projection in the
// launch against gemv (accumulating into the residual) before those. Launched again, the
// same bytes (its grid barriers' counters are left at zero). The launches it replaces are
// checked against the CPU reference in cuda_families_test.cpp, which runs this one where
// MOEBENCH_SMALL_MOE_BLOCK is set. Skipped, with a message, without a GPU.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/device.h"
#include "engine/cuda/moe_small_block.h"
#include "engine/cuda/moe_small_experts.h"
#include "engine/cuda/norm_router.h"
#include "engine/cuda/ops.cuh"
#include "engine/dtype.h"
#include "device_copy.h"

namespace cuda_moe_small_block_test {

using namespace moebench;
using test::download;
using test::upload;

namespace {

TEST(CudaMoeSmallBlock, BitIdenticalToNormRouterThenSmallExperts) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA MoE block test skipped";
  struct Shape {
    int hidden, inter, experts, k;
    bool renorm, separate_out;
    int q_dim;  // the attention output's width for the o_proj launch
  };
  std::mt19937 rng(53);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const Shape sh : {Shape{2048, 768, 128, 8, true, false, 4096}, Shape{2048, 1024, 64, 8, false, false, 2048},
                         Shape{520, 264, 40, 6, true, true, 512}, Shape{264, 96, 33, 1, true, false, 256},
                         Shape{2048, 768, 256, 8, false, true, 2048}}) {
    SCOPED_TRACE("hidden " + std::to_string(sh.hidden) + " inter " + std::to_string(sh.inter) + " experts " +
                 std::to_string(sh.experts) + " top-" + std::to_string(sh.k) +
                 (sh.renorm ? " renormalised" : " softmax weights") + (sh.separate_out ? ", separate out" : ""));
    const int H = sh.hidden, I = sh.inter, E = sh.experts, k = sh.k;
    cuda::DeviceArena arena(512ull << 20, "MoE block test");
    std::vector<float> x(H);
    for (auto& v : x) v = 3 * nd(rng);
    std::vector<uint16_t> nw(H), gate(static_cast<size_t>(E) * H);
    for (auto& v : nw) v = f32_to_bf16(1.0f + 0.1f * nd(rng));
    for (auto& v : gate) v = f32_to_bf16(0.05f * nd(rng));
    const auto* nwd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, nw));
    const auto* gd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, gate));
    ASSERT_TRUE(cuda::moe_small_block_supported(1, k, E, H, I, gd, gd));
    // 17 random matrices dealt round the 3 x E table entries (which k the router picks is
    // the kernel's to find; neighbouring experts and matrices hold different weights).
    const size_t mat = static_cast<size_t>(H) * I;
    std::vector<const __nv_bfloat16*> pool(17);
    std::vector<uint16_t> m(mat);
    for (auto& p : pool) {
      for (auto& v : m) v = f32_to_bf16(0.05f * nd(rng));
      p = reinterpret_cast<const __nv_bfloat16*>(upload(arena, m));
    }
    std::vector<const __nv_bfloat16*> t(3 * static_cast<size_t>(E));
    for (size_t i = 0; i < t.size(); ++i) t[i] = pool[i % pool.size()];
    const __nv_bfloat16* const* td = upload(arena, t);
    const __nv_bfloat16* const* w1 = td;
    const __nv_bfloat16* const* w3 = td + E;
    const __nv_bfloat16* const* w2 = td + 2 * E;
    const float eps = 1e-6f;
    const int Q = sh.q_dim;
    std::vector<uint16_t> att(Q), wo(static_cast<size_t>(H) * Q);
    for (auto& v : att) v = f32_to_bf16(nd(rng));
    for (auto& v : wo) v = f32_to_bf16(0.05f * nd(rng));
    const auto* attd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, att));
    const auto* wod = reinterpret_cast<const __nv_bfloat16*>(upload(arena, wo));
    ASSERT_TRUE(cuda::moe_small_block_o_proj_supported(Q, attd, wod));
    struct Out {
      std::vector<uint16_t> h;
      std::vector<float> logits;
      std::vector<int32_t> ids;
      std::vector<float> wts;
      std::vector<float> resid;
    };
    // Both launches twice in a row on fresh buffers: the residual takes two routed sums.
    // o_proj: the output projection first (gemv, accumulating into x; then out is x).
    auto run = [&](bool block, bool o_proj) {
      float* xd = upload(arena, x);
      float* out = sh.separate_out && !o_proj ? upload(arena, std::vector<float>(H, 0.25f)) : xd;
      auto* h = arena.alloc_n<__nv_bfloat16>(H, "h");
      float* logits = arena.alloc_n<float>(E, "logits");
      int32_t* ids = arena.alloc_n<int32_t>(k, "ids");
      float* wts = arena.alloc_n<float>(k, "weights");
      auto* mh = arena.alloc_n<__nv_bfloat16>(static_cast<size_t>(k) * I, "moe h");
      std::vector<Out> got;
      for (int rep = 0; rep < 2; ++rep) {
        if (block && o_proj) {
          cuda::moe_small_block_o_proj(attd, wod, Q, xd, nwd, eps, gd, h, logits, ids, wts, w1, w3, w2, mh, k, E, H, I,
                                       sh.renorm, nullptr);
        } else if (block) {
          cuda::moe_small_block(xd, nwd, eps, gd, h, logits, ids, wts, w1, w3, w2, mh, out, k, E, H, I, sh.renorm,
                                nullptr);
        } else {
          if (o_proj) cuda::gemv(attd, wod, xd, 1, Q, H, true, nullptr);
          cuda::norm_router(xd, nwd, eps, gd, h, logits, ids, wts, 1, H, E, k, nullptr, sh.renorm);
          cuda::moe_decode_small(h, ids, wts, w1, w3, w2, mh, out, k, E, H, I, nullptr);
        }
        got.push_back(Out{download(reinterpret_cast<const uint16_t*>(h), H), download(logits, E), download(ids, k),
                          download(wts, k), download(out, H)});
      }
      return got;
    };
    for (const bool o_proj : {false, true}) {
      SCOPED_TRACE(o_proj ? "with o_proj" : "without o_proj");
      const std::vector<Out> want = run(false, o_proj), have = run(true, o_proj);
      for (int rep = 0; rep < 2; ++rep) {
        SCOPED_TRACE("launch " + std::to_string(rep + 1));
        EXPECT_EQ(want[rep].h, have[rep].h) << "h";
        EXPECT_EQ(0, std::memcmp(want[rep].logits.data(), have[rep].logits.data(), E * sizeof(float))) << "logits";
        EXPECT_EQ(want[rep].ids, have[rep].ids) << "ids";
        EXPECT_EQ(0, std::memcmp(want[rep].wts.data(), have[rep].wts.data(), k * sizeof(float))) << "weights";
        EXPECT_EQ(0, std::memcmp(want[rep].resid.data(), have[rep].resid.data(), H * sizeof(float))) << "residual";
      }
      EXPECT_NE(want[0].resid, want[1].resid) << "the second launch added nothing";
    }
  }
  EXPECT_FALSE(cuda::moe_small_block_o_proj_supported(4100, nullptr, nullptr));  // q_dim % 32
  EXPECT_FALSE(cuda::moe_small_block_supported(2, 8, 128, 2048, 768, nullptr, nullptr));  // two tokens
  EXPECT_FALSE(cuda::moe_small_block_supported(1, 2, 8, 4096, 14336, nullptr, nullptr));  // Mixtral
  EXPECT_FALSE(cuda::moe_small_block_supported(1, 8, 128, 32768, 768, nullptr, nullptr));  // hidden > 16384
}

}  // namespace

}  // namespace cuda_moe_small_block_test

#endif
