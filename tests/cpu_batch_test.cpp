// cpu_batch_test.cpp: the CPU model's batched forward (BatchModel: several sequences a
// forward, keys/values in a paged fp32 pool) through the scheduler. Every op of the CPU
// model works row by row, so a sequence batched must get the very logits it gets alone,
// bit for bit, in every family and expert format, with chunked prefills (a step may then
// sample nothing), mixed prefill/decode steps and preemption (recomputation) on the way. The CPU model also
// counts the distinct experts of each batched decode step, as the CUDA model does for
// bench's bound.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/batch_generate.h"
#include "engine/cpu_model.h"
#include "engine/engine.h"
#include "engine/weight_source.h"

namespace cpu_batch_test {

using namespace moebench;

namespace {

std::vector<int32_t> prompt_of(int n, int salt, int vocab) {
  std::vector<int32_t> p = {1};
  for (int i = 1; i < n; ++i) p.push_back(3 + (i * 7919 + salt * 104729) % (vocab - 3));
  return p;
}

struct Fixture {
  WeightSource src;
  std::unique_ptr<CpuModel> model;
  Fixture(const std::string& name, const std::string& expert_dtype, int max_batched_tokens)
      : src(WeightSource::open(name, 7)) {
    EngineContext ctx;
    ctx.weights = &src;
    ctx.settings.expert_dtype = expert_dtype;
    ctx.settings.max_model_len = 128;
    ctx.settings.max_num_batched_tokens = max_batched_tokens;
    model = std::make_unique<CpuModel>(ctx);
  }
};

// Each request alone through forward(): the logits of every generated token (greedy).
std::vector<std::vector<float>> alone(CpuModel& m, const BatchRequest& r) {
  const int V = m.config().vocab_size;
  std::vector<std::vector<float>> out;
  std::vector<float> logits(static_cast<size_t>(V));
  m.reset();
  m.forward(r.prompt.data(), static_cast<int>(r.prompt.size()), 0, logits.data());
  int pos = static_cast<int>(r.prompt.size());
  for (int j = 0; j < r.max_new_tokens; ++j) {
    out.push_back(logits);
    if (j + 1 == r.max_new_tokens) break;
    int32_t tok = 0;
    for (int v = 1; v < V; ++v)
      if (logits[v] > logits[tok]) tok = v;
    m.forward(&tok, 1, pos++, logits.data());
  }
  return out;
}

// The same requests batched: the logits of each sequence's samples, in order.
std::vector<std::vector<std::vector<float>>> batched(CpuModel& m, const SchedulerConfig& sc,
                                                     const std::vector<BatchRequest>& reqs, int64_t* preemptions) {
  const int V = m.config().vocab_size;
  std::vector<std::vector<std::vector<float>>> per_seq(reqs.size());
  const auto g = generate_batch(m, sc, reqs, V, true, [&](const Step& st, const std::vector<int32_t>&,
                                                           const std::vector<float>& logits) {
    int k = 0;
    for (const StepSeq& s : st.seqs) {
      if (!s.sample) continue;
      const float* row = logits.data() + static_cast<size_t>(k++) * V;
      per_seq.at(static_cast<size_t>(s.seq)).emplace_back(row, row + V);
    }
  });
  if (preemptions) *preemptions = g.preemptions;
  return per_seq;
}

void batched_logits_are_alone(const std::string& name, const std::string& dtype, int step_tokens, int num_blocks,
                              bool expect_preemption) {
  SCOPED_TRACE(name + " " + dtype);
  Fixture f(name, dtype, step_tokens);
  const int V = f.model->config().vocab_size;
  std::vector<BatchRequest> reqs;
  const std::vector<int> lens = {9, 30, 4, 17, 25};
  for (size_t i = 0; i < lens.size(); ++i) reqs.push_back({prompt_of(lens[i], static_cast<int>(i), V), 6});
  const SchedulerConfig sc{.max_num_batched_tokens = step_tokens, .max_model_len = 128, .max_num_seqs = 4,
                           .block_size = 4, .num_blocks = num_blocks};
  int64_t preemptions = 0;
  const auto got = batched(*f.model, sc, reqs, &preemptions);
  if (expect_preemption) {
    EXPECT_GT(preemptions, 0) << "the pool was meant to run out";
  }
  for (size_t r = 0; r < reqs.size(); ++r) {
    const auto want = alone(*f.model, reqs[r]);
    // A preempted sequence samples its recomputed tokens again; its last samples are its tokens.
    ASSERT_GE(got[r].size(), want.size()) << "request " << r;
    const size_t skip = got[r].size() - want.size();
    for (size_t j = 0; j < want.size(); ++j)
      EXPECT_EQ(std::memcmp(got[r][skip + j].data(), want[j].data(), want[j].size() * sizeof(float)), 0)
          << "request " << r << " token " << j << ": batched logits differ from the sequence alone";
  }
}

}  // namespace

TEST(CpuBatch, BatchedLogitsAreEachSequenceAloneInEveryFamily) {
  for (const char* name : {"synthetic:tiny", "synthetic:tiny-qwen3", "synthetic:tiny-olmoe", "synthetic:tiny-qwen2-moe"})
    batched_logits_are_alone(name, "bf16", 24, 64, false);
}

TEST(CpuBatch, BatchedLogitsAreEachSequenceAloneInEveryExpertFormat) {
  for (const char* dtype : {"fp8", "int8", "int4"}) batched_logits_are_alone("synthetic:tiny", dtype, 24, 64, false);
}

// A pool of 14 blocks of 4 slots cannot hold four of these sequences at once: the
// scheduler preempts and recomputes, and the recomputed sequences still match.
TEST(CpuBatch, PreemptedSequencesRecomputeTheSameLogits) {
  batched_logits_are_alone("synthetic:tiny", "bf16", 24, 14, true);
}

// The count behind bench's batched bound: every decode step of two or more sequences
// adds, layer by layer, the distinct experts its tokens chose (as the router's observer
// sees them); prefill steps and lone decode rows add nothing; off, nothing more is counted.
TEST(CpuBatch, StepExpertCountIsTheDistinctExpertsOfEachDecodeStep) {
  Fixture f("synthetic:tiny", "bf16", 64);
  CpuModel& m = *f.model;
  const ModelConfig& c = m.config();
  const int L = c.num_hidden_layers, K = c.num_experts_per_tok;
  std::vector<BatchRequest> reqs;
  const std::vector<int> lens = {9, 30, 4, 17, 25};
  for (size_t i = 0; i < lens.size(); ++i) reqs.push_back({prompt_of(lens[i], static_cast<int>(i), c.vocab_size), 8});
  const SchedulerConfig sc{.max_num_batched_tokens = 64, .max_model_len = 128, .max_num_seqs = 8, .block_size = 16,
                           .num_blocks = 40};
  std::vector<std::set<int32_t>> layer_sets(static_cast<size_t>(L));
  m.set_routing_observer([&](int layer, int, int n, const int32_t* ids, const float*) {
    layer_sets.at(static_cast<size_t>(layer)).insert(ids, ids + n * K);
  });
  ASSERT_TRUE(m.set_step_expert_count(true));
  int64_t expected = 0, expected_steps = 0;
  const auto counted = generate_batch(m, sc, reqs, 0, false, [&](const Step& st, const std::vector<int32_t>&,
                                                                  const std::vector<float>&) {
    if (!st.prefill && st.n_tokens > 1) {
      ++expected_steps;
      for (const auto& set : layer_sets) expected += static_cast<int64_t>(set.size());
    }
    for (auto& set : layer_sets) set.clear();
  });
  const Model::StepExperts n = m.step_expert_count();
  ASSERT_TRUE(m.set_step_expert_count(false));
  m.set_routing_observer({});
  ASSERT_GT(expected_steps, 0);
  EXPECT_EQ(n.steps, expected_steps);
  EXPECT_EQ(n.experts, expected);
  EXPECT_GE(n.experts, n.steps * L * K);
  EXPECT_LE(n.experts, n.steps * L * c.num_local_experts);
  EXPECT_EQ(generate_batch(m, sc, reqs).outputs, counted.outputs) << "counting changed the tokens";
  const Model::StepExperts after = m.step_expert_count();
  EXPECT_EQ(after.steps, n.steps);
  EXPECT_EQ(after.experts, n.experts);
  ASSERT_TRUE(m.set_step_expert_count(true));  // on again: counting starts from zero
  EXPECT_EQ(m.step_expert_count().steps, 0);
}

TEST(CpuBatch, ForwardBatchRejectsBadInputWithOneLine) {
  Fixture f("synthetic:tiny", "bf16", 32);
  CpuModel& m = *f.model;
  std::vector<int32_t> tok(40, 5), table = {0, 1, 2, 3};
  int32_t next[4];
  auto msg_of = [&](const std::vector<BatchSeq>& seqs) -> std::string {
    try {
      m.forward_batch(seqs, next);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(msg_of({BatchSeq{tok.data(), 1, 0, table.data(), 1, true}}),
            "forward_batch: no paged KV pool (call setup_kv_blocks first)");
  m.setup_kv_blocks(16, 4, 2);
  EXPECT_EQ(msg_of({}), "forward_batch: no sequences");
  EXPECT_EQ(msg_of({BatchSeq{tok.data(), 40, 0, table.data(), 4, true}}),
            "forward_batch: 40 tokens exceed max_num_batched_tokens 32");
  EXPECT_EQ(msg_of({BatchSeq{tok.data(), 20, 0, table.data(), 1, true}}),
            "forward_batch: block table of 1 blocks of 16 cannot hold 20 tokens");
  table[0] = 9;
  EXPECT_EQ(msg_of({BatchSeq{tok.data(), 2, 0, table.data(), 1, true}}), "forward_batch: KV block id 9 out of range 0..3");
  table[0] = 0;
  tok[0] = -1;
  EXPECT_EQ(msg_of({BatchSeq{tok.data(), 2, 0, table.data(), 1, true}}), "token id -1 out of range 0..31999");
  tok[0] = 5;
  EXPECT_EQ(msg_of({BatchSeq{tok.data(), 2, 0, table.data(), 1, false}}), "");  // a prompt's chunk: nothing sampled
  EXPECT_EQ(msg_of({BatchSeq{tok.data(), 1, 0, table.data(), 1, true}, BatchSeq{tok.data(), 1, 0, table.data(), 1, true},
                    BatchSeq{tok.data(), 1, 0, table.data(), 1, true}}),
            "forward_batch: 3 sequences, the KV pool was set up for at most 2");
  EXPECT_THROW(m.setup_kv_blocks(0, 4, 2), Error);
}

}  // namespace cpu_batch_test
