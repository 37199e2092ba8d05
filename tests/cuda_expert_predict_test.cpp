// cuda_expert_predict_test.cpp: the experts scored on the layer's input (ops.cuh
// ExpertPredict, MOEBENCH_EXPERT_PREDICT_BYTES) are a hint for L2 requests and nothing else:
//   - the norm + q/k/v launch writes the scores (against a double-precision sum on the host)
//     and the same h and q/k/v bits as without them;
//   - the gate/up launch gives the same bits whatever the scores guess (right, wrong, ties,
//     NaN) and however many bytes a row it asks for;
//   - the model decodes the same logits and greedy tokens with the prediction on and off,
//     and the prediction ran (the launches counted).
// Skipped without a GPU.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/device.h"
#include "engine/cuda/l2_prefetch.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/dtype.h"
#include "engine/engine.h"
#include "engine/weight_source.h"
#include "tests/cuda_ctx.h"
#include "tests/cuda_decode_run.h"

namespace cuda_expert_predict_test {

using namespace moebench;
using bf16 = __nv_bfloat16;

namespace {

struct DeviceBuffers {  // freed with the scope; up(src, bytes): a copy of src (null: zeros)
  std::vector<void*> ptrs;
  void* up(const void* src, size_t bytes) {
    void* d = nullptr;
    CUDA_CHECK(cudaMalloc(&d, std::max<size_t>(bytes, 16)));
    if (src) CUDA_CHECK(cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice));
    else CUDA_CHECK(cudaMemset(d, 0, std::max<size_t>(bytes, 16)));
    ptrs.push_back(d);
    return d;
  }
  ~DeviceBuffers() {
    for (void* p : ptrs) cudaFree(p);
  }
};

std::vector<uint8_t> down(const void* d, size_t bytes) {
  std::vector<uint8_t> v(bytes);
  CUDA_CHECK(cudaMemcpy(v.data(), d, bytes, cudaMemcpyDeviceToHost));
  return v;
}

std::vector<uint16_t> random_bf16(size_t n, float scale, float offset, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> v(n);
  for (auto& e : v) e = f32_to_bf16(offset + scale * nd(rng));
  return v;
}

TEST(CudaExpertPredict, NormQkvLaunchScoresTheExpertsAndKeepsItsBits) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA expert prediction test skipped";
  struct Shape {
    int hidden, q, kv, experts;
  };
  std::mt19937 rng(21);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const Shape sh : {Shape{4096, 4096, 1024, 8}, Shape{1024, 256, 128, 32}, Shape{512, 512, 128, 3}}) {
    SCOPED_TRACE("hidden " + std::to_string(sh.hidden) + " experts " + std::to_string(sh.experts));
    const int H = sh.hidden, E = sh.experts;
    const int out[3] = {sh.q, sh.kv, sh.kv};
    std::vector<float> x(H);
    for (auto& v : x) v = 2 * nd(rng);
    const auto attn_norm = random_bf16(H, 0.1f, 1.0f, rng), ffn_norm = random_bf16(H, 0.1f, 1.0f, rng);
    const auto gate = random_bf16(static_cast<size_t>(E) * H, 0.03f, 0.0f, rng);
    DeviceBuffers dev;
    const auto* xd = static_cast<const float*>(dev.up(x.data(), x.size() * 4));
    const auto* an = static_cast<const bf16*>(dev.up(attn_norm.data(), attn_norm.size() * 2));
    const auto* fn = static_cast<const bf16*>(dev.up(ffn_norm.data(), ffn_norm.size() * 2));
    const auto* gd = static_cast<const bf16*>(dev.up(gate.data(), gate.size() * 2));
    auto* logits = static_cast<float*>(dev.up(nullptr, static_cast<size_t>(E) * 4));
    const bf16* w[3];
    float* y1[3];
    float* y2[3];
    for (int s = 0; s < 3; ++s) {
      const auto m = random_bf16(static_cast<size_t>(out[s]) * H, 0.05f, 0.0f, rng);
      w[s] = static_cast<const bf16*>(dev.up(m.data(), m.size() * 2));
      y1[s] = static_cast<float*>(dev.up(nullptr, static_cast<size_t>(out[s]) * 4));
      y2[s] = static_cast<float*>(dev.up(nullptr, static_cast<size_t>(out[s]) * 4));
    }
    auto* h1 = static_cast<bf16*>(dev.up(nullptr, static_cast<size_t>(H) * 2));
    auto* h2 = static_cast<bf16*>(dev.up(nullptr, static_cast<size_t>(H) * 2));
    cuda::rmsnorm_linear_multi(xd, an, 1e-5f, h1, w, y1, out, 3, H, nullptr);
    cuda::rmsnorm_linear_multi(xd, an, 1e-5f, h2, w, y2, out, 3, H, nullptr, cuda::ExpertPredict{fn, gd, logits, E});
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(down(h1, static_cast<size_t>(H) * 2), down(h2, static_cast<size_t>(H) * 2)) << "h differs with the scores";
    for (int s = 0; s < 3; ++s)
      EXPECT_EQ(down(y1[s], static_cast<size_t>(out[s]) * 4), down(y2[s], static_cast<size_t>(out[s]) * 4))
          << "matrix " << s << " differs with the scores";
    std::vector<float> got(E);
    CUDA_CHECK(cudaMemcpy(got.data(), logits, got.size() * 4, cudaMemcpyDeviceToHost));
    for (int e = 0; e < E; ++e) {
      double want = 0, mag = 0;
      for (int i = 0; i < H; ++i) {
        const double t = static_cast<double>(x[i]) * bf16_to_f32(ffn_norm[i]) * bf16_to_f32(gate[static_cast<size_t>(e) * H + i]);
        want += t;
        mag += std::fabs(t);
      }
      EXPECT_NEAR(got[e], want, 1e-5 * mag + 1e-6) << "expert " << e;
    }
    // Out of range: more experts than a warp ranks, or nowhere to write.
    EXPECT_THROW(cuda::rmsnorm_linear_multi(xd, an, 1e-5f, h2, w, y2, out, 3, H, nullptr,
                                            cuda::ExpertPredict{fn, gd, logits, cuda::kExpertPredictMax + 1}),
                 Error);
    EXPECT_THROW(cuda::rmsnorm_linear_multi(xd, an, 1e-5f, h2, w, y2, out, 3, H, nullptr,
                                            cuda::ExpertPredict{fn, gd, nullptr, E}),
                 Error);
  }
}

// moe_decode_fused at one token with scores that rank the chosen experts first, second,
// swapped, not at all, all equal or NaN, and 16 bytes to 1 MiB of a block range: the same bits as
// without scores.
TEST(CudaExpertPredict, GateUpIsTheSameBitsWhateverTheGuess) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA expert prediction test skipped";
  const int hidden = 1024, inter = 2816, E = 8, k = 2;  // 2816 rows: two rows per warp, more blocks than resident
  std::mt19937 rng(5);
  DeviceBuffers dev;
  std::vector<const bf16*> p1(E), p3(E), p2(E);
  for (int e = 0; e < E; ++e) {
    const auto a = random_bf16(static_cast<size_t>(inter) * hidden, 0.03f, 0.0f, rng);
    const auto b = random_bf16(static_cast<size_t>(inter) * hidden, 0.03f, 0.0f, rng);
    const auto c = random_bf16(static_cast<size_t>(hidden) * inter, 0.03f, 0.0f, rng);
    p1[e] = static_cast<const bf16*>(dev.up(a.data(), a.size() * 2));
    p3[e] = static_cast<const bf16*>(dev.up(b.data(), b.size() * 2));
    p2[e] = static_cast<const bf16*>(dev.up(c.data(), c.size() * 2));
  }
  const auto x = random_bf16(hidden, 1.0f, 0.0f, rng);
  const std::vector<float> out0(hidden, 0.25f);
  const int32_t ids[2] = {5, 2};
  const float wts[2] = {0.625f, 0.375f};
  const auto* xd = static_cast<const bf16*>(dev.up(x.data(), x.size() * 2));
  const auto* idd = static_cast<const int32_t*>(dev.up(ids, sizeof ids));
  const auto* wd = static_cast<const float*>(dev.up(wts, sizeof wts));
  const auto* t1 = static_cast<const bf16* const*>(dev.up(p1.data(), E * sizeof(bf16*)));
  const auto* t3 = static_cast<const bf16* const*>(dev.up(p3.data(), E * sizeof(bf16*)));
  const auto* t2 = static_cast<const bf16* const*>(dev.up(p2.data(), E * sizeof(bf16*)));
  auto* h = static_cast<bf16*>(dev.up(nullptr, static_cast<size_t>(k) * inter * 2));
  auto run = [&](const float* pred, unsigned bytes) {
    auto* out = static_cast<float*>(dev.up(out0.data(), out0.size() * 4));
    cuda::moe_decode_fused(xd, idd, wd, t1, t3, t2, h, out, 1, k, E, hidden, inter, nullptr, cuda::MoeDownAlgo::grouped,
                           pred, bytes);
    CUDA_CHECK(cudaDeviceSynchronize());
    return down(out, out0.size() * 4);
  };
  const auto want = run(nullptr, 0);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<std::vector<float>> guesses = {
      {0, 0, 2, 0, 0, 3, 0, 0},  // right, in order
      {0, 0, 3, 0, 0, 2, 0, 0},  // right, swapped
      {9, 8, 0, 0, 0, 0, 0, 0},  // wrong
      {1, 1, 1, 1, 1, 1, 1, 1},  // ties
      {nan, nan, nan, nan, nan, nan, nan, nan}};
  for (const auto& g : guesses)
    for (unsigned bytes : {16u, 8192u, 1u << 20}) {
      SCOPED_TRACE("scores " + std::to_string(g[0]) + ", " + std::to_string(g[2]) + ", " + std::to_string(g[5]) +
                   ", bytes " + std::to_string(bytes));
      const auto* pd = static_cast<const float*>(dev.up(g.data(), g.size() * 4));
      EXPECT_EQ(run(pd, bytes), want) << "the MoE output depends on the guess";
    }
  const auto* pd = static_cast<const float*>(dev.up(guesses[0].data(), E * 4));
  EXPECT_THROW(run(pd, 24), Error);  // not a multiple of 16
  auto* out = static_cast<float*>(dev.up(out0.data(), out0.size() * 4));
  EXPECT_THROW(cuda::moe_decode_fused(xd, idd, wd, t1, t3, t2, h, out, 2, 1, E, hidden, inter, nullptr,
                                      cuda::MoeDownAlgo::grouped, pd, 1024),
               Error);  // two tokens
  // The side stream's form over the same table (w1 pointers, then w3's): nothing written,
  // the output the same bits after it; bad arguments are an Error.
  std::vector<const bf16*> table(p1);
  table.insert(table.end(), p3.begin(), p3.end());
  const auto* td = static_cast<const void* const*>(dev.up(table.data(), table.size() * sizeof(bf16*)));
  cuda::l2_prefetch_predicted(pd, E, td, 0, inter, cuda::moe_gate_up_block_rows(inter), hidden * 2, 8192, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(run(nullptr, 0), want);
  EXPECT_THROW(cuda::l2_prefetch_predicted(pd, 33, td, 0, inter, 16, hidden * 2, 8192, nullptr), Error);
  EXPECT_THROW(cuda::l2_prefetch_predicted(pd, E, td, 0, inter, 16, hidden * 2, 8200, nullptr), Error);
  // w1 and w3 as one matrix (the quantised gate/up's form): the table's first n_experts
  // pointers, w3 at an offset; one row a range and several; an offset off 16 bytes is an Error.
  cuda::l2_prefetch_predicted(pd, E, td, static_cast<size_t>(inter) * hidden, inter / 2, 1, hidden, 256, nullptr);
  cuda::l2_prefetch_predicted(pd, E, td, static_cast<size_t>(inter) * hidden, inter / 2, 4, hidden, 4 * hidden, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(run(nullptr, 0), want);
  EXPECT_THROW(cuda::l2_prefetch_predicted(pd, E, td, 24, inter, 1, hidden, 256, nullptr), Error);
}

// The model (synthetic:small: 8 experts, top-2, bf16 experts on the fused path) with the
// prediction asking 8 KiB a block range (the default: on the side stream) and with none: eager logits and graph-replayed greedy
// tokens the same bits, and the scored launches counted only when on.
TEST(CudaExpertPredict, ModelStepsAreTheSameBitsWithAndWithout) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA expert prediction test skipped";
  auto src = WeightSource::open("synthetic:small", 5);
  const std::vector<int32_t> prompt = {5, 9, 2, 17, 4, 11, 3};
  const int end = 40;
  auto run = [&](int bytes, std::vector<float>& logits, int64_t& launches) {
    const cuda::ScopedSwitch predict(cuda::set_expert_predict_bytes, bytes);
    EngineContext ctx = test::cuda_ctx(src);
    cuda::CudaModel cm(ctx);
    auto tokens = test::eager_then_graph_decode(cm, prompt, end, logits);
    launches = cm.expert_prediction_launches();
    return tokens;
  };
  std::vector<float> l_off, l_on;
  int64_t n_off = 0, n_on = 0;
  const auto off = run(0, l_off, n_off);
  const auto on = run(8192, l_on, n_on);
  EXPECT_EQ(n_off, 0);
  EXPECT_GT(n_on, 0) << "the model never issued a gate/up launch with scores";
  ASSERT_EQ(l_off.size(), l_on.size());
  EXPECT_TRUE(l_off == l_on) << "decode logits differ with the prediction";
  EXPECT_EQ(off, on) << "greedy tokens differ with the prediction";
}

// The same with quantised experts (the side stream asks for the guessed expert's first rows
// of the one gate/up matrix, MOEBENCH_EXPERT_PREDICT_QUANT_BYTES): whole rows, a prefix of
// each row, and none give the same eager logits and graph-replayed greedy tokens, and the
// scored launches are counted only when on.
TEST(CudaExpertPredict, QuantisedModelStepsAreTheSameBitsWithAndWithout) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA expert prediction test skipped";
  auto src = WeightSource::open("synthetic:small", 5);
  const std::vector<int32_t> prompt = {5, 9, 2, 17, 4, 11, 3};
  const int end = 40;
  for (const std::string dtype : {"int8", "int4", "fp8"}) {
    SCOPED_TRACE("expert_dtype " + dtype);
    auto run = [&](int bytes, std::vector<float>& logits, int64_t& launches) {
      const cuda::ScopedSwitch predict(cuda::set_expert_predict_quant_bytes, bytes);
      EngineContext ctx = test::cuda_ctx(src);
      ctx.settings.expert_dtype = dtype;
      cuda::CudaModel cm(ctx);
      auto tokens = test::eager_then_graph_decode(cm, prompt, end, logits);
      launches = cm.expert_prediction_launches();
      return tokens;
    };
    std::vector<float> l_off, l_rows, l_prefix;
    int64_t n_off = 0, n_rows = 0, n_prefix = 0;
    const auto off = run(0, l_off, n_off);
    const auto rows = run(4096, l_rows, n_rows);    // whole rows (a row is 256 or 512 bytes here)
    const auto prefix = run(128, l_prefix, n_prefix);  // the first 128 bytes of each row
    EXPECT_EQ(n_off, 0);
    EXPECT_GT(n_rows, 0) << "the model never scored the experts with whole rows asked for";
    EXPECT_GT(n_prefix, 0) << "the model never scored the experts with row prefixes asked for";
    ASSERT_EQ(l_off.size(), l_rows.size());
    ASSERT_EQ(l_off.size(), l_prefix.size());
    EXPECT_TRUE(l_off == l_rows) << "decode logits differ with whole rows asked for";
    EXPECT_TRUE(l_off == l_prefix) << "decode logits differ with row prefixes asked for";
    EXPECT_EQ(off, rows) << "greedy tokens differ with whole rows asked for";
    EXPECT_EQ(off, prefix) << "greedy tokens differ with row prefixes asked for";
  }
}

}  // namespace

}  // namespace cuda_expert_predict_test

#endif  // MOEBENCH_HAVE_CUDA
