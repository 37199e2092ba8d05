// cuda_moe_persistent_test.cpp: the one-token quantised MoE block as one persistent launch
// (quant_moe_block_persistent) against the launches it replaces, bit for bit: without the
// router, quant_moe_gemv_gate_up then quant_moe_down_combine (the gate/up's output and the
// residual after the combine); with it, norm_router before them too (h, the logits, ids,
// weights), the router run by block 0 or by every block. For fp8, int8 and paired int4, several shapes and top-k, each launched three
// times on the same barrier counter, which every launch must leave at 0. The shapes it does
// not take answered false and refused in one line; and the model with
// MOEBENCH_QUANT_MOE_PERSISTENT at 0 .. 3 (and for int4 both
// MOEBENCH_QUANT_MOE_PERSISTENT_SHAPES): the same logits and greedy tokens, the launch
// counted only where it is on. Skipped without a GPU.
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
#include "engine/cuda/quant_gemv_rows.h"
#include "engine/dtype.h"
#include "engine/engine.h"
#include "engine/quant.h"
#include "engine/weight_source.h"
#include "tests/cuda_ctx.h"
#include "tests/cuda_decode_run.h"
#include "tests/device_copy.h"
#include "tests/quant_experts_upload.h"

namespace cuda_moe_persistent_test {

using namespace moebench;
using test::download;
using test::upload;

namespace {

// E experts of one (rows x cols) matrix each, int4 paired, no zero points.
cuda::QuantExperts make_experts(cuda::DeviceArena& arena, QuantFormat f, int rows, int cols, int E,
                                std::mt19937& rng) {
  return test::upload_random_experts(arena, f, rows, cols, E, false, f == QuantFormat::int4, rng);
}

std::vector<uint16_t> bits(const __nv_bfloat16* p, size_t n) { return download(reinterpret_cast<const uint16_t*>(p), n); }

TEST(CudaMoePersistent, MatchesTheLaunchesItReplacesBitForBit) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA persistent MoE test skipped";
  struct Case {
    QuantFormat f;
    int hidden, inter, experts, k;
  };
  // Shapes where the one-token launches run the exact kernels (2 inter and hidden of at
  // least 132 tiles of 16 rows) and every row is whole plain-loop batches.
  const Case cases[] = {{QuantFormat::fp8, 4096, 2048, 8, 2}, {QuantFormat::int8, 4096, 2048, 8, 2},
                        {QuantFormat::int4, 4096, 2048, 8, 2}, {QuantFormat::fp8, 3072, 3072, 4, 1},
                        {QuantFormat::int8, 4096, 3072, 8, 4}, {QuantFormat::int4, 4096, 2048, 8, 8}};
  int ran = 0;
  for (const Case& c : cases) {
    const int H = c.hidden, I = c.inter, E = c.experts, k = c.k;
    SCOPED_TRACE(std::string(quant_format_name(c.f)) + ", hidden " + std::to_string(H) + ", inter " +
                 std::to_string(I) + ", " + std::to_string(E) + " experts, top-" + std::to_string(k));
    std::mt19937 rng(static_cast<uint32_t>(3 * H + I + E + k));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    cuda::DeviceArena arena(1ull << 30, "persistent MoE test");
    const cuda::QuantExperts gu = make_experts(arena, c.f, 2 * I, H, E, rng);
    const cuda::QuantExperts dn = make_experts(arena, c.f, H, I, E, rng);
    ASSERT_TRUE(cuda::quant_moe_block_persistent_supported(gu, dn, k, I, H, E, false));
    ASSERT_TRUE(cuda::quant_moe_block_persistent_supported(gu, dn, k, I, H, E, true));
    std::vector<uint16_t> nw(H), gate(static_cast<size_t>(E) * H);
    std::vector<float> x(H);
    for (auto& v : nw) v = f32_to_bf16(1.0f + 0.1f * nd(rng));
    for (auto& v : gate) v = f32_to_bf16(0.05f * nd(rng));
    for (auto& v : x) v = nd(rng);
    const float* x0 = upload(arena, x);
    const auto* nwd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, nw));
    const auto* gd = reinterpret_cast<const __nv_bfloat16*>(upload(arena, gate));
    struct Out {
      float* x;  // the residual: the router's input, the combine's output
      __nv_bfloat16* h;
      float* logits;
      int32_t* ids;
      float* w;
      __nv_bfloat16* hb;
    };
    auto outputs = [&](const char* what) {
      return Out{arena.alloc_n<float>(H, what),        arena.alloc_n<__nv_bfloat16>(H, what),
                 arena.alloc_n<float>(E, what),        arena.alloc_n<int32_t>(k, what),
                 arena.alloc_n<float>(k, what),        arena.alloc_n<__nv_bfloat16>(static_cast<size_t>(k) * I, what)};
    };
    const Out ref = outputs("the launches"), one = outputs("the persistent launch");
    auto* counter = arena.alloc_n<unsigned long long>(1, "barrier counter");
    CUDA_CHECK(cudaMemset(counter, 0, sizeof(unsigned long long)));
    auto fresh = [&](const Out& o) {
      CUDA_CHECK(cudaMemcpy(o.x, x0, H * sizeof(float), cudaMemcpyDeviceToDevice));
      CUDA_CHECK(cudaMemset(o.hb, 0xff, static_cast<size_t>(k) * I * 2));
    };
    // int4 in both persistent shapes (fp8 and int8 have one).
    for (const int shapes : c.f == QuantFormat::int4 ? std::vector<int>{1, 0} : std::vector<int>{1}) {
      for (const int mode : {0, 1, 2})  // no router, the router in block 0, in every block
        for (const bool renorm : {true, false})
          for (int rep = 0; rep < 3; ++rep) {
            const bool router = mode > 0;
            const cuda::ScopedSwitch shape_switch(cuda::set_quant_moe_persistent_shapes, shapes);
            SCOPED_TRACE(std::string(mode == 0 ? "without the router" : mode == 1 ? "the router in block 0"
                                                                                  : "the router in every block") +
                         ", " + (renorm ? "renormalised" : "softmax weights") + ", launch " + std::to_string(rep + 1) +
                         ", MOEBENCH_QUANT_MOE_PERSISTENT_SHAPES=" + std::to_string(shapes));
            fresh(ref);
            fresh(one);
            cuda::norm_router(ref.x, nwd, 1e-5f, gd, ref.h, ref.logits, ref.ids, ref.w, 1, H, E, k, nullptr, renorm);
            cuda::quant_moe_gemv_gate_up(gu, ref.h, ref.ids, k, k, I, H, E, ref.hb, nullptr);
            cuda::quant_moe_down_combine(dn, ref.hb, ref.ids, ref.w, k, k, H, I, E, ref.x, false, nullptr);
            if (router) {
              CUDA_CHECK(cudaMemset(one.ids, 0xff, k * sizeof(int32_t)));
              const cuda::GateUpRouter r{one.x, nwd, 1e-5f, gd, one.h, one.logits, one.ids, one.w, E, renorm ? 1 : 0};
              cuda::quant_moe_block_persistent(gu, dn, &r, nullptr, nullptr, nullptr, k, I, H, E, one.hb, one.x,
                                               counter, nullptr, mode == 2);
            } else {
              cuda::quant_moe_block_persistent(gu, dn, nullptr, ref.h, ref.ids, ref.w, k, I, H, E, one.hb, one.x,
                                               counter, nullptr);
            }
            CUDA_CHECK(cudaDeviceSynchronize());
            if (router) {
              EXPECT_EQ(bits(ref.h, H), bits(one.h, H)) << "h differs from norm_router's";
              EXPECT_EQ(download(ref.logits, E), download(one.logits, E)) << "logits differ from norm_router's";
              EXPECT_EQ(download(ref.ids, k), download(one.ids, k)) << "top-k ids differ from norm_router's";
              EXPECT_EQ(download(ref.w, k), download(one.w, k)) << "top-k weights differ from norm_router's";
            }
            EXPECT_EQ(bits(ref.hb, static_cast<size_t>(k) * I), bits(one.hb, static_cast<size_t>(k) * I))
                << "the gate/up output differs from quant_moe_gemv_gate_up's";
            EXPECT_EQ(download(ref.x, H), download(one.x, H)) << "the residual differs from quant_moe_down_combine's";
            EXPECT_EQ(download(counter, 1), std::vector<unsigned long long>{0}) << "the launch left its counter set";
          }
    }
    ++ran;
  }
  EXPECT_EQ(ran, 6);
}

TEST(CudaMoePersistent, ShapesItDoesNotTakeAreRefused) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA persistent MoE test skipped";
  cuda::QuantExperts q;
  q.format = QuantFormat::fp8;
  q.n_experts = 8;
  EXPECT_TRUE(cuda::quant_moe_block_persistent_supported(q, q, 2, 14336, 4096, 8, true));
  EXPECT_TRUE(cuda::quant_moe_block_persistent_supported(q, q, 2, 14336, 4096, 8, false));
  EXPECT_FALSE(cuda::quant_moe_block_persistent_supported(q, q, 3, 14336, 4096, 8, false));  // k does not divide 8
  EXPECT_FALSE(cuda::quant_moe_block_persistent_supported(q, q, 2, 1024, 4096, 8, false));   // few tiles: no exact kernel
  EXPECT_FALSE(cuda::quant_moe_block_persistent_supported(q, q, 2, 14336, 8192, 8, true));   // router past 4096
  EXPECT_FALSE(cuda::quant_moe_block_persistent_supported(q, q, 2, 14336, 4096, 16, true));  // router past 8 experts
  EXPECT_FALSE(cuda::quant_moe_block_persistent_supported(q, q, 2, 14336 + 16, 4096, 8, false));  // partial batches
  cuda::QuantExperts i8 = q;
  i8.format = QuantFormat::int8;
  EXPECT_FALSE(cuda::quant_moe_block_persistent_supported(q, i8, 2, 14336, 4096, 8, false));  // formats differ
  q.format = QuantFormat::int4;  // paired codes only
  EXPECT_FALSE(cuda::quant_moe_block_persistent_supported(q, q, 2, 14336, 4096, 8, false));
  q.int4_paired = true;
  EXPECT_TRUE(cuda::quant_moe_block_persistent_supported(q, q, 2, 14336, 4096, 8, false));
  const uint8_t* const some = nullptr;
  q.zero = &some;  // zero points: the general loop, not compiled here
  EXPECT_FALSE(cuda::quant_moe_block_persistent_supported(q, q, 2, 14336, 4096, 8, false));
  q.zero = nullptr;
  q.format = QuantFormat::bf16;
  EXPECT_FALSE(cuda::quant_moe_block_persistent_supported(q, q, 2, 14336, 4096, 8, false));
  q.format = QuantFormat::int8;
  try {
    cuda::quant_moe_block_persistent(q, q, nullptr, nullptr, nullptr, nullptr, 2, 1024, 4096, 8,
                                     reinterpret_cast<__nv_bfloat16*>(16), reinterpret_cast<float*>(16), nullptr,
                                     nullptr);
    ADD_FAILURE() << "a shape without the persistent kernel was launched";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("quant_moe_block_persistent"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

// The model with the switch at 0 .. 3 (two layers of the Mixtral-8x7B shape, the gate's
// routing): eager steps' logits and the graph-replayed greedy tokens identical, bit for
// bit; the launch counted only where the switch is on, with the router only at 2 and 3.
TEST(CudaMoePersistent, ModelStepsMatchTheLaunchesItReplaces) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA persistent MoE test skipped";
  auto src = WeightSource::open("synthetic:mixtral-8x7b:layers=2", 7);
  const std::vector<int32_t> prompt = {5, 9, 2, 17, 4, 11, 3};
  const int end = 24;
  for (const std::string dtype : {"fp8", "int8", "int4"}) {
    SCOPED_TRACE("expert_dtype " + dtype);
    auto run = [&](int level, std::vector<float>& logits, int64_t& launches, int64_t& with_router) {
      const cuda::ScopedSwitch persistent(cuda::set_quant_moe_persistent, level);
      EngineContext ctx = test::cuda_ctx(src);
      ctx.settings.gpu_mem_budget = "12GiB";
      ctx.settings.expert_dtype = dtype;
      cuda::CudaModel cm(ctx);
      auto tokens = test::eager_then_graph_decode(cm, prompt, end, logits);
      launches = cm.persistent_moe_launches();
      with_router = cm.persistent_moe_router_launches();
      return tokens;
    };
    std::vector<float> l0;
    int64_t n0 = 0, r0 = 0;
    const auto t0 = run(0, l0, n0, r0);
    EXPECT_EQ(n0, 0);
    EXPECT_EQ(r0, 0);
    // fp8 at every level; int4 without the router in both shapes (quant_moe_persistent_shapes)
    // and with the router in every block, int8 with it (level 2's launch is level 3's kernel
    // with another first phase).
    struct Setting {
      int level, shapes;
    };
    const std::vector<Setting> settings = dtype == "fp8"    ? std::vector<Setting>{{1, 1}, {2, 1}, {3, 1}}
                                          : dtype == "int4" ? std::vector<Setting>{{1, 1}, {1, 0}, {3, 1}}
                                                            : std::vector<Setting>{{3, 1}};
    for (const auto [level, shapes] : settings) {
      const cuda::ScopedSwitch shape_switch(cuda::set_quant_moe_persistent_shapes, shapes);
      SCOPED_TRACE("MOEBENCH_QUANT_MOE_PERSISTENT=" + std::to_string(level) +
                   " MOEBENCH_QUANT_MOE_PERSISTENT_SHAPES=" + std::to_string(shapes));
      std::vector<float> l;
      int64_t n = 0, r = 0;
      const auto t = run(level, l, n, r);
      EXPECT_GT(n, 0) << "the persistent launch never ran";
      if (level >= 2) EXPECT_EQ(r, n) << "a persistent launch ran without the router at level " << level;
      else EXPECT_EQ(r, 0);
      ASSERT_EQ(l0.size(), l.size());
      EXPECT_TRUE(l0 == l) << "decode logits differ between the persistent launch and the launches it replaces";
      EXPECT_EQ(t0, t) << "greedy tokens differ between the persistent launch and the launches it replaces";
    }
  }
}

}  // namespace

}  // namespace cuda_moe_persistent_test

#endif  // MOEBENCH_HAVE_CUDA
