// cuda_model_test.cpp: the CUDA model end to end (skipped, with a message, without a GPU).
//   * the tiny transformers fixture (tests/fixtures/hf_tiny): prompt logits, teacher-forced
//     step logits and the 16 greedy tokens against the CPU reference on the same bf16
//     weights, and against MixtralForCausalLM (fp32 weights) up to what bf16 weights explain;
//   * CUDA against the fp32 CPU reference on synthetic models, for every dispatch x
//     combine x buffers combination;
//   * single-sequence decode (m = 1: paged_attention over the contiguous cache, keys split
//     over blocks) at long positions against the CPU reference, step by step;
//   * pooled buffers make zero arena allocations in steady-state decode (alloc mode: some);
//   * a budget that cannot hold the model fails up front with a sentence.
//
// Tolerance on logits, |cuda - ref| <= kLogitTol * max|ref| (max over the vocabulary):
// the CUDA model stores weights and the KV cache in bf16 and rounds every matmul input
// (normed activations, attention output, SwiGLU product) to bf16, as HF computes
// Mixtral in bf16; the references are fp32. Each rounding is a relative error of at most
// eps(bf16)/2 = 2^-8 on one operand; they are independent across the terms of a dot
// product, so a logit's error grows like sqrt(terms) x 2^-8 x |term| and stays a few
// eps(bf16) relative to the logit scale through a few layers. kLogitTol = 4 eps(bf16)
// = 2^-5 of the largest logit. Where the reference's top-2 margin exceeds twice that
// tolerance, the argmax must agree exactly (closer calls are legitimately ties at bf16).
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <algorithm>
#include <climits>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/cpu_model.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/device.h"
#include "engine/cuda/ops.cuh"
#include "engine/engine.h"
#include "common/error.h"
#include "engine/generate.h"
#include "engine/synth_checkpoint.h"
#include "bf16_checkpoint.h"
#include "cuda_ctx.h"
#include "routing_log.h"
#include "test_util.h"

namespace cuda_model_test {

using namespace moebench;

namespace {

constexpr double kEpsBf16 = 1.0 / 128;
constexpr double kLogitTol = 4 * kEpsBf16;

struct Diff {
  double max_abs = 0, tol = 0;
  bool argmax_ok = true;
  double margin = 0;
};

double top2_margin(const float* l, int v) {
  float a = -INFINITY, b = -INFINITY;
  for (int i = 0; i < v; ++i) {
    if (l[i] > a) {
      b = a;
      a = l[i];
    } else if (l[i] > b) {
      b = l[i];
    }
  }
  return a - b;
}

Diff compare_logits(const float* got, const float* ref, int v) {
  Diff d;
  double scale = 0;
  for (int i = 0; i < v; ++i) scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
  d.tol = kLogitTol * scale;
  for (int i = 0; i < v; ++i) d.max_abs = std::max(d.max_abs, std::fabs(static_cast<double>(got[i]) - ref[i]));
  d.margin = top2_margin(ref, v);
  if (d.margin > 2 * d.tol) d.argmax_ok = argmax(got, v) == argmax(ref, v);
  return d;
}

using test::cuda_ctx;

class CudaModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA model tests skipped";
  }
};

using test::first_routing_difference;
using test::RoutingLog;

nlohmann::json oracle() { return nlohmann::json::parse(test::read_file(test::fixture("hf_tiny/oracle.json"))); }

}  // namespace

// The fixture's weights are fp32; the CUDA backend stores them rounded to bf16. Rounding
// the weights alone already moves transformers' logits by up to ~0.2 and, at step 8 of
// this fixture (near-tied router scores), flips an expert choice (|diff| ~2.4): the fp32
// CPU reference on the bf16-rounded weights (HfFixture.Bf16WeightsAloneAgainstTransformers)
// deviates the same way and greedily decodes 352 448 30 ... instead of 352 448 430 ...
// So the fixture is checked in two parts: (1) CUDA against the CPU reference on exactly
// the weights the GPU holds, within the bf16 activation tolerance, with identical greedy
// tokens; (2) against transformers, CUDA's deviation must be no larger than what the bf16
// weights alone cause (+ the tolerance), position by position. A near-tied router score
// can still pick another expert under bf16 activations (a discrete jump no tolerance
// covers), so logits are held to the tolerance only while CUDA and the CPU routed every
// layer of every position so far identically (both routings are recorded); where they
// part, the test prints the position and the differences instead.
TEST_F(CudaModelTest, HfFixtureLogitsAgainstCpuOnBf16WeightsAndTransformers) {
  auto o = oracle();
  test::TempDir tmp;
  auto src = WeightSource::checkpoint(test::fixture("hf_tiny"));
  auto src16 = WeightSource::checkpoint(test::write_bf16_copy(test::fixture("hf_tiny"), tmp));
  auto ctx = cuda_ctx(src);
  cuda::CudaModel m(ctx);
  CpuModel cpu(src16, 64);
  const int V = src.config().vocab_size;
  auto prompt = o["prompt_ids"].get<std::vector<int32_t>>();
  auto greedy = o["greedy_tokens"].get<std::vector<int32_t>>();
  const size_t np = prompt.size();
  RoutingLog rg, rc;
  rg.k = rc.k = src.config().num_experts_per_tok;
  m.set_routing_observer([&](int l, int p0, int n, const int32_t* ids, const float*) { rg.record(l, p0, n, ids); });
  cpu.set_routing_observer([&](int l, int p0, int n, const int32_t* ids, const float*) { rc.record(l, p0, n, ids); });
  std::vector<float> all(np * V), last(V), call(np * V), clast(V);
  m.forward(prompt.data(), static_cast<int>(np), 0, last.data(), all.data());
  cpu.forward(prompt.data(), static_cast<int>(np), 0, clast.data(), call.data());
  int strict = 0;
  auto check = [&](const float* got, const float* ref16, const std::vector<float>& hf, int position,
                   const std::string& where) {
    Diff d = compare_logits(got, ref16, V);
    Diff g = compare_logits(got, hf.data(), V), c = compare_logits(ref16, hf.data(), V);
    if (first_routing_difference(rg, rc) <= position) {
      std::printf("  %-9s routing differs from the cpu's (bf16-level router tie at position %d): |cuda - cpu(bf16 w)| "
                  "%.4f, vs transformers: cuda %.4f, cpu(bf16 w) %.4f\n",
                  where.c_str(), first_routing_difference(rg, rc), d.max_abs, g.max_abs, c.max_abs);
      return;
    }
    ++strict;
    EXPECT_LE(d.max_abs, d.tol) << where << ": cuda vs cpu on bf16 weights";
    EXPECT_TRUE(d.argmax_ok) << where << ": margin " << d.margin;
    EXPECT_LE(g.max_abs, c.max_abs + d.tol) << where << ": cuda strays from transformers beyond what bf16 weights explain";
    std::printf("  %-9s |cuda - cpu(bf16 w)| %.4f (tol %.4f); vs transformers: cuda %.4f, cpu(bf16 w) %.4f\n",
                where.c_str(), d.max_abs, d.tol, g.max_abs, c.max_abs);
  };
  for (size_t i = 0; i < np; ++i)
    check(&all[i * V], &call[i * V], o["prompt_logits"][i].get<std::vector<float>>(), static_cast<int>(i),
          "prompt " + std::to_string(i));
  // Teacher forcing on transformers' own greedy tokens.
  int pos = static_cast<int>(np);
  for (int step = 0; step < 16; ++step) {
    check(last.data(), clast.data(), o["step_logits"][step].get<std::vector<float>>(), pos - 1,
          "step " + std::to_string(step));
    m.forward(&greedy[step], 1, pos, last.data());
    cpu.forward(&greedy[step], 1, pos, clast.data());
    ++pos;
  }
  std::printf("  %d of %zu positions held to the tolerance (identical routing so far)\n", strict, np + 16);
  EXPECT_GT(strict, 0);
}

TEST_F(CudaModelTest, HfFixtureSixteenGreedyTokens) {
  auto o = oracle();
  test::TempDir tmp;
  auto src = WeightSource::checkpoint(test::fixture("hf_tiny"));
  auto src16 = WeightSource::checkpoint(test::write_bf16_copy(test::fixture("hf_tiny"), tmp));
  auto ctx = cuda_ctx(src);
  cuda::CudaModel m(ctx);
  CpuModel cpu(src16, 64);
  GenerateOptions opt;
  opt.max_new_tokens = 16;
  opt.stop_at_eos = false;
  auto prompt = o["prompt_ids"].get<std::vector<int32_t>>();
  auto got = generate(m, prompt, opt).output;
  auto ref16 = generate(cpu, prompt, opt).output;
  auto hf = o["greedy_tokens"].get<std::vector<int32_t>>();
  EXPECT_EQ(got, ref16) << "cuda and the cpu reference on the same bf16 weights must decode the same 16 tokens";
  size_t same = 0;
  while (same < hf.size() && same < got.size() && got[same] == hf[same]) ++same;
  std::printf("  greedy: %zu of 16 tokens agree with transformers (fp32 weights) before bf16 weights change the path\n", same);
}

// CUDA vs the CPU reference on a synthetic model, every dispatch x combine x buffers.
// Teacher-forced on the CPU's greedy sequence; the free-running greedy tokens must be
// identical up to the CPU's first bf16-level tie (random weights give near-tied logits).
TEST_F(CudaModelTest, EveryStrategyMatchesTheCpuReference) {
  for (const char* preset : {"micro", "tiny"}) {
    auto src = WeightSource::open(std::string("synthetic:") + preset, 7);
    const int V = src.config().vocab_size;
    CpuModel cpu(src, 128);
    std::vector<int32_t> prompt;
    for (int i = 0; i < 9; ++i) prompt.push_back(3 + (i * 131) % (V - 3));
    // The CPU's greedy sequence and its logits at every step.
    const int kSteps = 16;
    std::vector<float> cpu_prompt(prompt.size() * V), cpu_last(V);
    cpu.forward(prompt.data(), static_cast<int>(prompt.size()), 0, cpu_last.data(), cpu_prompt.data());
    std::vector<std::vector<float>> cpu_steps;
    std::vector<int32_t> toks;
    int pos = static_cast<int>(prompt.size());
    int first_tie = kSteps;  // first step whose greedy choice has a margin <= 2 x tolerance
    for (int s = 0; s < kSteps; ++s) {
      cpu_steps.push_back(cpu_last);
      Diff self = compare_logits(cpu_last.data(), cpu_last.data(), V);
      if (self.margin <= 2 * self.tol && first_tie == kSteps) first_tie = s;
      toks.push_back(argmax(cpu_last.data(), V));
      cpu.forward(&toks.back(), 1, pos++, cpu_last.data());
    }
    for (const char* dispatch : {"serial", "grouped", "fused"})
      for (const char* combine : {"loop", "index_add", "fused"})
        for (const char* buffers : {"alloc", "pooled"}) {
          SCOPED_TRACE(std::string(preset) + " dispatch=" + dispatch + " combine=" + combine + " buffers=" + buffers);
          auto ctx = cuda_ctx(src, dispatch, combine, buffers);
          cuda::CudaModel m(ctx);
          std::vector<float> all(prompt.size() * V), last(V);
          m.forward(prompt.data(), static_cast<int>(prompt.size()), 0, last.data(), all.data());
          double worst = 0, worst_tol = 0;
          for (size_t i = 0; i < prompt.size(); ++i) {
            Diff d = compare_logits(&all[i * V], &cpu_prompt[i * V], V);
            EXPECT_LE(d.max_abs, d.tol) << "prompt position " << i;
            EXPECT_TRUE(d.argmax_ok) << "prompt position " << i;
            if (d.max_abs > worst) worst = d.max_abs, worst_tol = d.tol;
          }
          int p = static_cast<int>(prompt.size());
          for (int s = 0; s < kSteps; ++s) {
            Diff d = compare_logits(last.data(), cpu_steps[s].data(), V);
            EXPECT_LE(d.max_abs, d.tol) << "step " << s;
            EXPECT_TRUE(d.argmax_ok) << "step " << s << " margin " << d.margin;
            if (d.max_abs > worst) worst = d.max_abs, worst_tol = d.tol;
            m.forward(&toks[s], 1, p++, last.data());
          }
          // Free-running greedy decode: the same 16 tokens as the CPU.
          GenerateOptions opt;
          opt.max_new_tokens = kSteps;
          opt.stop_at_eos = false;
          // Tokens chosen before the CPU's first near-tie (margin <= 2 x tolerance) must match.
          auto r = generate(m, prompt, opt);
          ASSERT_EQ(r.output.size(), toks.size());
          for (int t = 0; t < first_tie; ++t) EXPECT_EQ(r.output[t], toks[t]) << "greedy token " << t;
          std::printf("  %s %s/%s/%s: worst |cuda - cpu| %.5f (tol %.5f); greedy %s (first cpu near-tie at step %d)\n",
                      preset, dispatch, combine, buffers, worst, worst_tol, r.output == toks ? "identical" : "differs",
                      first_tie);
        }
  }
}

// Decode steps (m = 1) of Model::forward run paged_attention over the contiguous cache
// seen as one paged block, its keys split over blocks (flash-decoding). A 300-token
// prompt (prefilled in chunks through attention()) puts the decode positions past several
// 32-key chunks with a partial last one; each teacher-forced step's logits must match the
// CPU reference while both have routed every position identically (a bf16-level router
// tie is a discrete jump no tolerance covers, as in the fixture test above).
// Decode past many key chunks (the split attention path) against the CPU reference. Both
// models read the same bf16 checkpoint and take their experts from the same `uniform`
// routing source (the gate's softmax still weighs them): on random weights a near-tied
// router score otherwise picks another expert somewhere in a 300-token prefill (on the
// H200 at position 24), and that discrete jump, not the attention under test, decides
// every later logit. The routings are still recorded and must agree at every step.
TEST_F(CudaModelTest, SingleSequenceDecodeAtLongPositionsMatchesTheCpuReference) {
  test::TempDir dir;
  write_synthetic_checkpoint(preset_config("tiny"), 5, DType::bf16, dir.str());
  auto src = WeightSource::checkpoint(dir.str());
  const ModelConfig& c = src.config();
  const int V = c.vocab_size, max_len = 1024, np = 300, kSteps = 12;
  ASSERT_GT(cuda::paged_attention_splits(1, c.num_key_value_heads, max_len), 1) << "decode should split the keys";
  auto ctx = cuda_ctx(src);
  ctx.settings.max_model_len = max_len;
  ctx.settings.max_num_batched_tokens = np;
  ctx.settings.routing = "uniform";
  cuda::CudaModel m(ctx);
  EngineContext cctx = ctx;
  cctx.backend = "cpu";
  CpuModel cpu(cctx);
  RoutingLog rg, rc;
  rg.k = rc.k = c.num_experts_per_tok;
  m.set_routing_observer([&](int l, int p0, int n, const int32_t* ids, const float*) { rg.record(l, p0, n, ids); });
  cpu.set_routing_observer([&](int l, int p0, int n, const int32_t* ids, const float*) { rc.record(l, p0, n, ids); });
  std::vector<int32_t> prompt;
  for (int i = 0; i < np; ++i) prompt.push_back(3 + (i * 977) % (V - 3));
  std::vector<float> last(V), clast(V);
  m.forward(prompt.data(), np, 0, last.data());
  cpu.forward(prompt.data(), np, 0, clast.data());
  int pos = np;
  for (int s = 0; s < kSteps; ++s, ++pos) {
    const int32_t tok = argmax(clast.data(), V);
    m.forward(&tok, 1, pos, last.data());
    cpu.forward(&tok, 1, pos, clast.data());
    ASSERT_GT(first_routing_difference(rg, rc), pos) << "the shared routing source routed differently";
    Diff d = compare_logits(last.data(), clast.data(), V);
    EXPECT_LE(d.max_abs, d.tol) << "decode at position " << pos;
    EXPECT_TRUE(d.argmax_ok) << "decode at position " << pos << ", margin " << d.margin;
  }
}

TEST_F(CudaModelTest, PooledBuffersMakeNoAllocationsInSteadyStateDecode) {
  auto src = WeightSource::open("synthetic:tiny", 3);
  for (const char* buffers : {"pooled", "alloc"}) {
    auto ctx = cuda_ctx(src, "fused", "fused", buffers);
    cuda::CudaModel m(ctx);
    std::vector<int32_t> prompt{5, 6, 7, 8, 9};
    int32_t tok = m.forward_argmax(prompt.data(), 5, 0);
    int pos = 5;
    for (int i = 0; i < 2; ++i) tok = m.forward_argmax(&tok, 1, pos++);  // warm
    const uint64_t before = m.arena_alloc_count();
    for (int i = 0; i < 16; ++i) tok = m.forward_argmax(&tok, 1, pos++);
    const uint64_t made = m.arena_alloc_count() - before;
    if (std::string(buffers) == "pooled") {
      EXPECT_EQ(made, 0u) << "pooled buffers allocated in steady-state decode";
      EXPECT_FALSE(m.decode_syncs()) << "resident + fused decode should not copy router ids to the host";
    } else {
      EXPECT_GT(made, 0u) << "alloc buffers should allocate on every forward";
      EXPECT_EQ(made % 16, 0u);
    }
  }
}

TEST_F(CudaModelTest, OverBudgetIsAClearError) {
  auto src = WeightSource::open("synthetic:tiny", 3);
  auto ctx = cuda_ctx(src);
  ctx.settings.gpu_mem_budget = "8MiB";
  try {
    cuda::CudaModel m(ctx);
    FAIL() << "expected an Error for a budget of 8 MiB";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("needs at least"), std::string::npos) << msg;
    EXPECT_NE(msg.find("8.00 MiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--gpu-mem-budget"), std::string::npos) << msg;
  }
}

TEST_F(CudaModelTest, CreateModelBuildsTheCudaBackendAndChunksLongPrompts) {
  auto src = WeightSource::open("synthetic:micro", 11);
  auto ctx = cuda_ctx(src);
  ctx.settings.max_num_batched_tokens = 8;  // a 20-token prompt runs in chunks of 8
  auto m = create_model(ctx);
  EXPECT_EQ(m->backend(), "cuda");
  auto ctx2 = cuda_ctx(src);
  auto whole = create_model(ctx2);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 20; ++i) prompt.push_back(3 + i * 17 % 500);
  const int V = src.config().vocab_size;
  std::vector<float> a(V), b(V);
  m->forward(prompt.data(), 20, 0, a.data());
  whole->forward(prompt.data(), 20, 0, b.data());
  Diff d = compare_logits(a.data(), b.data(), V);
  EXPECT_LE(d.max_abs, d.tol);
}

}  // namespace cuda_model_test

#else
TEST(CudaModelTest, SkippedWithoutCuda) { GTEST_SKIP() << "built without CUDA: CUDA model tests skipped"; }
#endif
