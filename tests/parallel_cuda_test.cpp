// parallel_cuda_test.cpp: the tensor- and expert-parallel CUDA model
// (engine/cuda/parallel_model.h) against the same model on one GPU, on two GPUs through
// NCCL: prompt logits within tolerance, greedy decode single-sequence and batched (paged
// KV; the batch shrinks from 4 sequences to 1, so both the sorted cuBLAS MoE path and the
// graphed fused decode steps run), on the tiny preset and a 2-layer Mixtral-8x7B shape;
// each tensor-parallel rank all-reduces twice per layer per forward, each expert-parallel
// rank once; the pinned tier with few slots likewise (tensor parallel). Expert parallel
// also: every GPU holds its share of the experts, and over the decode steps the GPUs
// together ran at least every step's distinct experts and exactly its (token, expert)
// pairs. Skipped with fewer than two GPUs or without NCCL.
//
// Tolerance on logits, |tp2 - tp1| <= 2^-5 max|tp1| (four bf16 epsilons of the largest
// logit). What differs between the two is the order of the fp32 sums that the shards
// split (o_proj and the MoE output are summed per rank, then across ranks; a rank's
// kernels may also pick other reduction splits for its smaller shapes; expert parallel:
// a token's gate-weighted expert outputs are summed on the GPUs that hold them, then
// across GPUs): a few float ulps in the residual. The next bf16 rounding of an activation turns such a difference into
// at most one bf16 ulp (2^-8 relative) of that element, and those propagate like the
// activation roundings the single-GPU CUDA tests hold against the fp32 CPU reference,
// whose tolerance this is (cuda_model_test.cpp).
//
// Greedy tokens: a few ulps can flip an argmax whose top-2 margin is that small, and
// once a sequence takes another token the two runs no longer see the same context. So,
// as the batched-vs-alone CUDA test does: every step is compared while the contexts
// agree (logits within tolerance, the same token wherever one GPU's top-2 margin exceeds
// twice the tolerance); a sequence whose token differs at a near-tie is left from there
// on, and the test prints its margin and the logit difference there. A rank routing from
// another input than its peers, or a wrong shard, moves logits far past the tolerance.
// The graphed decode steps (no logits asked; batched, and single-sequence through
// forward_argmax) must give the tokens of the same run asked for logits (eager), bit for
// bit, and replay on every rank alike with a profiler that does not trace attached (as
// the suite runner and bench attach one). tp_allreduce=lsa gives the same bits as NCCL's
// all-reduce (two GPUs: a sum of two is the same in any order).
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_NCCL
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "engine/batch_generate.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/parallel_model.h"
#include "engine/engine.h"
#include "engine/scheduler.h"
#include "engine/weight_source.h"
#include "profiler/counters.h"

namespace parallel_cuda_test {

using namespace moebench;

namespace {

constexpr double kLogitTol = 4.0 / 128;

int visible_gpus() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

// How the model is split: tensor parallel over tp GPUs, or expert parallel over ep.
struct Layout {
  int tp = 1, ep = 1;
  const char* reduce = "residual";  // settings tp_reduce
  const char* allreduce = "auto";    // settings tp_allreduce
  int gpus() const { return std::max(tp, ep); }
};

EngineContext ctx_for(const WeightSource& w, Layout lay, const std::string& budget, const std::string& tier) {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = "cuda";
  ctx.settings.max_model_len = 128;
  ctx.settings.max_num_batched_tokens = 128;
  ctx.settings.gpu_mem_budget = budget;
  ctx.settings.tensor_parallel = lay.tp;
  ctx.settings.expert_parallel = lay.ep;
  ctx.settings.tp_reduce = lay.reduce;
  ctx.settings.tp_allreduce = lay.allreduce;
  if (tier != "resident") {  // offloaded: 8 slots of the tiny model's 4 x 8 experts, so experts miss and are copied in
    ctx.settings.expert_tier = tier;
    ctx.settings.cache_slots = 8;
  }
  return ctx;
}

// One greedy generation: the tokens of each sequence and the logits each was chosen from.
struct Greedy {
  std::vector<std::vector<int32_t>> tokens;              // (sequences, steps)
  std::vector<std::vector<std::vector<float>>> logits;   // (sequences, steps, vocab)
};

struct Outcome {
  std::vector<float> prompt_logits;  // the last prompt position's
  Greedy single;                     // one sequence, Model::forward per step
  std::vector<int32_t> single_graphed;  // the same, forward_argmax (decode steps graphed where resident)
  Greedy batched;                    // 4 sequences, paged KV, eager (logits asked)
  std::vector<std::vector<int32_t>> batched_graphed;  // the same requests, no logits asked
};

std::vector<int32_t> prompt_of(int i, int vocab) {
  std::vector<int32_t> p;
  for (int j = 0; j < 6 + i; ++j) p.push_back(static_cast<int32_t>((1 + 7919 * (j + 31 * i)) % vocab));
  return p;
}

int32_t argmax_of(const std::vector<float>& l) {
  return static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
}

double top2_margin(const std::vector<float>& l) {
  float a = -INFINITY, b = -INFINITY;
  for (float v : l) {
    if (v > a) {
      b = a;
      a = v;
    } else if (v > b) {
      b = v;
    }
  }
  return a - b;
}

// Graph replays so far of each rank (one GPU: the model's).
std::vector<int64_t> graph_replays(Model& m, int tp) {
  std::vector<int64_t> out;
  if (auto* pm = dynamic_cast<cuda::ParallelModel*>(&m)) {
    for (int r = 0; r < tp; ++r) out.push_back(pm->rank(r).graph_replays());
  } else if (auto* cm = dynamic_cast<cuda::CudaModel*>(&m)) {
    out.push_back(cm->graph_replays());
  }
  EXPECT_EQ(static_cast<int>(out.size()), tp);
  out.resize(static_cast<size_t>(tp), 0);
  return out;
}

// Single-sequence decode graph replays so far of each rank (one GPU: the model's).
std::vector<int64_t> step_replays(Model& m, int tp) {
  std::vector<int64_t> out;
  if (auto* pm = dynamic_cast<cuda::ParallelModel*>(&m)) {
    for (int r = 0; r < tp; ++r) out.push_back(pm->rank(r).decode_graph_replays());
  } else if (auto* cm = dynamic_cast<cuda::CudaModel*>(&m)) {
    out.push_back(cm->decode_graph_replays());
  }
  out.resize(static_cast<size_t>(tp), 0);
  return out;
}

// Different lengths, so the batch shrinks from 4 decode rows to 2 and 1 (graphed) as sequences end.
std::vector<BatchRequest> batch_requests(int vocab) {
  const int new_tokens[4] = {8, 8, 5, 3};
  std::vector<BatchRequest> reqs;
  for (int i = 0; i < 4; ++i) reqs.push_back({prompt_of(i + 1, vocab), new_tokens[i]});
  return reqs;
}

SchedulerConfig batch_scheduler() {
  SchedulerConfig sc;
  sc.max_num_batched_tokens = 128;
  sc.max_model_len = 128;
  sc.max_num_seqs = 4;
  sc.block_size = 16;
  sc.num_blocks = 4 * 2;
  return sc;
}

Outcome run(const WeightSource& w, Layout lay, const std::string& budget, const std::string& tier) {
  const int tp = lay.gpus();
  Outcome o;
  const ModelConfig& c = w.config();
  const int V = c.vocab_size;
  // A profiler that does not trace, as the suite runner (and so bench) attaches one: the
  // graphed decode steps must still replay on every rank.
  profiler::Profiler prof;
  EngineContext ctx = ctx_for(w, lay, budget, tier);
  ctx.prof = &prof;
  auto model = create_model(ctx);
  const std::vector<int32_t> prompt = prompt_of(0, V);
  o.prompt_logits.resize(static_cast<size_t>(V));
  model->forward(prompt.data(), static_cast<int>(prompt.size()), 0, o.prompt_logits.data());
  if (tp > 1) {
    auto* pm = dynamic_cast<cuda::ParallelModel*>(model.get());
    EXPECT_NE(pm, nullptr);
    if (pm) {
      const int per_layer = lay.ep > 1 ? 1 : 2;  // expert parallel: the MoE block's only
      for (int r = 0; r < tp; ++r) EXPECT_EQ(pm->collective_calls(r), per_layer * c.num_hidden_layers) << "rank " << r;
    }
  }
  // Single sequence, greedy, each step's logits.
  model->reset();
  o.single.tokens.resize(1);
  o.single.logits.resize(1);
  std::vector<float> l(static_cast<size_t>(V));
  model->forward(prompt.data(), static_cast<int>(prompt.size()), 0, l.data());
  for (int j = 0; j < 16; ++j) {
    const int32_t t = argmax_of(l);
    o.single.tokens[0].push_back(t);
    o.single.logits[0].push_back(l);
    if (j + 1 < 16) model->forward(&t, 1, static_cast<int>(prompt.size()) + j, l.data());
  }
  // The same greedy run through forward_argmax: decode steps replayed from CUDA graphs
  // (resident), on every rank alike, the tokens of the eager run bit for bit.
  model->reset();
  const std::vector<int64_t> steps0 = step_replays(*model, tp);
  int32_t t = model->forward_argmax(prompt.data(), static_cast<int>(prompt.size()), 0);
  o.single_graphed.push_back(t);
  for (int j = 0; j + 1 < 16; ++j) {
    t = model->forward_argmax(&t, 1, static_cast<int>(prompt.size()) + j);
    o.single_graphed.push_back(t);
  }
  const std::vector<int64_t> steps1 = step_replays(*model, tp);
  if (tier == "resident") {
    for (int r = 0; r < tp; ++r) {
      EXPECT_GT(steps1[r], steps0[r]) << "rank " << r << " replayed no single-sequence decode step";
      EXPECT_EQ(steps1[r] - steps0[r], steps1[0] - steps0[0]) << "rank " << r << " replayed other steps than rank 0";
    }
  }
  auto* bm = dynamic_cast<BatchModel*>(model.get());
  EXPECT_NE(bm, nullptr);
  if (!bm) return o;
  const std::vector<BatchRequest> reqs = batch_requests(V);
  model->reset();
  o.batched.tokens.resize(reqs.size());
  o.batched.logits.resize(reqs.size());
  const auto eager = generate_batch(*bm, batch_scheduler(), reqs, V, true,
                                    [&](const Step& st, const std::vector<int32_t>&, const std::vector<float>& logits) {
                                      int k = 0;
                                      for (const StepSeq& ss : st.seqs)
                                        if (ss.sample) {
                                          o.batched.logits[ss.seq].emplace_back(logits.begin() + static_cast<int64_t>(k) * V,
                                                                                logits.begin() + static_cast<int64_t>(k + 1) * V);
                                          ++k;
                                        }
                                    });
  o.batched.tokens = eager.outputs;
  model->reset();
  const std::vector<int64_t> replays0 = graph_replays(*model, tp);
  o.batched_graphed = generate_batch(*bm, batch_scheduler(), reqs).outputs;
  const std::vector<int64_t> replays1 = graph_replays(*model, tp);
  if (tier == "resident") {  // the pinned tier syncs per layer: no graphs
    for (int r = 0; r < tp; ++r) {
      EXPECT_GT(replays1[r], replays0[r]) << "rank " << r << " replayed no decode step";
      EXPECT_EQ(replays1[r] - replays0[r], replays1[0] - replays0[0]) << "rank " << r << " replayed other steps than rank 0";
    }
  }
  return o;
}

// tp's greedy run against one's (see the file comment): returns the steps compared.
int compare_greedy(const char* what, const Greedy& one, const Greedy& tp) {
  int compared = 0;
  EXPECT_EQ(tp.tokens.size(), one.tokens.size()) << what;
  for (size_t r = 0; r < std::min(one.tokens.size(), tp.tokens.size()); ++r) {
    EXPECT_EQ(tp.tokens[r].size(), one.tokens[r].size()) << what << " sequence " << r;
    EXPECT_EQ(one.logits[r].size(), one.tokens[r].size()) << what << " sequence " << r;
    EXPECT_EQ(tp.logits[r].size(), tp.tokens[r].size()) << what << " sequence " << r;
    const size_t n = std::min({one.tokens[r].size(), tp.tokens[r].size(), one.logits[r].size(), tp.logits[r].size()});
    for (size_t j = 0; j < n; ++j) {
      const auto& a = one.logits[r][j];
      const auto& b = tp.logits[r][j];
      double mx = 0, worst = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        mx = std::max(mx, static_cast<double>(std::fabs(a[i])));
        worst = std::max(worst, static_cast<double>(std::fabs(a[i] - b[i])));
      }
      const double tol = kLogitTol * mx, margin = top2_margin(a);
      EXPECT_LE(worst, tol) << what << " sequence " << r << " token " << j;
      ++compared;
      if (margin > 2 * tol) {
        EXPECT_EQ(tp.tokens[r][j], one.tokens[r][j]) << what << " sequence " << r << " token " << j << ": margin " << margin;
      }
      if (tp.tokens[r][j] != one.tokens[r][j]) {  // a near-tie went the other way: the contexts differ from here
        std::printf("[ tp ] %s sequence %zu token %zu: %d on one GPU, %d on two; one GPU's top-2 margin %.4g, largest "
                    "logit difference %.4g (tolerance %.4g)\n",
                    what, r, j, one.tokens[r][j], tp.tokens[r][j], margin, worst, tol);
        break;
      }
    }
  }
  return compared;
}

void compare_with_one_gpu(const std::string& model, const std::string& budget, const std::string& tier = "resident",
                          Layout lay = Layout{2, 1}) {
  if (visible_gpus() < 2) GTEST_SKIP() << "fewer than 2 GPUs: multi-GPU tests skipped";
  const WeightSource w = WeightSource::open(model, 1);
  const Outcome one = run(w, Layout{}, budget, tier);
  const Outcome two = run(w, lay, budget, tier);
  double scale = 0, worst = 0;
  for (size_t i = 0; i < one.prompt_logits.size(); ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(one.prompt_logits[i])));
    worst = std::max(worst, std::fabs(static_cast<double>(two.prompt_logits[i]) - one.prompt_logits[i]));
  }
  std::printf("%s: max |logit(tp2) - logit(tp1)| = %.3g (tolerance %.3g)\n", model.c_str(), worst, kLogitTol * scale);
  EXPECT_LE(worst, kLogitTol * scale);
  ASSERT_EQ(one.single.tokens[0].size(), 16u);
  ASSERT_EQ(one.batched.tokens.size(), 4u);
  const int single = compare_greedy("single-sequence", one.single, two.single);
  const int batched = compare_greedy("batched", one.batched, two.batched);
  std::printf("%s: %d single-sequence and %d batched steps compared (of 16 and 24)\n", model.c_str(), single, batched);
  EXPECT_GE(single + batched, 20) << "too few steps compared";
  // Graph replays against the eager run of the same model: the same launches, the same bits.
  EXPECT_EQ(one.batched_graphed, one.batched.tokens);
  EXPECT_EQ(two.batched_graphed, two.batched.tokens);
  EXPECT_EQ(one.single_graphed, one.single.tokens[0]);
  EXPECT_EQ(two.single_graphed, two.single.tokens[0]);
}

// tp_allreduce=lsa (decode's all-reduces in a kernel over NCCL's device API) against
// NCCL's all-reduce (plain) in the same layout on two GPUs: a sum of two floats is the
// same in any order, so every logit and token must be the same bits, eager and graphed,
// single-sequence and batched (the prompts and decode steps here are all within the
// kernel's 64 rows, so every all-reduce of the lsa run goes through it).
void compare_lsa_with_nccl(const std::string& model, const std::string& budget, Layout lay) {
  if (visible_gpus() < 2) GTEST_SKIP() << "fewer than 2 GPUs: multi-GPU tests skipped";
  const WeightSource w = WeightSource::open(model, 1);
  Layout plain = lay, lsa = lay;
  plain.allreduce = "plain";
  lsa.allreduce = "lsa";
  const Outcome a = run(w, plain, budget, "resident");
  const Outcome b = run(w, lsa, budget, "resident");
  EXPECT_EQ(a.prompt_logits, b.prompt_logits);
  EXPECT_EQ(a.single.tokens, b.single.tokens);
  EXPECT_EQ(a.single.logits, b.single.logits);
  EXPECT_EQ(a.single_graphed, b.single_graphed);
  EXPECT_EQ(a.batched.tokens, b.batched.tokens);
  EXPECT_EQ(a.batched.logits, b.batched.logits);
  EXPECT_EQ(a.batched_graphed, b.batched_graphed);
  EXPECT_EQ(b.single_graphed, b.single.tokens[0]);
  EXPECT_EQ(b.batched_graphed, b.batched.tokens);
}

// A resident model of w in layout lay (12 GiB per GPU) after a prompt and `steps` greedy
// single-sequence decode steps (forward_argmax).
std::unique_ptr<Model> after_greedy_steps(const WeightSource& w, Layout lay, int steps) {
  EngineContext ctx = ctx_for(w, lay, "12GiB", "resident");
  auto model = create_model(ctx);
  const std::vector<int32_t> prompt = prompt_of(0, w.config().vocab_size);
  int32_t t = model->forward_argmax(prompt.data(), static_cast<int>(prompt.size()), 0);
  for (int j = 0; j < steps; ++j) t = model->forward_argmax(&t, 1, static_cast<int>(prompt.size()) + j);
  return model;
}

}  // namespace

TEST(TensorParallelCuda, TinyMatchesOneGpu) { compare_with_one_gpu("synthetic:tiny", "1GiB"); }

// Pinned tier, 8 slots per GPU (a prefill step of a layer may need all 8 experts): each GPU caches and copies its slices of the experts.
TEST(TensorParallelCuda, TinyPinnedMatchesOneGpu) { compare_with_one_gpu("synthetic:tiny", "1GiB", "pinned"); }

TEST(TensorParallelCuda, LsaAllReduceSameBitsAsNccl) {
  compare_lsa_with_nccl("synthetic:tiny", "1GiB", Layout{2, 1});
  compare_lsa_with_nccl("synthetic:mixtral-8x7b:layers=2", "12GiB", Layout{2, 1});
}
// NCCL's all-reduce in symmetric memory (the default at two GPUs before lsa).
TEST(TensorParallelCuda, TinySymmetricMatchesOneGpu) {
  Layout lay{2, 1};
  lay.allreduce = "symmetric";
  compare_with_one_gpu("synthetic:tiny", "1GiB", "resident", lay);
}
TEST(ExpertParallelCuda, LsaAllReduceSameBitsAsNccl) { compare_lsa_with_nccl("synthetic:tiny", "1GiB", Layout{1, 2}); }

// The model says which all-reduce it runs; lsa's kernel takes
// decode's rows, not more.
TEST(TensorParallelCuda, LsaAllReduceIsNamedAndBounded) {
  if (visible_gpus() < 2) GTEST_SKIP() << "fewer than 2 GPUs: multi-GPU tests skipped";
  const WeightSource w = WeightSource::open("synthetic:tiny", 1);
  Layout lay{2, 1};
  lay.allreduce = "lsa";
  EngineContext ctx = ctx_for(w, lay, "1GiB", "resident");
  auto model = create_model(ctx);
  EXPECT_NE(model->experts_describe().find("lsa all-reduce"), std::string::npos) << model->experts_describe();
  // A 100-token prompt: its all-reduces (100 rows, more than the kernel takes) go through
  // NCCL, with the same logits as the plain run's.
  std::vector<int32_t> prompt(100);
  for (int j = 0; j < 100; ++j) prompt[j] = (1 + 7919 * j) % w.config().vocab_size;
  std::vector<float> la(static_cast<size_t>(w.config().vocab_size)), lb = la;
  model->forward(prompt.data(), 100, 0, la.data());
  lay.allreduce = "plain";
  EngineContext ctx2 = ctx_for(w, lay, "1GiB", "resident");
  model.reset();
  auto plain = create_model(ctx2);
  plain->forward(prompt.data(), 100, 0, lb.data());
  EXPECT_EQ(la, lb);
}

TEST(TensorParallelCuda, TwoLayerMixtralShapeMatchesOneGpu) {
  compare_with_one_gpu("synthetic:mixtral-8x7b:layers=2", "12GiB");
}

// The partial sums in a buffer of their own, then added (tp_reduce=partial), both layouts.
TEST(TensorParallelCuda, TinyPartialReduceMatchesOneGpu) {
  compare_with_one_gpu("synthetic:tiny", "1GiB", "resident", Layout{2, 1, "partial"});
}
TEST(ExpertParallelCuda, TinyPartialReduceMatchesOneGpu) {
  compare_with_one_gpu("synthetic:tiny", "1GiB", "resident", Layout{1, 2, "partial"});
}

TEST(ExpertParallelCuda, TinyMatchesOneGpu) { compare_with_one_gpu("synthetic:tiny", "1GiB", "resident", Layout{1, 2}); }

TEST(ExpertParallelCuda, TwoLayerMixtralShapeMatchesOneGpu) {
  compare_with_one_gpu("synthetic:mixtral-8x7b:layers=2", "12GiB", "resident", Layout{1, 2});
}

// Each GPU holds its half of the experts (round-robin: 4 of each layer's 8) and the arena
// shows it; over the decode steps of a greedy run every GPU counted steps, and the GPUs'
// pairs add up to the steps' tokens x top_k (every pair computed on exactly one GPU).
TEST(ExpertParallelCuda, CountersSplitThePairs) {
  if (visible_gpus() < 2) GTEST_SKIP() << "fewer than 2 GPUs: multi-GPU tests skipped";
  const WeightSource w = WeightSource::open("synthetic:mixtral-8x7b:layers=2", 1);
  const ModelConfig& c = w.config();
  const int steps = 6;
  auto model = after_greedy_steps(w, Layout{1, 2}, steps);
  const auto g = model->gpu_ranks();
  ASSERT_EQ(g.size(), 2u);
  int64_t pairs = 0, held = 0;
  for (const auto& r : g) {
    EXPECT_EQ(r.experts_held, c.num_hidden_layers * c.num_local_experts / 2) << r.device;
    EXPECT_EQ(r.ep_decode_steps, steps) << r.device;
    EXPECT_GE(r.decode_experts_run, 0) << r.device;
    EXPECT_LE(r.decode_experts_run, r.decode_expert_pairs) << r.device;
    pairs += r.decode_expert_pairs;
    held += r.experts_held;
  }
  EXPECT_EQ(held, c.num_hidden_layers * c.num_local_experts);
  EXPECT_EQ(pairs, static_cast<int64_t>(steps) * c.num_hidden_layers * c.num_experts_per_tok);
  // Two distinct experts per token and layer, wherever they are.
  EXPECT_EQ(g[0].decode_experts_run + g[1].decode_experts_run,
            static_cast<int64_t>(steps) * c.num_hidden_layers * c.num_experts_per_tok);
}

// Tensor parallel: every GPU holds a block of every expert; one token's decode step runs
// top_k experts a layer, a batched step between that and all of them, and the GPUs count
// the same (the bound's experts per step, suites/bound.cpp).
TEST(TensorParallelCuda, CountersCountTheExpertsRun) {
  if (visible_gpus() < 2) GTEST_SKIP() << "fewer than 2 GPUs: multi-GPU tests skipped";
  const WeightSource w = WeightSource::open("synthetic:mixtral-8x7b:layers=2", 1);
  const ModelConfig& c = w.config();
  const int steps = 6;
  auto model = after_greedy_steps(w, Layout{2, 1}, steps);
  const auto g = model->gpu_ranks();
  ASSERT_EQ(g.size(), 2u);
  const int64_t layer_k = static_cast<int64_t>(c.num_hidden_layers) * c.num_experts_per_tok;
  for (const auto& r : g) {
    EXPECT_EQ(r.experts_held, c.num_hidden_layers * c.num_local_experts) << r.device;
    EXPECT_EQ(r.ep_decode_steps, steps) << r.device;
    EXPECT_EQ(r.decode_experts_run, steps * layer_k) << r.device;
    EXPECT_EQ(r.decode_expert_pairs, steps * layer_k) << r.device;
  }
  auto* bm = dynamic_cast<BatchModel*>(model.get());
  ASSERT_NE(bm, nullptr);
  model->reset();
  generate_batch(*bm, batch_scheduler(), batch_requests(c.vocab_size));
  const auto h = model->gpu_ranks();
  ASSERT_EQ(h.size(), 2u);
  const int64_t batched_steps = h[0].ep_decode_steps - g[0].ep_decode_steps;
  const int64_t run = h[0].decode_experts_run - g[0].decode_experts_run;
  EXPECT_GT(batched_steps, 0);
  EXPECT_GE(run, batched_steps * layer_k);
  EXPECT_LE(run, batched_steps * c.num_hidden_layers * c.num_local_experts);
  EXPECT_GT(run, batched_steps * layer_k) << "4 sequences never chose more than one token's experts";
  EXPECT_EQ(h[1].decode_experts_run - g[1].decode_experts_run, run);
  EXPECT_EQ(h[1].ep_decode_steps - g[1].ep_decode_steps, batched_steps);
}

}  // namespace parallel_cuda_test

#else
TEST(TensorParallelCuda, SkippedWithoutNccl) { GTEST_SKIP() << "built without CUDA or without nccl.h: multi-GPU tests skipped"; }
#endif
