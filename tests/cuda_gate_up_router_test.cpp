// cuda_gate_up_router_test.cpp: the quantised one-token gate/up launch with the MoE block's
// norm + router inside it (quant_moe_gemv_gate_up_router) against the two launches it
// replaces (norm_router, then quant_moe_gemv_gate_up) bit for bit: h, the logits, the
// top-k's ids and weights, and the gate/up's output; for fp8, int8 and int4 (paired, with
// and without zero points), renormalised and softmax weights, each launched twice; the
// shapes the launch does not take answered false and refused in one line; and the model
// with MOEBENCH_GATEUP_ROUTER on and off, the same logits and greedy tokens. Skipped
// without a GPU.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/device.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/norm_router.h"
#include "engine/cuda/quant_gemv.h"
#include "engine/dtype.h"
#include "engine/engine.h"
#include "engine/quant.h"
#include "engine/weight_source.h"
#include "tests/cuda_ctx.h"
#include "tests/cuda_decode_run.h"
#include "tests/device_copy.h"
#include "tests/quant_experts_upload.h"

namespace cuda_gate_up_router_test {

using namespace moebench;
using test::download;
using test::upload;

namespace {

TEST(CudaGateUpRouter, MatchesNormRouterThenGateUpBitForBit) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA gate/up + router test skipped";
  struct Case {
    QuantFormat f;
    bool zero_points;
    int hidden, inter, experts, k;
  };
  // inter >= 1056: the one-token gate/up's [w1; w3] has the 132 tiles from which it runs
  // the exact kernels (quant_gemv.h); hidden up to norm_router's 4096.
  const Case cases[] = {{QuantFormat::fp8, false, 1024, 1056, 8, 2},  {QuantFormat::int8, false, 1024, 1056, 8, 2},
                        {QuantFormat::int4, false, 1024, 1056, 8, 2}, {QuantFormat::int4, true, 512, 1536, 8, 2},
                        {QuantFormat::fp8, false, 4096, 1536, 4, 1},  {QuantFormat::int8, false, 2048, 1280, 8, 8}};
  int ran = 0;
  for (const Case& c : cases) {
    const int H = c.hidden, I = c.inter, E = c.experts, k = c.k;
    SCOPED_TRACE(std::string(quant_format_name(c.f)) + (c.zero_points ? " with zero points" : "") + ", hidden " +
                 std::to_string(H) + ", inter " + std::to_string(I) + ", " + std::to_string(E) + " experts, top-" +
                 std::to_string(k));
    std::mt19937 rng(static_cast<uint32_t>(H + I + E + k));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    cuda::DeviceArena arena(256ull << 20, "gate/up + router test");
    const bool paired = c.f == QuantFormat::int4;
    // E experts of [w1; w3] (2 inter x hidden).
    const cuda::QuantExperts experts =
        test::upload_random_experts(arena, c.f, 2 * I, H, E, c.zero_points, paired, rng);
    ASSERT_TRUE(cuda::quant_moe_gemv_gate_up_router_supported(experts, k, I, H, E));
    std::vector<uint16_t> nw(H), gate(static_cast<size_t>(E) * H);
    std::vector<float> x(H);
    for (auto& v : nw) v = f32_to_bf16(1.0f + 0.1f * nd(rng));
    for (auto& v : gate) v = f32_to_bf16(0.05f * nd(rng));
    for (auto& v : x) v = nd(rng);
    const float* xd = upload(arena, x);
    const auto* nwd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, nw));
    const auto* gd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, gate));
    struct Out {
      __nv_bfloat16* h;
      float* logits;
      int32_t* ids;
      float* w;
      __nv_bfloat16* gu;
    };
    auto outputs = [&](const char* what) {
      return Out{arena.alloc_n<__nv_bfloat16>(H, what), arena.alloc_n<float>(E, what), arena.alloc_n<int32_t>(k, what),
                 arena.alloc_n<float>(k, what), arena.alloc_n<__nv_bfloat16>(static_cast<size_t>(k) * I, what)};
    };
    const Out two = outputs("two launches"), one = outputs("one launch");
    for (const bool renorm : {true, false})
      for (int rep = 0; rep < 2; ++rep) {
        SCOPED_TRACE(std::string(renorm ? "renormalised" : "softmax weights") + ", launch " + std::to_string(rep + 1));
        CUDA_CHECK(cudaMemset(one.gu, 0xff, static_cast<size_t>(k) * I * 2));
        CUDA_CHECK(cudaMemset(one.ids, 0xff, k * sizeof(int32_t)));
        cuda::norm_router(xd, nwd, 1e-5f, gd, two.h, two.logits, two.ids, two.w, 1, H, E, k, nullptr, renorm);
        cuda::quant_moe_gemv_gate_up(experts, two.h, two.ids, k, k, I, H, E, two.gu, nullptr);
        const cuda::GateUpRouter r{xd, nwd, 1e-5f, gd, one.h, one.logits, one.ids, one.w, E, renorm ? 1 : 0};
        cuda::quant_moe_gemv_gate_up_router(experts, r, k, I, H, one.gu, nullptr);
        CUDA_CHECK(cudaDeviceSynchronize());
        auto u16 = [](const __nv_bfloat16* p, size_t n) { return download(reinterpret_cast<const uint16_t*>(p), n); };
        EXPECT_EQ(u16(two.h, H), u16(one.h, H)) << "h differs from norm_router's";
        EXPECT_EQ(download(two.logits, E), download(one.logits, E)) << "logits differ from norm_router's";
        EXPECT_EQ(download(two.ids, k), download(one.ids, k)) << "top-k ids differ from norm_router's";
        EXPECT_EQ(download(two.w, k), download(one.w, k)) << "top-k weights differ from norm_router's";
        EXPECT_EQ(u16(two.gu, static_cast<size_t>(k) * I), u16(one.gu, static_cast<size_t>(k) * I))
            << "the gate/up output differs from the two launches'";
      }
    ++ran;
  }
  EXPECT_EQ(ran, 6);
}

TEST(CudaGateUpRouter, ShapesItDoesNotTakeAreRefused) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA gate/up + router test skipped";
  cuda::QuantExperts q;
  q.format = QuantFormat::int8;
  q.n_experts = 8;
  EXPECT_TRUE(cuda::quant_moe_gemv_gate_up_router_supported(q, 2, 14336, 4096, 8));
  EXPECT_FALSE(cuda::quant_moe_gemv_gate_up_router_supported(q, 2, 1024, 4096, 8));   // few tiles: no exact kernel
  EXPECT_FALSE(cuda::quant_moe_gemv_gate_up_router_supported(q, 2, 14336, 8192, 8));  // hidden past 4096
  EXPECT_FALSE(cuda::quant_moe_gemv_gate_up_router_supported(q, 2, 14336, 4096, 16)); // past 8 experts
  q.format = QuantFormat::int4;  // the one-token int4 gate/up runs the exact kernel on paired codes only
  EXPECT_FALSE(cuda::quant_moe_gemv_gate_up_router_supported(q, 2, 14336, 4096, 8));
  q.int4_paired = true;
  EXPECT_TRUE(cuda::quant_moe_gemv_gate_up_router_supported(q, 2, 14336, 4096, 8));
  q.format = QuantFormat::bf16;
  EXPECT_FALSE(cuda::quant_moe_gemv_gate_up_router_supported(q, 2, 14336, 4096, 8));
  q.format = QuantFormat::int8;
  cuda::GateUpRouter r;
  r.n_experts = 8;
  try {
    cuda::quant_moe_gemv_gate_up_router(q, r, 2, 1024, 4096, reinterpret_cast<__nv_bfloat16*>(16), nullptr);
    ADD_FAILURE() << "a shape without the router's kernel was launched";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("quant_moe_gemv_gate_up_router"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

// The model with the switch on and off (two layers of the Mixtral-8x7B shape, the gate's
// routing): eager steps' logits and the graph-replayed greedy tokens identical, bit for
// bit, and the launch taken (counted) only with the switch on.
TEST(CudaGateUpRouter, ModelStepsMatchTheTwoLaunches) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA gate/up + router test skipped";
  auto src = WeightSource::open("synthetic:mixtral-8x7b:layers=2", 7);
  const std::vector<int32_t> prompt = {5, 9, 2, 17, 4, 11, 3};
  const int end = 24;
  for (const std::string dtype : {"fp8", "int8", "int4"}) {
    SCOPED_TRACE("expert_dtype " + dtype);
    auto run = [&](bool inside, std::vector<float>& logits, int64_t& launches) {
      const cuda::ScopedSwitch router(cuda::set_gate_up_router, inside ? 1 : 0);
      EngineContext ctx = test::cuda_ctx(src);
      ctx.settings.gpu_mem_budget = "12GiB";
      ctx.settings.expert_dtype = dtype;
      cuda::CudaModel cm(ctx);
      auto tokens = test::eager_then_graph_decode(cm, prompt, end, logits);
      launches = cm.router_in_gate_up_launches();
      return tokens;
    };
    std::vector<float> l_two, l_one;
    int64_t n_two = 0, n_one = 0;
    const auto two = run(false, l_two, n_two);
    const auto one = run(true, l_one, n_one);
    EXPECT_EQ(n_two, 0);
    EXPECT_GT(n_one, 0) << "the gate/up launch never took the router";
    ASSERT_EQ(l_two.size(), l_one.size());
    EXPECT_TRUE(l_two == l_one) << "decode logits differ between the router inside the gate/up launch and before it";
    EXPECT_EQ(two, one) << "greedy tokens differ between the router inside the gate/up launch and before it";
  }
}

}  // namespace

}  // namespace cuda_gate_up_router_test

#endif  // MOEBENCH_HAVE_CUDA
