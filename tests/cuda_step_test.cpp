// cuda_step_test.cpp: the resident decode step's host side on CUDA (skipped, with a
// message, without a GPU):
//   * a synthetic routing source's choices staged for the whole step (MoeLayer::begin_step,
//     weighed on the device by router_reweight) against the per-layer path (the router
//     logits to the host, cpu::router_reweight, the choice back), which a routing
//     observer forces: same ids at every layer, logits within the bf16 error budget of
//     the other CUDA comparisons (the device's expf may differ from the host's by an ulp),
//     same greedy tokens where the margin is clear; and the staged path does not sync
//     inside a decode step, bf16 and quantised experts alike;
//   * the batched path with a routing source: decode steps are now replayed from CUDA
//     graphs (the staged choices are uploaded before each replay, the step counted) and
//     give the tokens of eager execution.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/batch_generate.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/device.h"
#include "engine/engine.h"
#include "engine/weight_source.h"

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
  for (const std::string dtype : {"bf16", "int4"}) {
    SCOPED_TRACE("expert_dtype " + dtype);
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
}

#endif  // MOEBENCH_HAVE_CUDA
