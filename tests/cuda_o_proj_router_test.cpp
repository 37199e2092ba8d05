// cuda_o_proj_router_test.cpp: o_proj with the MoE block's norm + router in one launch
// (o_proj_norm_router, the last block to finish takes the router) against the two launches
// it replaces (the one-row GEMV accumulating into x, then norm_router) bit for bit, and
// against the CPU reference (x += att @ wo^T in fp32, the norm, exact router dot products
// and the top-k). Skipped without a GPU.
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
#include "engine/cuda/launch_env.h"
#include "engine/cuda/norm_router.h"
#include "engine/cuda/o_proj_router.h"
#include "engine/cuda/ops.cuh"
#include "engine/dtype.h"
#include "engine/engine.h"
#include "engine/ops/ops.h"
#include "engine/weight_source.h"
#include "tests/cuda_ctx.h"
#include "tests/cuda_decode_run.h"
#include "tests/device_copy.h"

namespace cuda_o_proj_router_test {

using namespace moebench;
using test::download;
using test::upload;

namespace {

std::vector<float> bf16_floats(const std::vector<uint16_t>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = bf16_to_f32(v[i]);
  return f;
}

// One shape per rows-per-warp the GEMV takes (1024 and 2048 rows: 1, 3072: 2, 4096: 4),
// renormalised and softmax weights, with and without the top-k (a staged routing source
// asks for the logits only); each launched twice, so the completion counter must be back
// at zero after a launch.
TEST(CudaOProjRouter, MatchesGemvThenNormRouterAndTheCpuReference) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA o_proj + router test skipped";
  struct Shape {
    int q_dim, hidden, experts, k;
  };
  std::mt19937 rng(29);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  int compared = 0;  // tokens whose top-k set is clear of fp32 reordering
  for (const Shape sh : {Shape{4096, 4096, 8, 2}, Shape{1024, 1024, 8, 2}, Shape{2048, 2048, 4, 1},
                         Shape{1024, 3072, 8, 3}, Shape{4096, 4096, 8, 8}}) {
    const int Q = sh.q_dim, H = sh.hidden, E = sh.experts, k = sh.k;
    SCOPED_TRACE("q_dim " + std::to_string(Q) + " hidden " + std::to_string(H) + " experts " + std::to_string(E) +
                 " k " + std::to_string(k));
    std::vector<uint16_t> att(Q), wo(static_cast<size_t>(H) * Q), nw(H), gate(static_cast<size_t>(E) * H);
    std::vector<float> x(H);
    for (auto& v : att) v = f32_to_bf16(nd(rng));
    for (auto& v : wo) v = f32_to_bf16(0.02f * nd(rng));
    for (auto& v : nw) v = f32_to_bf16(1.0f + 0.1f * nd(rng));
    for (auto& v : gate) v = f32_to_bf16(0.05f * nd(rng));
    for (auto& v : x) v = nd(rng);
    cuda::DeviceArena arena(128ull << 20, "o_proj_router test");
    const auto* attd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, att));
    const auto* wod = reinterpret_cast<const __nv_bfloat16*>(upload(arena, wo));
    const auto* nwd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, nw));
    const auto* gd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, gate));
    float* x1 = arena.alloc_n<float>(H, "x, two launches");
    float* x2 = arena.alloc_n<float>(H, "x, one launch");
    auto* h1 = arena.alloc_n<__nv_bfloat16>(H, "h, two launches");
    auto* h2 = arena.alloc_n<__nv_bfloat16>(H, "h, one launch");
    float* l1 = arena.alloc_n<float>(E, "logits, two launches");
    float* l2 = arena.alloc_n<float>(E, "logits, one launch");
    int32_t* i1 = arena.alloc_n<int32_t>(k, "ids, two launches");
    int32_t* i2 = arena.alloc_n<int32_t>(k, "ids, one launch");
    float* w1 = arena.alloc_n<float>(k, "weights, two launches");
    float* w2 = arena.alloc_n<float>(k, "weights, one launch");
    ASSERT_TRUE(cuda::o_proj_norm_router_supported(Q, H, E, k, attd, wod, gd, h2));
    const std::vector<float> attf = bf16_floats(att), wof = bf16_floats(wo), nwf = bf16_floats(nw),
                             gatef = bf16_floats(gate);
    for (const bool renorm : {true, false})
      for (const bool with_ids : {true, false})
        for (int rep = 0; rep < 2; ++rep) {
          SCOPED_TRACE(std::string(renorm ? "renormalised" : "softmax weights") + (with_ids ? ", top-k" : ", logits") +
                       ", launch " + std::to_string(rep + 1));
          const auto xd = upload(arena, x);
          CUDA_CHECK(cudaMemcpy(x1, xd, H * sizeof(float), cudaMemcpyDeviceToDevice));
          CUDA_CHECK(cudaMemcpy(x2, xd, H * sizeof(float), cudaMemcpyDeviceToDevice));
          cuda::linear(attd, wod, x1, 1, Q, H, true, nullptr, nullptr);
          cuda::norm_router(x1, nwd, 1e-5f, gd, h1, l1, with_ids ? i1 : nullptr, w1, 1, H, E, k, nullptr, renorm);
          cuda::o_proj_norm_router(attd, wod, Q, x2, nwd, 1e-5f, gd, h2, l2, with_ids ? i2 : nullptr, w2, H, E, k,
                                   nullptr, renorm);
          const auto xg = download(x2, H);
          EXPECT_EQ(download(x1, H), xg) << "x differs from the GEMV's";
          const auto hb = download(reinterpret_cast<const uint16_t*>(h2), H);
          EXPECT_EQ(download(reinterpret_cast<const uint16_t*>(h1), H), hb) << "h differs from norm_router's";
          const auto got = download(l2, E);
          EXPECT_EQ(download(l1, E), got) << "logits differ from norm_router's";
          if (with_ids) {
            EXPECT_EQ(download(i1, k), download(i2, k)) << "top-k ids differ from norm_router's";
            EXPECT_EQ(download(w1, k), download(w2, k)) << "top-k weights differ from norm_router's";
          }
          if (rep > 0) continue;
          // The CPU reference: x in fp32 within a bound on summation order, h from the
          // kernel's x within one bf16 rounding, the logits of the kernel's h, the top-k.
          std::vector<float> proj(H), xr(H), hr(H);
          cpu::linear(attf.data(), wof.data(), proj.data(), 1, Q, H);
          for (int d = 0; d < H; ++d) {
            double mag = std::fabs(x[d]);
            for (int c = 0; c < Q; ++c) mag += std::fabs(static_cast<double>(attf[c]) * wof[static_cast<size_t>(d) * Q + c]);
            xr[d] = x[d] + proj[d];
            EXPECT_LE(std::fabs(xg[d] - xr[d]), mag * Q * std::ldexp(1.0, -23)) << "x row " << d;
          }
          cpu::rmsnorm(xg.data(), nwf.data(), hr.data(), 1, H, 1e-5f);
          for (int d = 0; d < H; ++d)
            EXPECT_LE(std::fabs(bf16_to_f32(hb[d]) - hr[d]), std::fabs(hr[d]) * std::ldexp(1.0, -7) + 1e-6f) << "h " << d;
          std::vector<double> exact(E), bound(E);
          for (int e = 0; e < E; ++e) {
            double dot = 0, mag = 0;
            for (int d = 0; d < H; ++d) {
              const double t = static_cast<double>(bf16_to_f32(hb[d])) * gatef[static_cast<size_t>(e) * H + d];
              dot += t;
              mag += std::fabs(t);
            }
            exact[e] = dot;
            bound[e] = mag * H * std::ldexp(1.0, -24) + 1e-30;
            EXPECT_LE(std::fabs(got[e] - dot), bound[e]) << "expert " << e;
          }
          if (!with_ids || k == E) continue;
          std::vector<int> order(E);
          for (int e = 0; e < E; ++e) order[e] = e;
          std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return exact[a] > exact[b]; });
          if (exact[order[k - 1]] - exact[order[k]] <= bound[order[k - 1]] + bound[order[k]]) continue;  // near-tied
          std::vector<float> lr(got.begin(), got.end());
          std::vector<int32_t> want(k);
          std::vector<float> want_w(k);
          cpu::router_topk(lr.data(), want.data(), want_w.data(), 1, E, k, renorm);
          const auto ids = download(i2, k);
          std::vector<int32_t> a(want), b(ids.begin(), ids.end()), c(order.begin(), order.begin() + k);
          EXPECT_EQ(a, b) << "ids differ from the CPU top-k of the kernel's logits";
          std::sort(b.begin(), b.end());
          std::sort(c.begin(), c.end());
          EXPECT_EQ(b, c) << "ids differ from the exact logits' top-k";
          const auto wts = download(w2, k);
          for (int j = 0; j < k; ++j) EXPECT_NEAR(wts[j], want_w[j], 1e-6f) << "weight " << j;
          ++compared;
        }
  }
  EXPECT_GT(compared, 3);
  EXPECT_FALSE(cuda::o_proj_norm_router_supported(4096, 4096, 16, 2, nullptr, nullptr, nullptr, nullptr));  // > 8 experts
  EXPECT_FALSE(cuda::o_proj_norm_router_supported(4096, 8192, 8, 2, nullptr, nullptr, nullptr, nullptr));   // hidden > 4096
  EXPECT_FALSE(cuda::o_proj_norm_router_supported(4100, 4096, 8, 2, nullptr, nullptr, nullptr, nullptr));   // q_dim % 8
}

// The model with the switch on and off (synthetic:small: hidden 512, 8 experts, top-2, the
// shape the launch takes): bf16 and int8 experts, the gate's routing and a routing source's
// (the router's top-k left out, its logits reweighed); eager steps' logits and the
// graph-replayed greedy tokens identical, bit for bit.
TEST(CudaOProjRouter, ModelStepsMatchTheTwoLaunches) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA o_proj + router test skipped";
  auto src = WeightSource::open("synthetic:small", 5);
  const std::vector<int32_t> prompt = {5, 9, 2, 17, 4, 11, 3};
  const int end = 40;
  for (const std::string dtype : {"bf16", "int8"})
    for (const std::string routing : {"model", "mixtral-locality"}) {
      SCOPED_TRACE("expert_dtype " + dtype + ", routing " + routing);
      auto run = [&](bool fused, std::vector<float>& logits) {
        const cuda::ScopedSwitch router(cuda::set_o_proj_router, fused ? 1 : 0);
        EngineContext ctx = test::cuda_ctx(src);
        ctx.settings.expert_dtype = dtype;
        ctx.settings.routing = routing;
        ctx.settings.routing_seed = 3;
        cuda::CudaModel cm(ctx);
        return test::eager_then_graph_decode(cm, prompt, end, logits);
      };
      std::vector<float> l_two, l_one;
      const auto two = run(false, l_two);
      const auto one = run(true, l_one);
      ASSERT_EQ(l_two.size(), l_one.size());
      EXPECT_TRUE(l_two == l_one) << "decode logits differ between one launch and two";
      EXPECT_EQ(two, one) << "greedy tokens differ between one launch and two";
    }
}

}  // namespace

}  // namespace cuda_o_proj_router_test

#endif  // MOEBENCH_HAVE_CUDA
