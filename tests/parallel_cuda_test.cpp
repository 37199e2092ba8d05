// parallel_cuda_test.cpp: the tensor-parallel CUDA model (engine/cuda/parallel_model.h)
// against the same model on one GPU, on two GPUs through NCCL: greedy tokens equal,
// prompt logits within tolerance, single-sequence and batched (paged KV) decode, on the
// tiny preset and a 2-layer Mixtral-8x7B shape; each rank all-reduces twice per layer
// per forward; the pinned tier with few slots likewise. Skipped with fewer than two GPUs or without NCCL.
//
// Tolerance on logits, |tp2 - tp1| <= 2^-5 max|tp1| (four bf16 epsilons of the largest
// logit). What differs between the two is only the order of two fp32 sums per layer
// (o_proj and the MoE output are summed per rank, then across ranks): a few float ulps
// in the residual. The next bf16 rounding of a normed activation turns such a difference
// into at most one bf16 ulp (2^-8 relative) of that element, and those propagate like
// the activation roundings the single-GPU CUDA tests hold against the fp32 CPU
// reference, whose tolerance this is (cuda_model_test.cpp). Greedy tokens must be equal
// outright: at these synthetic models' margins a few ulps cannot flip an argmax (were
// one a near-tie the test would say at which step).
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_NCCL
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "engine/batch_generate.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/parallel_model.h"
#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/scheduler.h"
#include "engine/weight_source.h"

using namespace moebench;

namespace {

constexpr double kLogitTol = 4.0 / 128;

int visible_gpus() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

EngineContext ctx_for(const WeightSource& w, int tp, const std::string& budget, const std::string& tier) {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = "cuda";
  ctx.settings.max_model_len = 128;
  ctx.settings.max_num_batched_tokens = 128;
  ctx.settings.gpu_mem_budget = budget;
  ctx.settings.tensor_parallel = tp;
  if (tier != "resident") {  // offloaded: 8 slots of the tiny model's 4 x 8 experts, so experts miss and are copied in
    ctx.settings.expert_tier = tier;
    ctx.settings.cache_slots = 8;
  }
  return ctx;
}

struct Outcome {
  std::vector<float> prompt_logits;  // the last prompt position's
  std::vector<int32_t> greedy;       // single sequence
  std::vector<int32_t> batched;      // 4 sequences, paged KV, concatenated
  int64_t calls_per_forward = 0;     // all-reduces of each rank (tp > 1)
};

std::vector<int32_t> prompt_of(int i, int vocab) {
  std::vector<int32_t> p;
  for (int j = 0; j < 6 + i; ++j) p.push_back(static_cast<int32_t>((1 + 7919 * (j + 31 * i)) % vocab));
  return p;
}

Outcome run(const WeightSource& w, int tp, const std::string& budget, const std::string& tier) {
  Outcome o;
  const ModelConfig& c = w.config();
  auto model = create_model(ctx_for(w, tp, budget, tier));
  const std::vector<int32_t> prompt = prompt_of(0, c.vocab_size);
  o.prompt_logits.resize(static_cast<size_t>(c.vocab_size));
  model->forward(prompt.data(), static_cast<int>(prompt.size()), 0, o.prompt_logits.data());
  if (tp > 1) {
    auto* pm = dynamic_cast<cuda::ParallelModel*>(model.get());
    EXPECT_NE(pm, nullptr);
    if (pm) {
      for (int r = 0; r < tp; ++r) EXPECT_EQ(pm->collective_calls(r), 2 * c.num_hidden_layers) << "rank " << r;
      o.calls_per_forward = pm->collective_calls(0);
    }
  }
  model->reset();
  GenerateOptions opt;
  opt.max_new_tokens = 16;
  opt.stop_at_eos = false;
  o.greedy = generate(*model, prompt, opt).output;
  auto* bm = dynamic_cast<BatchModel*>(model.get());
  EXPECT_NE(bm, nullptr);
  if (!bm) return o;
  model->reset();
  std::vector<BatchRequest> reqs;
  for (int i = 0; i < 4; ++i) reqs.push_back({prompt_of(i + 1, c.vocab_size), 8});
  SchedulerConfig sc;
  sc.max_num_batched_tokens = 128;
  sc.max_model_len = 128;
  sc.max_num_seqs = 4;
  sc.block_size = 16;
  sc.num_blocks = 4 * 2;
  for (const auto& out : generate_batch(*bm, sc, reqs).outputs) o.batched.insert(o.batched.end(), out.begin(), out.end());
  return o;
}

void compare_with_one_gpu(const std::string& model, const std::string& budget, const std::string& tier = "resident") {
  if (visible_gpus() < 2) GTEST_SKIP() << "fewer than 2 GPUs: tensor-parallel tests skipped";
  const WeightSource w = WeightSource::open(model, 1);
  const Outcome one = run(w, 1, budget, tier);
  const Outcome two = run(w, 2, budget, tier);
  double scale = 0, worst = 0;
  for (size_t i = 0; i < one.prompt_logits.size(); ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(one.prompt_logits[i])));
    worst = std::max(worst, std::fabs(static_cast<double>(two.prompt_logits[i]) - one.prompt_logits[i]));
  }
  std::printf("%s: max |logit(tp2) - logit(tp1)| = %.3g (tolerance %.3g)\n", model.c_str(), worst, kLogitTol * scale);
  EXPECT_LE(worst, kLogitTol * scale);
  EXPECT_EQ(two.greedy, one.greedy);
  EXPECT_EQ(two.batched, one.batched);
  EXPECT_EQ(one.greedy.size(), 16u);
  EXPECT_EQ(one.batched.size(), 32u);
}

}  // namespace

TEST(TensorParallelCuda, TinyMatchesOneGpu) { compare_with_one_gpu("synthetic:tiny", "1GiB"); }

// Pinned tier, 8 slots per GPU (a prefill step of a layer may need all 8 experts): each GPU caches and copies its slices of the experts.
TEST(TensorParallelCuda, TinyPinnedMatchesOneGpu) { compare_with_one_gpu("synthetic:tiny", "1GiB", "pinned"); }

TEST(TensorParallelCuda, TwoLayerMixtralShapeMatchesOneGpu) {
  compare_with_one_gpu("synthetic:mixtral-8x7b:layers=2", "12GiB");
}

#else
TEST(TensorParallelCuda, SkippedWithoutNccl) { GTEST_SKIP() << "built without CUDA or without nccl.h: tensor-parallel tests skipped"; }
#endif
