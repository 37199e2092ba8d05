// scheduler_test.cpp: the continuous-batching scheduler and its paged KV bookkeeping,
// on the CPU. PagedEchoModel is a BatchModel whose "KV cache" is a host block pool
// holding token ids: it writes each new token into the slot its block table names and
// computes the next token from the whole context read back through the block table.
// If the scheduler ever hands two live sequences the same block, forgets a block, or
// skips / repeats a position, the batched outputs differ from each sequence run alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "engine/batch_generate.h"
#include "common/error.h"
#include "engine/scheduler.h"
#include "test_util.h"

namespace scheduler_test {

using namespace moebench;

namespace {

constexpr int kVocab = 1000;

// next = f(context): order-sensitive hash of every token the sequence has seen.
int32_t next_of(const std::vector<int32_t>& ctx) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : ctx) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
  return static_cast<int32_t>(h % kVocab);
}

class PagedEchoModel : public BatchModel {
 public:
  void setup_kv_blocks(int block_size, int num_blocks, int) override {
    bs_ = block_size;
    slots_.assign(static_cast<size_t>(block_size) * num_blocks, -1);
  }
  void forward_batch(const std::vector<BatchSeq>& seqs, int32_t* next, float* logits) override {
    int tokens = 0, k = 0;
    for (const BatchSeq& s : seqs) {
      tokens += s.n;
      EXPECT_GE(s.n_blocks * bs_, s.pos0 + s.n);
      for (int i = 0; i < s.n; ++i) slot(s, s.pos0 + i) = s.tokens[i];
      if (!s.sample) continue;
      std::vector<int32_t> ctx;
      for (int p = 0; p < s.pos0 + s.n; ++p) ctx.push_back(slot(s, p));
      next[k] = next_of(ctx);
      if (logits) logits[static_cast<size_t>(k) * kVocab + next[k]] = 1.0f;
      ++k;
    }
    max_tokens_seen = std::max(max_tokens_seen, tokens);
    ++steps;
  }
  int max_batch_tokens() const override { return 1 << 20; }
  int max_tokens_seen = 0, steps = 0;

 private:
  int32_t& slot(const BatchSeq& s, int pos) {
    const int blk = s.block_table[pos / bs_];
    return slots_.at(static_cast<size_t>(blk) * bs_ + pos % bs_);
  }
  int bs_ = 0;
  std::vector<int32_t> slots_;
};

std::vector<int32_t> alone(const std::vector<int32_t>& prompt, int n_new) {
  std::vector<int32_t> ctx = prompt, out;
  for (int i = 0; i < n_new; ++i) {
    out.push_back(next_of(ctx));
    ctx.push_back(out.back());
  }
  return out;
}

std::vector<int32_t> prompt_of(int len, int seed) {
  std::vector<int32_t> p(static_cast<size_t>(len));
  for (int i = 0; i < len; ++i) p[i] = 3 + (i * 7919 + seed * 104729) % (kVocab - 3);
  return p;
}

SchedulerConfig cfg(int budget, int blocks, int block_size = 4, int max_seqs = 8, int max_len = 256) {
  SchedulerConfig c;
  c.max_num_batched_tokens = budget;
  c.num_blocks = blocks;
  c.block_size = block_size;
  c.max_num_seqs = max_seqs;
  c.max_model_len = max_len;
  return c;
}

using test::error_of;

}  // namespace

TEST(BlockPool, GrowsReleasesAndRefusesWhenShort) {
  BlockPool pool(5, 4);
  std::vector<int32_t> a, b;
  EXPECT_TRUE(pool.grow(a, 9));  // 3 blocks
  EXPECT_EQ(a.size(), 3u);
  EXPECT_EQ(pool.free_blocks(), 2);
  EXPECT_FALSE(pool.grow(b, 12));  // would need 3
  EXPECT_TRUE(b.empty());
  EXPECT_TRUE(pool.grow(b, 8));
  for (int32_t x : a) EXPECT_EQ(std::count(b.begin(), b.end(), x), 0) << "block " << x << " handed out twice";
  EXPECT_TRUE(pool.grow(a, 12));  // still 3 blocks: no growth needed
  EXPECT_EQ(pool.free_blocks(), 0);
  pool.release(a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(pool.free_blocks(), 3);
}

TEST(Scheduler, EnforcesMaxModelLenWithOneLine) {
  Scheduler s(cfg(64, 100, 4, 8, 60));
  const std::string e = error_of([&] { s.add(prompt_of(50, 1), 11); });
  EXPECT_NE(e.find("50 prompt tokens + 11 new tokens = 61 exceeds max_model_len 60"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  EXPECT_NO_THROW(s.add(prompt_of(50, 1), 10));
  EXPECT_NE(error_of([&] { s.add({}, 4); }).find("empty prompt"), std::string::npos);
  Scheduler tiny(cfg(64, 2, 4, 8, 60));
  EXPECT_NE(error_of([&] { tiny.add(prompt_of(8, 1), 4); }).find("need 3 KV blocks"), std::string::npos);
  SchedulerConfig bad = cfg(0, 10);
  EXPECT_NE(error_of([&] { Scheduler x(bad); }).find("max_num_batched_tokens 0"), std::string::npos);
}

TEST(Scheduler, AdmitsPrefillsUnderTheTokenBudgetThenDecodesAll) {
  Scheduler s(cfg(64, 100));
  s.add(prompt_of(40, 1), 3);
  s.add(prompt_of(40, 2), 3);
  s.add(prompt_of(10, 3), 3);
  Step a = s.schedule();  // 40 + the first 24 of the second prompt (chunked)
  ASSERT_TRUE(a.prefill);
  ASSERT_EQ(a.seqs.size(), 2u);
  EXPECT_EQ(a.n_tokens, 64);
  EXPECT_TRUE(a.seqs[0].sample);
  EXPECT_EQ(a.seqs[1].n, 24);
  EXPECT_FALSE(a.seqs[1].sample);
  s.update(a, {7});
  Step b = s.schedule();  // the rest of the second (16) and the third (10)
  ASSERT_TRUE(b.prefill);
  ASSERT_EQ(b.seqs.size(), 2u);
  EXPECT_EQ(b.seqs[0].pos0, 24);
  EXPECT_EQ(b.seqs[0].n, 16);
  EXPECT_EQ(b.n_tokens, 26);
  s.update(b, {8, 9});
  Step c = s.schedule();  // decode: every running sequence, one token each
  EXPECT_FALSE(c.prefill);
  ASSERT_EQ(c.seqs.size(), 3u);
  for (auto& x : c.seqs) EXPECT_EQ(x.n, 1);
  EXPECT_EQ(c.seqs[0].pos0, 40);
  EXPECT_EQ(c.seqs[2].pos0, 10);
}

TEST(Scheduler, RespectsMaxNumSeqs) {
  Scheduler s(cfg(1000, 100, 4, 2));
  for (int i = 0; i < 3; ++i) s.add(prompt_of(5, i), 2);
  Step a = s.schedule();
  EXPECT_EQ(a.seqs.size(), 2u);
  s.update(a, {1, 2});
  Step b = s.schedule();  // the third waits: two running already
  EXPECT_FALSE(b.prefill);
  EXPECT_EQ(b.seqs.size(), 2u);
}

// Every sequence of a batch generates what it generates alone, across chunked prefill,
// mixed prompt lengths, block boundaries and (small pool) preemption with recompute.
TEST(Scheduler, BatchedOutputsEqualEachSequenceAlone) {
  struct Case {
    int budget, blocks, block_size, max_seqs;
    bool expect_preemption;
  };
  for (const Case& k : {Case{64, 200, 4, 8, false}, Case{16, 200, 16, 32, false}, Case{48, 24, 4, 8, true},
                        Case{1000, 17, 8, 16, true}}) {
    std::vector<BatchRequest> reqs;
    for (int i = 0; i < 10; ++i) reqs.push_back({prompt_of(5 + 9 * i % 37, i), 4 + (i * 5) % 13});
    PagedEchoModel m;
    const auto r = generate_batch(m, cfg(k.budget, k.blocks, k.block_size, k.max_seqs), reqs, kVocab, true);
    ASSERT_EQ(r.outputs.size(), reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i)
      EXPECT_EQ(r.outputs[i], alone(reqs[i].prompt, reqs[i].max_new_tokens))
          << "request " << i << " budget " << k.budget << " blocks " << k.blocks;
    EXPECT_LE(m.max_tokens_seen, k.budget);
    EXPECT_EQ(r.preemptions > 0, k.expect_preemption) << "blocks " << k.blocks << ": " << r.preemptions;
    int64_t generated = 0;
    for (auto& s : r.steps) generated += s.n_samples;
    int64_t wanted = 0;
    for (auto& q : reqs) wanted += q.max_new_tokens;
    EXPECT_EQ(generated, wanted);  // a re-prefill samples the next token, never a repeat
  }
}

TEST(Scheduler, DecodeStepsBatchEveryRunningSequence) {
  std::vector<BatchRequest> reqs;
  for (int i = 0; i < 8; ++i) reqs.push_back({prompt_of(20, i), 16});
  PagedEchoModel m;
  const auto r = generate_batch(m, cfg(2048, 100, 16, 8), reqs);
  // one prefill step of all eight prompts, then 15 decode steps of eight tokens each
  ASSERT_EQ(r.steps.size(), 16u);
  EXPECT_TRUE(r.steps[0].prefill);
  EXPECT_EQ(r.steps[0].n_tokens, 160);
  for (size_t i = 1; i < r.steps.size(); ++i) EXPECT_EQ(r.steps[i].n_samples, 8);
  EXPECT_EQ(r.decode_tokens(), 15 * 8);
}

}  // namespace scheduler_test
