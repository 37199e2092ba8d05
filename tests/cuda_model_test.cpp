// cuda_model_test.cpp: the CUDA model end to end (skipped, with a message, without a GPU).
//   * the tiny transformers fixture (tests/fixtures/hf_tiny): prompt logits, teacher-forced
//     step logits and the 16 greedy tokens against MixtralForCausalLM;
//   * CUDA against the fp32 CPU reference on synthetic models, for every dispatch x
//     combine x buffers combination;
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
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/cpu_model.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/device.h"
#include "engine/engine.h"
#include "engine/error.h"
#include "engine/generate.h"
#include "test_util.h"

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

EngineContext cuda_ctx(const WeightSource& w, const std::string& dispatch = "fused", const std::string& combine = "fused",
                       const std::string& buffers = "pooled") {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = "cuda";
  ctx.settings.max_model_len = 128;
  ctx.settings.max_num_batched_tokens = 64;
  ctx.settings.gpu_mem_budget = "1GiB";
  ctx.settings.dispatch = dispatch;
  ctx.settings.combine = combine;
  ctx.settings.buffers = buffers;
  return ctx;
}

class CudaModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA model tests skipped";
  }
};

nlohmann::json oracle() { return nlohmann::json::parse(test::read_file(test::fixture("hf_tiny/oracle.json"))); }

}  // namespace

TEST_F(CudaModelTest, HfFixturePromptAndTeacherForcedLogits) {
  auto o = oracle();
  auto src = WeightSource::checkpoint(test::fixture("hf_tiny"));
  auto ctx = cuda_ctx(src);
  cuda::CudaModel m(ctx);
  const int V = src.config().vocab_size;
  auto prompt = o["prompt_ids"].get<std::vector<int32_t>>();
  auto greedy = o["greedy_tokens"].get<std::vector<int32_t>>();
  std::vector<float> all(prompt.size() * V), last(V);
  m.forward(prompt.data(), static_cast<int>(prompt.size()), 0, last.data(), all.data());
  for (size_t i = 0; i < prompt.size(); ++i) {
    auto ref = o["prompt_logits"][i].get<std::vector<float>>();
    Diff d = compare_logits(&all[i * V], ref.data(), V);
    EXPECT_LE(d.max_abs, d.tol) << "prompt position " << i;
    EXPECT_TRUE(d.argmax_ok) << "prompt position " << i << " margin " << d.margin;
  }
  // Teacher forcing: feed transformers' own greedy tokens, compare each step's logits.
  int pos = static_cast<int>(prompt.size());
  for (int step = 0; step < 16; ++step) {
    auto ref = o["step_logits"][step].get<std::vector<float>>();
    Diff d = compare_logits(last.data(), ref.data(), V);
    EXPECT_LE(d.max_abs, d.tol) << "step " << step;
    EXPECT_TRUE(d.argmax_ok) << "step " << step << " margin " << d.margin;
    std::printf("  step %2d: max |cuda - transformers| %.4f (tol %.4f), top-2 margin %.4f\n", step, d.max_abs, d.tol,
                d.margin);
    m.forward(&greedy[step], 1, pos++, last.data());
  }
}

TEST_F(CudaModelTest, HfFixtureSixteenGreedyTokens) {
  auto o = oracle();
  auto src = WeightSource::checkpoint(test::fixture("hf_tiny"));
  auto ctx = cuda_ctx(src);
  cuda::CudaModel m(ctx);
  GenerateOptions opt;
  opt.max_new_tokens = 16;
  opt.stop_at_eos = false;
  auto r = generate(m, o["prompt_ids"].get<std::vector<int32_t>>(), opt);
  EXPECT_EQ(r.output, o["greedy_tokens"].get<std::vector<int32_t>>());
}

// CUDA vs the CPU reference on a synthetic model, every dispatch x combine x buffers.
// Teacher-forced on the CPU's greedy sequence; the greedy tokens themselves must be
// identical where the CPU's choice is not a bf16-level tie (checked and printed).
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
    bool all_clear = true;  // every greedy choice has a margin above 2 x tolerance
    for (int s = 0; s < kSteps; ++s) {
      cpu_steps.push_back(cpu_last);
      Diff self = compare_logits(cpu_last.data(), cpu_last.data(), V);
      all_clear &= self.margin > 2 * self.tol;
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
          auto r = generate(m, prompt, opt);
          if (all_clear) EXPECT_EQ(r.output, toks);
          else if (r.output != toks)
            std::printf("  %s: greedy tokens differ from the CPU after a bf16-level tie (not a failure)\n", preset);
          std::printf("  %s %s/%s/%s: worst |cuda - cpu| %.5f (tol %.5f)%s\n", preset, dispatch, combine, buffers,
                      worst, worst_tol, all_clear ? "" : " [cpu greedy path has near-ties]");
        }
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

#else
TEST(CudaModelTest, SkippedWithoutCuda) { GTEST_SKIP() << "built without CUDA: CUDA model tests skipped"; }
#endif
