// cuda_step_test.cpp: the resident decode step's host side on CUDA (skipped, with a
// message, without a GPU):
//   * a synthetic routing source's choices staged for the whole step (MoeLayer::begin_step,
//     weighed on the device by router_reweight) against the per-layer path (the router
//     logits to the host, cpu::router_reweight, the choice back), which a routing
//     observer forces: same ids at every layer, logits within the bf16 error budget of
//     the other CUDA comparisons (the device's expf may differ from the host's by an ulp),
//     same greedy tokens where the margin is clear; and the staged path does not sync
//     inside a decode step, bf16 and quantised experts alike;
//   * the quantised gate/up projections as one (2 x inter)-row matrix: bit-identical to
//     two launches;
//   * the fused norm + router of decode against rmsnorm() + linear() + router_topk();
//   * decode's attention entry (rmsnorm folded into the q/k/v GEMV launch) against
//     rmsnorm() + linear_multi(): h and q/k/v bit-identical, at every compiled row shape;
//   * the launch knobs' environment reader;
//   * the batched path with a routing source: decode steps are now replayed from CUDA
//     graphs (the staged choices are uploaded before each replay, the step counted) and
//     give the tokens of eager execution, with captured launches plain or programmatic;
//   * the single-sequence decode steps replayed from CUDA graphs: the tokens of eager
//     execution.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/batch_generate.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/decode_attention.h"
#include "engine/cuda/device.h"
#include "engine/cuda/gate_up.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/norm_router.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/pdl.h"
#include "engine/cuda/quant_dequant.h"
#include "engine/cuda/quant_gemv.h"
#include "engine/device_plan.h"
#include "engine/dtype.h"
#include "engine/engine.h"
#include "engine/quant.h"
#include "engine/weight_source.h"

namespace cuda_step_test {

using namespace moebench;

namespace {

constexpr double kLogitTol = 4.0 / 128;  // 4 eps(bf16) of the largest logit

class CudaStep : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA step tests skipped";
  }
};

EngineContext step_ctx(const WeightSource& w, const std::string& dtype) {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = "cuda";
  ctx.settings.max_model_len = 96;
  ctx.settings.max_num_batched_tokens = 32;
  ctx.settings.gpu_mem_budget = "1GiB";
  ctx.settings.expert_dtype = dtype;
  ctx.settings.routing = "mixtral-locality";
  ctx.settings.routing_seed = 3;
  ctx.settings.fused_decode_max_tokens = 8;  // batched decode of 3 sequences takes the fused (graphable) kernels
  return ctx;
}

// Device buffers freed with the scope: up(src, bytes) copies src there (null: left as is).
struct DeviceBuffers {
  std::vector<void*> ptrs;
  void* up(const void* src, size_t bytes) {
    void* d = nullptr;
    CUDA_CHECK(cudaMalloc(&d, std::max<size_t>(bytes, 16)));
    if (src) CUDA_CHECK(cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice));
    ptrs.push_back(d);
    return d;
  }
  ~DeviceBuffers() {
    for (void* p : ptrs) cudaFree(p);
  }
};

double top2_margin(const std::vector<float>& l) {
  std::vector<float> c(l);
  std::partial_sort(c.begin(), c.begin() + 2, c.end(), std::greater<float>());
  return c[0] - c[1];
}

}  // namespace

TEST_F(CudaStep, StagedRoutingMatchesPerLayerRouting) {
  auto src = WeightSource::open("synthetic:micro", 7);
  for (const std::string dtype : {"bf16", "int4", "fp8"}) {
    SCOPED_TRACE("expert_dtype " + dtype);
    cuda::CudaModel staged(step_ctx(src, dtype));
    cuda::CudaModel per_layer(step_ctx(src, dtype));
    const int V = staged.config().vocab_size, L = staged.config().num_hidden_layers;
    const int k = staged.config().num_experts_per_tok;
    EXPECT_FALSE(staged.decode_syncs()) << "a staged routing source should not sync inside the decode step";
    // Per-layer path: the observer needs every layer's choice on the host. It records them.
    std::vector<std::vector<int32_t>> seen;  // per forward, (layers, k) of the last token
    per_layer.set_routing_observer([&](int l, int, int n, const int32_t* ids, const float*) {
      if (l == 0) seen.emplace_back();
      seen.back().insert(seen.back().end(), ids + static_cast<size_t>(n - 1) * k, ids + static_cast<size_t>(n) * k);
    });
    EXPECT_TRUE(per_layer.decode_syncs());
    const std::vector<int32_t> prompt = {5, 9, 2, 17, 4, 11, 3};
    std::vector<float> a(V), b(V);
    staged.forward(prompt.data(), static_cast<int>(prompt.size()), 0, a.data());
    per_layer.forward(prompt.data(), static_cast<int>(prompt.size()), 0, b.data());
    int pos = static_cast<int>(prompt.size()), same_tokens = 0;
    for (int s = 0; s < 24; ++s, ++pos) {
      double mx = 0, worst = 0;
      for (int i = 0; i < V; ++i) {
        mx = std::max(mx, static_cast<double>(std::fabs(b[i])));
        worst = std::max(worst, static_cast<double>(std::fabs(a[i] - b[i])));
      }
      ASSERT_LE(worst, kLogitTol * mx) << "step " << s;
      const int32_t ta = static_cast<int32_t>(std::max_element(a.begin(), a.end()) - a.begin());
      const int32_t tb = static_cast<int32_t>(std::max_element(b.begin(), b.end()) - b.begin());
      if (top2_margin(b) > 2 * kLogitTol * mx) {
        EXPECT_EQ(ta, tb) << "step " << s;
      }
      same_tokens += ta == tb;
      // Both take the per-layer path's token (teacher forcing), so the contexts stay equal.
      staged.forward(&tb, 1, pos, a.data());
      per_layer.forward(&tb, 1, pos, b.data());
    }
    EXPECT_GE(same_tokens, 20);
    ASSERT_EQ(seen.size(), 25u);
    for (const auto& f : seen) ASSERT_EQ(f.size(), static_cast<size_t>(L) * k);
    // The same source, asked in the same order by the staged model: the same choices. A
    // third model, staged, then observed from step 10 on, must see what per_layer saw.
    cuda::CudaModel late(step_ctx(src, dtype));
    std::vector<std::vector<int32_t>> late_seen;
    late.forward(prompt.data(), static_cast<int>(prompt.size()), 0, a.data());
    pos = static_cast<int>(prompt.size());
    std::vector<int32_t> forced;
    for (int s = 0; s < 24; ++s) {
      if (s == 10)
        late.set_routing_observer([&](int l, int, int n, const int32_t* ids, const float*) {
          if (l == 0) late_seen.emplace_back();
          late_seen.back().insert(late_seen.back().end(), ids + static_cast<size_t>(n - 1) * k,
                                  ids + static_cast<size_t>(n) * k);
        });
      const int32_t t = static_cast<int32_t>(std::max_element(b.begin(), b.end()) - b.begin());  // any fixed token
      late.forward(&t, 1, pos++, a.data());
    }
    ASSERT_EQ(late_seen.size(), 14u);
    for (size_t i = 0; i < late_seen.size(); ++i)
      EXPECT_EQ(late_seen[i], seen[11 + i]) << "forward " << 11 + i << ": the staged steps advanced the source differently";
  }
}

TEST_F(CudaStep, BatchedDecodeWithARoutingSourceReplaysGraphsLikeEager) {
  auto src = WeightSource::open("synthetic:micro", 7);
  for (const std::string dtype : {"bf16", "int4"})
  for (const bool graph_pdl : {false, true}) {  // captured launches plain, or programmatic (pdl.h)
    SCOPED_TRACE("expert_dtype " + dtype + (graph_pdl ? ", programmatic edges" : ""));
    cuda::set_graph_pdl(graph_pdl);
    cuda::CudaModel cm(step_ctx(src, dtype));
    const int V = cm.config().vocab_size;
    std::vector<BatchRequest> reqs;
    for (int i = 0; i < 3; ++i) {
      std::vector<int32_t> p;
      for (int j = 0; j < 5 + 7 * i; ++j) p.push_back(3 + (j * 131 + i * 17) % (V - 3));
      reqs.push_back({p, 12});
    }
    SchedulerConfig sc;
    sc.max_num_batched_tokens = 32;
    sc.max_model_len = 96;
    sc.max_num_seqs = 4;
    sc.block_size = 8;
    sc.num_blocks = 4 * (96 / 8);
    cm.set_use_graphs(false);
    cm.reset();
    const auto eager = generate_batch(cm, sc, reqs);
    cm.set_use_graphs(true);
    cm.reset();
    const int64_t r0 = cm.graph_replays();
    const auto graphed = generate_batch(cm, sc, reqs);
    EXPECT_GT(cm.graph_replays(), r0) << "no decode step was replayed from a graph";
    EXPECT_EQ(graphed.outputs, eager.outputs) << "graph replay differs from eager execution";
  }
  cuda::set_graph_pdl(false);
}

// Single-sequence decode steps (forward_argmax, one token) replayed from CUDA graphs
// (cuda_model_graph.cpp) give the tokens of eager execution, bf16 and int4 experts, with
// captured launches plain or programmatic; the steps go past decode_attention_one_split's
// keys, so both graphs (one key split, several) are captured and replayed, each after one
// eager step.
TEST_F(CudaStep, SingleSequenceDecodeGraphsGiveEagerTokens) {
  auto src = WeightSource::open("synthetic:micro", 7);
  const std::vector<int32_t> prompt = {5, 9, 2, 17, 4, 11, 3};
  const int end = 90;  // positions 7 .. 89: keys 8 .. 90
  ASSERT_FALSE(cuda::decode_attention_one_split(end));
  for (const std::string dtype : {"bf16", "int4"})
  for (const bool graph_pdl : {false, true}) {
    SCOPED_TRACE("expert_dtype " + dtype + (graph_pdl ? ", programmatic edges" : ""));
    cuda::set_graph_pdl(graph_pdl);
    auto run = [&](bool graphs, int64_t& replays) {
      cuda::CudaModel cm(step_ctx(src, dtype));
      cm.set_decode_graphs(graphs);
      std::vector<int32_t> out;
      int32_t t = cm.forward_argmax(prompt.data(), static_cast<int>(prompt.size()), 0);
      for (int pos = static_cast<int>(prompt.size()); pos < end; ++pos) {
        out.push_back(t);
        const int32_t in = t;
        t = cm.forward_argmax(&in, 1, pos);
      }
      out.push_back(t);
      replays = cm.decode_graph_replays();
      return out;
    };
    int64_t eager_replays = -1, graph_replays = -1;
    const auto eager = run(false, eager_replays);
    const auto graphed = run(true, graph_replays);
    EXPECT_EQ(eager_replays, 0);
    const int steps = end - static_cast<int>(prompt.size());
    EXPECT_EQ(graph_replays, steps - 2) << "each of the two graphs: one eager step, then captured and replayed";
    EXPECT_EQ(graphed, eager) << "graph replay differs from eager execution";
  }
  cuda::set_graph_pdl(false);
}

// The quantised gate/up projections as one matrix (gate_up_layout + one quant_moe_gemv
// over 2 x inter rows + silu_mul_gate_up) against the two launches over w1 and w3 and
// silu_mul_bf16: bit-identical h, on shapes where the GEMV takes the same warps per
// block for inter and 2 x inter rows (its row split, so its sum order, depends on that);
// and the fused form (quant_moe_gemv_gate_up: silu(g) * u written by the pipelined GEMV
// itself) bit-identical to the pipelined GEMV over [w1; w3] + silu_mul_gate_up.
TEST_F(CudaStep, GateUpAsOneMatrixIsBitIdenticalToTwoLaunches) {
  struct Shape {
    int inter, hidden;
  };
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8}) {
    for (bool zp : {false, true}) {
      if (zp && f != QuantFormat::int4) continue;
      for (const Shape sh : {Shape{512, 256}, Shape{14336, 256}}) {
        SCOPED_TRACE(std::string(quant_format_name(f)) + (zp ? " zp" : "") + " inter " + std::to_string(sh.inter));
        ModelConfig c = preset_config("micro");
        c.intermediate_size = sh.inter;
        c.hidden_size = sh.hidden;
        const ExpertLayout L = expert_layout(c, f, zp);
        const ExpertLayout D = gate_up_layout(L, sh.inter);
        ASSERT_TRUE(gate_up_adjacent(D));
        const int E = 4, I = sh.inter, H = sh.hidden;
        std::mt19937 rng(11);
        std::normal_distribution<float> nd(0.0f, 0.05f);
        std::vector<uint8_t*> blocks;
        std::vector<const uint8_t*> t[3][3];  // [w1, w3, w13][part]
        for (int e = 0; e < E; ++e) {
          void* dv = nullptr;
          CUDA_CHECK(cudaMalloc(&dv, D.total_bytes));
          auto* d = static_cast<uint8_t*>(dv);
          CUDA_CHECK(cudaMemset(d, 0, D.total_bytes));
          blocks.push_back(d);
          for (int m = 0; m < 2; ++m) {
            std::vector<float> w(static_cast<size_t>(I) * H);
            for (auto& v : w) v = nd(rng);
            const QuantMatrix q = quantize(f, w.data(), I, H, zp);
            const std::vector<uint8_t>* parts[3] = {&q.q, &q.scale, &q.zero};
            for (int p = 0; p < D.n_parts; ++p) {
              ASSERT_EQ(parts[p]->size(), D.bytes[m][p]);
              CUDA_CHECK(cudaMemcpy(d + D.offset[m][p], parts[p]->data(), parts[p]->size(), cudaMemcpyHostToDevice));
            }
          }
          for (int p = 0; p < 3; ++p) {
            t[0][p].push_back(p < D.n_parts ? d + D.offset[0][p] : nullptr);
            t[1][p].push_back(p < D.n_parts ? d + D.offset[1][p] : nullptr);
          }
        }
        auto table = [&](const std::vector<const uint8_t*>& v) {
          void* d = nullptr;
          CUDA_CHECK(cudaMalloc(&d, v.size() * sizeof(void*)));
          CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(void*), cudaMemcpyHostToDevice));
          return static_cast<const uint8_t**>(d);
        };
        std::vector<void*> frees;
        auto mat = [&](int m) {
          cuda::QuantExperts q;
          q.format = f;
          auto* a = table(t[m][0]);
          auto* b = table(t[m][1]);
          auto* z = zp ? table(t[m][2]) : nullptr;
          frees.insert(frees.end(), {static_cast<void*>(a), static_cast<void*>(b), static_cast<void*>(z)});
          q.q = a;
          q.scale = b;
          q.zero = z;
          return q;
        };
        const std::vector<int32_t> ids = {2, 0, 2, 3, 1, 2};  // 3 tokens, top-2
        const int pairs = static_cast<int>(ids.size()), k = 2;
        std::vector<uint16_t> xb(static_cast<size_t>(pairs / k) * H);
        for (auto& v : xb) v = f32_to_bf16(nd(rng) * 20);
        void *x = nullptr, *idd = nullptr, *g = nullptr, *u = nullptr, *gu = nullptr, *h1 = nullptr, *h2 = nullptr,
             *h3 = nullptr;
        CUDA_CHECK(cudaMalloc(&x, xb.size() * 2));
        CUDA_CHECK(cudaMemcpy(x, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMalloc(&idd, ids.size() * 4));
        CUDA_CHECK(cudaMemcpy(idd, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
        const size_t n = static_cast<size_t>(pairs) * I;
        for (void** b : {&g, &u, &h1, &h2, &h3}) CUDA_CHECK(cudaMalloc(b, n * 4));
        CUDA_CHECK(cudaMalloc(&gu, 2 * n * 4));
        const auto* xd = static_cast<const __nv_bfloat16*>(x);
        const auto* ip = static_cast<const int32_t*>(idd);
        cuda::quant_moe_gemv(mat(0), xd, false, ip, pairs, k, I, H, E, static_cast<float*>(g), nullptr);
        cuda::quant_moe_gemv(mat(1), xd, false, ip, pairs, k, I, H, E, static_cast<float*>(u), nullptr);
        cuda::silu_mul_bf16(static_cast<float*>(g), static_cast<float*>(u), static_cast<__nv_bfloat16*>(h1),
                            static_cast<int64_t>(n), nullptr);
        cuda::quant_moe_gemv(mat(0), xd, false, ip, pairs, k, 2 * I, H, E, static_cast<float*>(gu), nullptr);
        cuda::silu_mul_gate_up(static_cast<float*>(gu), static_cast<__nv_bfloat16*>(h2), pairs, I, nullptr);
        std::vector<uint16_t> a(n), b(n), piped(n), fused(n);
        CUDA_CHECK(cudaMemcpy(a.data(), h1, n * 2, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(b.data(), h2, n * 2, cudaMemcpyDeviceToHost));
        cuda::quant_moe_gemv_shaped(mat(0), xd, false, ip, pairs, k, 2 * I, H, E, static_cast<float*>(gu),
                                    cuda::kPipelinedQuantGemvShape, nullptr);
        cuda::silu_mul_gate_up(static_cast<float*>(gu), static_cast<__nv_bfloat16*>(h2), pairs, I, nullptr);
        CUDA_CHECK(cudaMemset(h3, 0xff, n * 2));  // NaNs wherever the fused kernel writes nothing
        cuda::quant_moe_gemv_gate_up_shaped(mat(0), xd, ip, pairs, k, I, H, E, static_cast<__nv_bfloat16*>(h3),
                                            cuda::kPipelinedQuantGemvShape, nullptr);
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaMemcpy(piped.data(), h2, n * 2, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(fused.data(), h3, n * 2, cudaMemcpyDeviceToHost));
        EXPECT_EQ(a, b) << "one launch over [w1; w3] differs from two";
        EXPECT_EQ(piped, fused) << "the fused gate/up GEMV differs from the pipelined GEMV over [w1; w3] + silu_mul_gate_up";
        for (void* p : {x, idd, g, u, gu, h1, h2, h3}) cudaFree(p);
        for (void* p : frees) cudaFree(p);
        for (auto* p : blocks) cudaFree(p);
      }
    }
  }
}

// The fused norm + router of decode against rmsnorm(), linear() and router_topk(): h bit
// for bit, logits within fp32 reordering of their terms, the same top-k ids wherever the
// k-th and (k+1)-th probabilities are not near-tied, weights within a few fp32 ulps.
TEST_F(CudaStep, NormRouterMatchesRmsnormLinearTopk) {
  struct Shape {
    int n, hidden, experts, k;
  };
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // The first three take the all-loads-first kernel of <= 8 experts (hidden a multiple of 256, <= 4096).
  for (const Shape sh : {Shape{1, 4096, 8, 2}, Shape{4, 2048, 8, 2}, Shape{2, 768, 5, 3}, Shape{3, 1024, 60, 4},
                         Shape{8, 64, 8, 2}, Shape{2, 4104, 64, 8}, Shape{5, 2048, 16, 1}}) {
    SCOPED_TRACE("n " + std::to_string(sh.n) + " hidden " + std::to_string(sh.hidden) + " experts " +
                 std::to_string(sh.experts) + " k " + std::to_string(sh.k));
    const int n = sh.n, H = sh.hidden, E = sh.experts, k = sh.k;
    std::vector<float> x(static_cast<size_t>(n) * H);
    for (auto& v : x) v = nd(rng) * 3;
    std::vector<uint16_t> nw(H), gate(static_cast<size_t>(E) * H);
    for (auto& v : nw) v = f32_to_bf16(1.0f + 0.1f * nd(rng));
    for (auto& v : gate) v = f32_to_bf16(0.05f * nd(rng));
    DeviceBuffers dev;
    auto up = [&](const void* src, size_t bytes) { return dev.up(src, bytes); };
    const auto* xd = static_cast<const float*>(up(x.data(), x.size() * 4));
    const auto* nwd = static_cast<const __nv_bfloat16*>(up(nw.data(), nw.size() * 2));
    const auto* gd = static_cast<const __nv_bfloat16*>(up(gate.data(), gate.size() * 2));
    const size_t hn = static_cast<size_t>(n) * H, ln = static_cast<size_t>(n) * E, kn = static_cast<size_t>(n) * k;
    auto* h1 = static_cast<__nv_bfloat16*>(up(nullptr, hn * 2));
    auto* h2 = static_cast<__nv_bfloat16*>(up(nullptr, hn * 2));
    auto* l1 = static_cast<float*>(up(nullptr, ln * 4));
    auto* l2 = static_cast<float*>(up(nullptr, ln * 4));
    auto* i1 = static_cast<int32_t*>(up(nullptr, kn * 4));
    auto* i2 = static_cast<int32_t*>(up(nullptr, kn * 4));
    auto* w1 = static_cast<float*>(up(nullptr, kn * 4));
    auto* w2 = static_cast<float*>(up(nullptr, kn * 4));
    ASSERT_TRUE(cuda::norm_router_supported(n, H, E, k, gd, h2));
    cuda::rmsnorm(xd, nwd, h1, n, H, 1e-5f, nullptr);
    cuda::linear(h1, gd, l1, n, H, E, false, nullptr, nullptr);
    cuda::router_topk(l1, i1, w1, n, E, k, nullptr);
    cuda::norm_router(xd, nwd, 1e-5f, gd, h2, l2, i2, w2, n, H, E, k, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    auto down = [&](const void* d, size_t bytes) {
      std::vector<uint8_t> v(bytes);
      CUDA_CHECK(cudaMemcpy(v.data(), d, bytes, cudaMemcpyDeviceToHost));
      return v;
    };
    EXPECT_EQ(down(h1, hn * 2), down(h2, hn * 2)) << "h differs from rmsnorm()";
    std::vector<float> a(ln), b(ln), wa(kn), wb(kn);
    std::vector<int32_t> ia(kn), ib(kn);
    CUDA_CHECK(cudaMemcpy(a.data(), l1, ln * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(b.data(), l2, ln * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(ia.data(), i1, kn * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(ib.data(), i2, kn * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(wa.data(), w1, kn * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(wb.data(), w2, kn * 4, cudaMemcpyDeviceToHost));
    const std::vector<uint16_t> hb = [&] {
      std::vector<uint16_t> v(hn);
      CUDA_CHECK(cudaMemcpy(v.data(), h1, hn * 2, cudaMemcpyDeviceToHost));
      return v;
    }();
    int compared = 0;
    for (int i = 0; i < n; ++i) {
      for (int e = 0; e < E; ++e) {
        double mag = 0;  // sum of |terms|: the scale of fp32 reordering
        for (int d = 0; d < H; ++d)
          mag += std::fabs(static_cast<double>(bf16_to_f32(hb[static_cast<size_t>(i) * H + d])) *
                           bf16_to_f32(gate[static_cast<size_t>(e) * H + d]));
        const size_t at = static_cast<size_t>(i) * E + e;
        EXPECT_LE(std::fabs(a[at] - b[at]), mag * H * std::ldexp(1.0, -24) + 1e-30) << "token " << i << " expert " << e;
      }
      std::vector<float> sorted(a.begin() + static_cast<int64_t>(i) * E, a.begin() + static_cast<int64_t>(i + 1) * E);
      std::sort(sorted.begin(), sorted.end(), std::greater<float>());
      if (k < E && sorted[k - 1] - sorted[k] < 1e-4f) continue;  // a near-tie at the k-th place: either order is right
      for (int j = 0; j < k; ++j) {
        const size_t at = static_cast<size_t>(i) * k + j;
        if (j + 1 < k && sorted[j] - sorted[j + 1] < 1e-4f) break;  // near-tied ranks inside the top-k
        EXPECT_EQ(ia[at], ib[at]) << "token " << i << " slot " << j;
        EXPECT_NEAR(wa[at], wb[at], 1e-5f) << "token " << i << " slot " << j;
      }
      ++compared;
    }
    EXPECT_GT(compared, 0);
    // Without ids: logits only (a staged routing source picks the experts).
    cuda::norm_router(xd, nwd, 1e-5f, gd, h2, l2, nullptr, nullptr, n, H, E, k, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> c(ln);
    CUDA_CHECK(cudaMemcpy(c.data(), l2, ln * 4, cudaMemcpyDeviceToHost));
    EXPECT_EQ(b, c);
  }
  EXPECT_FALSE(cuda::norm_router_supported(9, 4096, 8, 2, nullptr, nullptr));    // 9 tokens
  EXPECT_FALSE(cuda::norm_router_supported(1, 4096, 128, 8, nullptr, nullptr));  // 128 experts
  EXPECT_FALSE(cuda::norm_router_supported(1, 4100, 8, 2, nullptr, nullptr));    // hidden % 8
}

TEST_F(CudaStep, RmsnormLinearMultiIsBitIdenticalToRmsnormThenLinearMulti) {
  struct Shape {
    int hidden, q, kv;  // total rows 6144, 5120: 4 rows per warp; 2560: 2; 512: 1
  };
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const Shape sh : {Shape{4096, 4096, 1024}, Shape{2048, 4096, 512}, Shape{2048, 2048, 256}, Shape{1024, 256, 128}}) {
    SCOPED_TRACE("hidden " + std::to_string(sh.hidden) + " q " + std::to_string(sh.q) + " kv " + std::to_string(sh.kv));
    const int H = sh.hidden;
    const int out[3] = {sh.q, sh.kv, sh.kv};
    std::vector<float> x(H);
    for (auto& v : x) v = nd(rng) * 3;
    std::vector<uint16_t> nw(H);
    for (auto& v : nw) v = f32_to_bf16(1.0f + 0.1f * nd(rng));
    DeviceBuffers dev;
    const auto* xd = static_cast<const float*>(dev.up(x.data(), x.size() * 4));
    const auto* nwd = static_cast<const __nv_bfloat16*>(dev.up(nw.data(), nw.size() * 2));
    const __nv_bfloat16* w[3];
    float* y1[3];
    float* y2[3];
    for (int s = 0; s < 3; ++s) {
      std::vector<uint16_t> m(static_cast<size_t>(out[s]) * H);
      for (auto& v : m) v = f32_to_bf16(0.05f * nd(rng));
      w[s] = static_cast<const __nv_bfloat16*>(dev.up(m.data(), m.size() * 2));
      y1[s] = static_cast<float*>(dev.up(nullptr, static_cast<size_t>(out[s]) * 4));
      y2[s] = static_cast<float*>(dev.up(nullptr, static_cast<size_t>(out[s]) * 4));
    }
    auto* h1 = static_cast<__nv_bfloat16*>(dev.up(nullptr, static_cast<size_t>(H) * 2));
    auto* h2 = static_cast<__nv_bfloat16*>(dev.up(nullptr, static_cast<size_t>(H) * 2));
    ASSERT_TRUE(cuda::rmsnorm_linear_multi_supported(h2, w, out, 3, H));
    cuda::rmsnorm(xd, nwd, h1, 1, H, 1e-5f, nullptr);
    cuda::linear_multi(h1, w, y1, out, 3, 1, H, nullptr, nullptr);
    cuda::rmsnorm_linear_multi(xd, nwd, 1e-5f, h2, w, y2, out, 3, H, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    auto down = [&](const void* d, size_t bytes) {
      std::vector<uint8_t> v(bytes);
      CUDA_CHECK(cudaMemcpy(v.data(), d, bytes, cudaMemcpyDeviceToHost));
      return v;
    };
    EXPECT_EQ(down(h1, static_cast<size_t>(H) * 2), down(h2, static_cast<size_t>(H) * 2)) << "h differs from rmsnorm()";
    for (int s = 0; s < 3; ++s)
      EXPECT_EQ(down(y1[s], static_cast<size_t>(out[s]) * 4), down(y2[s], static_cast<size_t>(out[s]) * 4))
          << "matrix " << s << " differs from linear_multi()";
  }
  const __nv_bfloat16* none[1] = {nullptr};
  const int rows[1] = {64};
  EXPECT_FALSE(cuda::rmsnorm_linear_multi_supported(nullptr, none, rows, 1, 4100));   // in % 8
  EXPECT_FALSE(cuda::rmsnorm_linear_multi_supported(nullptr, none, rows, 1, 32768));  // h past shared memory
}

// The launch knobs' reader (launch_env.h): a listed value, the fallback when unset or
// empty, one line naming the variable and the list otherwise. No GPU needed.
TEST(CudaLaunchEnv, ChoiceTakesListedValuesAndNamesTheVariableOtherwise) {
  const char* name = "MOEBENCH_TEST_LAUNCH_KNOB";
  unsetenv(name);
  EXPECT_EQ(cuda::env_choice(name, {0, 2, 4}, 7), 7);
  setenv(name, "", 1);
  EXPECT_EQ(cuda::env_choice(name, {0, 2, 4}, 7), 7);
  setenv(name, "4", 1);
  EXPECT_EQ(cuda::env_choice(name, {0, 2, 4}, 7), 4);
  setenv(name, "3", 1);
  try {
    cuda::env_choice(name, {0, 2, 4}, 7);
    ADD_FAILURE() << "3 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MOEBENCH_TEST_LAUNCH_KNOB=3: expected one of 0, 2, 4"), std::string::npos)
        << e.what();
  }
  unsetenv(name);
}

// The process switches (launch_env.h EnvSwitch): the variable read once on first use, the
// fallback when unset, a test's set() until reset() hands it back to the variable, a value
// other than 0 or 1 refused naming the variable, and force() (1, 0, or negative: reset). No
// GPU needed.
TEST(CudaLaunchEnv, SwitchReadsItsVariableOnceUntilSetOrReset) {
  const char* name = "MOEBENCH_TEST_LAUNCH_SWITCH";
  unsetenv(name);
  cuda::EnvSwitch sw{name, 1};
  EXPECT_TRUE(sw.get());  // the fallback
  setenv(name, "0", 1);
  EXPECT_TRUE(sw.get());  // read once: still the first value
  sw.reset();
  EXPECT_FALSE(sw.get());  // read again
  sw.set(true);
  EXPECT_TRUE(sw.get());
  setenv(name, "1", 1);
  sw.set(false);
  EXPECT_FALSE(sw.get());  // a set value outlives the variable
  setenv(name, "2", 1);
  sw.reset();
  try {
    sw.get();
    ADD_FAILURE() << "2 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MOEBENCH_TEST_LAUNCH_SWITCH=2: expected one of 0, 1"), std::string::npos)
        << e.what();
  }
  unsetenv(name);
  sw.force(0);  // the tests' three-way setter
  EXPECT_FALSE(sw.get());
  sw.force(1);
  EXPECT_TRUE(sw.get());
  setenv(name, "0", 1);
  sw.force(-1);  // the variable again
  EXPECT_FALSE(sw.get());
  unsetenv(name);
}

// The integer settings (launch_env.h EnvChoice): the variable read once on first use, the
// unset value when unset, a test's value (any, >= 0) until a negative one hands it back to
// the variable, a value off the list refused naming the variable, and ScopedSwitch handing
// it back when its scope ends. No GPU needed.
TEST(CudaLaunchEnv, ChoiceSettingReadsItsVariableOnceUntilATestSetsOne) {
  static constexpr int kAllowed[] = {0, 16, 64};
  static cuda::EnvChoice setting{"MOEBENCH_TEST_LAUNCH_CHOICE", kAllowed, 16};
  const char* name = "MOEBENCH_TEST_LAUNCH_CHOICE";
  unsetenv(name);
  EXPECT_EQ(setting.get(), 16);  // unset
  setenv(name, "64", 1);
  EXPECT_EQ(setting.get(), 16);  // read once
  setting.set(-1);
  EXPECT_EQ(setting.get(), 64);  // read again
  setting.set(5);                // a test's value need not be on the list
  EXPECT_EQ(setting.get(), 5);
  setenv(name, "7", 1);
  EXPECT_EQ(setting.get(), 5);
  setting.set(-3);
  try {
    setting.get();
    ADD_FAILURE() << "7 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MOEBENCH_TEST_LAUNCH_CHOICE=7: expected one of 0, 16, 64"),
              std::string::npos)
        << e.what();
  }
  setenv(name, "0", 1);
  {
    static cuda::EnvChoice* s = &setting;
    const cuda::ScopedSwitch on([](int v) { s->set(v); }, 64);
    EXPECT_EQ(setting.get(), 64);
  }
  EXPECT_EQ(setting.get(), 0);  // handed back: the variable's
  unsetenv(name);
}

}  // namespace cuda_step_test

#endif  // MOEBENCH_HAVE_CUDA
