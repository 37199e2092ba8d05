// scheduler.cpp: see scheduler.h.
#include "engine/scheduler.h"

#include <algorithm>

#include "common/error.h"

namespace moebench {

void SchedulerConfig::validate() const {
  if (max_num_batched_tokens <= 0) fail("max_num_batched_tokens {}: expected a positive token count", max_num_batched_tokens);
  if (max_model_len <= 0) fail("max_model_len {}: expected a positive token count", max_model_len);
  if (max_num_seqs <= 0) fail("max_num_seqs {}: expected a positive sequence count", max_num_seqs);
  if (block_size <= 0) fail("kv block_size {}: expected a positive token count", block_size);
  if (num_blocks <= 0) fail("kv num_blocks {}: expected a positive block count", num_blocks);
}

BlockPool::BlockPool(int num_blocks, int block_size) : num_blocks_(num_blocks), block_size_(block_size) {
  if (num_blocks <= 0) fail("kv num_blocks {}: expected a positive block count", num_blocks);
  if (block_size <= 0) fail("kv block_size {}: expected a positive token count", block_size);
  free_.reserve(static_cast<size_t>(num_blocks));
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);  // block 0 is handed out first
}

int BlockPool::blocks_needed(const std::vector<int32_t>& table, int tokens) const {
  return std::max(0, kv_blocks_for(tokens, block_size_) - static_cast<int>(table.size()));
}

bool BlockPool::grow(std::vector<int32_t>& table, int tokens) {
  const int need = blocks_needed(table, tokens);
  if (need > free_blocks()) return false;
  for (int i = 0; i < need; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void BlockPool::release(std::vector<int32_t>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) free_.push_back(*it);
  table.clear();
}

Scheduler::Scheduler(const SchedulerConfig& cfg) : cfg_(cfg), pool_((cfg.validate(), cfg.num_blocks), cfg.block_size) {}

int Scheduler::add(const std::vector<int32_t>& prompt, int max_new_tokens) {
  const int id = static_cast<int>(seqs_.size());
  if (prompt.empty()) fail("request {}: empty prompt (expected at least one token)", id);
  if (max_new_tokens <= 0) fail("request {}: max_new_tokens {} (expected at least 1)", id, max_new_tokens);
  const int64_t total = static_cast<int64_t>(prompt.size()) + max_new_tokens;
  if (total > cfg_.max_model_len)
    fail("request {}: {} prompt tokens + {} new tokens = {} exceeds max_model_len {}", id, prompt.size(),
         max_new_tokens, total, cfg_.max_model_len);
  if (kv_blocks_for(static_cast<int>(total), cfg_.block_size) > cfg_.num_blocks)
    fail("request {}: {} tokens need {} KV blocks of {} but the pool has {}", id, total,
         kv_blocks_for(static_cast<int>(total), cfg_.block_size), cfg_.block_size, cfg_.num_blocks);
  Sequence s;
  s.id = id;
  s.tokens = prompt;
  s.prompt_len = static_cast<int>(prompt.size());
  s.max_new_tokens = max_new_tokens;
  seqs_.push_back(std::move(s));
  waiting_.push_back(id);
  return id;
}

Step Scheduler::schedule() {
  if (done()) return {};
  Step s = schedule_prefill();
  if (!s.seqs.empty()) return s;
  return schedule_decode();
}

Step Scheduler::schedule_prefill() {
  Step step;
  step.prefill = true;
  int budget = cfg_.max_num_batched_tokens;
  int seqs = static_cast<int>(running_.size());
  for (int id : waiting_) {
    if (budget <= 0 || seqs >= cfg_.max_num_seqs) break;
    Sequence& q = seqs_[static_cast<size_t>(id)];
    const int remaining = static_cast<int>(q.tokens.size()) - q.computed;
    const int n = std::min(remaining, budget);
    if (!pool_.grow(q.block_table, q.computed + n)) break;  // FIFO: no overtaking
    step.seqs.push_back(StepSeq{id, q.computed, n, n == remaining});
    step.n_tokens += n;
    step.n_samples += n == remaining ? 1 : 0;
    budget -= n;
    ++seqs;
  }
  return step;
}

void Scheduler::preempt(int id) {
  Sequence& q = seqs_[static_cast<size_t>(id)];
  pool_.release(q.block_table);
  q.computed = 0;
  q.state = SeqState::waiting;
  ++q.preemptions;
  ++preemptions_;
  running_.erase(std::find(running_.begin(), running_.end(), id));
  waiting_.push_front(id);
}

Step Scheduler::schedule_decode() {
  Step step;
  for (size_t i = 0; i < running_.size(); ++i) {
    const int id = running_[i];
    Sequence& q = seqs_[static_cast<size_t>(id)];
    const int len = static_cast<int>(q.tokens.size());
    bool ok = pool_.grow(q.block_table, len);
    while (!ok) {  // pool short: preempt the latest admitted sequence (possibly this one)
      const int victim = running_.back();
      preempt(victim);
      if (victim == id) break;
      ok = pool_.grow(q.block_table, len);
    }
    if (!ok) break;  // this one (the latest) was preempted: nothing after it runs
  }
  for (int id : running_) {
    const Sequence& q = seqs_[static_cast<size_t>(id)];
    step.seqs.push_back(StepSeq{id, q.computed, 1, true});
  }
  step.n_tokens = step.n_samples = static_cast<int>(step.seqs.size());
  return step;
}

void Scheduler::update(const Step& step, const std::vector<int32_t>& sampled) {
  if (static_cast<int>(sampled.size()) != step.n_samples)
    fail("scheduler update: {} sampled tokens for a step that samples {}", sampled.size(), step.n_samples);
  size_t k = 0;
  for (const StepSeq& ss : step.seqs) {
    Sequence& q = seqs_[static_cast<size_t>(ss.seq)];
    q.computed = ss.pos0 + ss.n;
    if (!ss.sample) continue;
    q.tokens.push_back(sampled[k++]);
    if (q.state == SeqState::waiting) {  // prefill complete: admitted
      waiting_.erase(std::find(waiting_.begin(), waiting_.end(), ss.seq));
      running_.push_back(ss.seq);
      q.state = SeqState::running;
    }
    if (q.generated() >= q.max_new_tokens) {
      pool_.release(q.block_table);
      q.state = SeqState::finished;
      running_.erase(std::find(running_.begin(), running_.end(), ss.seq));
    }
  }
}

}  // namespace moebench
