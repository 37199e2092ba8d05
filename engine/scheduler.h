// scheduler.h: continuous batching over a paged KV cache (plain C++, no device code).
//
// The KV cache is a pool of `num_blocks` fixed-size blocks of `block_size` token slots
// (per layer; the model owns the storage). Each sequence holds a block table: logical
// block i of the sequence -> physical block id. Every step the scheduler decides:
//   * prefill first: waiting sequences are admitted in arrival order while the step's
//     token count stays within max_num_batched_tokens, the running set within
//     max_num_seqs, and their blocks fit the pool. A prompt longer than the budget left
//     is split (chunked prefill): its first chunk runs now, the rest in the next steps;
//   * otherwise one decode token for every running sequence. A sequence that needs a
//     new block when the pool is empty preempts the most recently admitted running
//     sequence (its blocks are freed; it goes back to the front of the waiting queue and
//     its prompt + generated tokens are recomputed when it is admitted again).
// add() enforces max_model_len (prompt + new tokens) with a one-line error. The model
// runs a Step (tokens, positions, block tables) and hands back one sampled token per
// sequence whose `sample` flag is set (update()).
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace moebench {

struct SchedulerConfig {
  int max_num_batched_tokens = 2048;  // tokens of one step (prefill chunks + decode tokens)
  int max_model_len = 1024;           // prompt + generated tokens of one sequence
  int max_num_seqs = 32;              // sequences running at once
  int block_size = 16;                // token slots per KV block
  int num_blocks = 0;                 // KV blocks in the pool (per layer)
  void validate() const;              // throws Error naming the bad value
};

// Blocks needed for `tokens` token slots.
inline int kv_blocks_for(int tokens, int block_size) { return (tokens + block_size - 1) / block_size; }

// The free list of physical KV blocks.
class BlockPool {
 public:
  BlockPool(int num_blocks, int block_size);
  int block_size() const { return block_size_; }
  int num_blocks() const { return num_blocks_; }
  int free_blocks() const { return static_cast<int>(free_.size()); }
  // Extra blocks `table` needs to hold `tokens` slots.
  int blocks_needed(const std::vector<int32_t>& table, int tokens) const;
  // Grows `table` to hold `tokens` slots; false (table unchanged) when the pool is short.
  bool grow(std::vector<int32_t>& table, int tokens);
  // Returns every block of `table` to the pool and clears it.
  void release(std::vector<int32_t>& table);

 private:
  int num_blocks_, block_size_;
  std::vector<int32_t> free_;  // LIFO
};

enum class SeqState { waiting, running, finished };

struct Sequence {
  int id = 0;
  std::vector<int32_t> tokens;  // (prompt_len + generated) ids
  int prompt_len = 0;
  int max_new_tokens = 0;
  int computed = 0;                  // tokens whose keys/values are in the cache
  std::vector<int32_t> block_table;  // (blocks) physical block ids
  SeqState state = SeqState::waiting;
  int preemptions = 0;
  int generated() const { return static_cast<int>(tokens.size()) - prompt_len; }
};

// One sequence's part of a step: tokens[pos0 .. pos0+n) of the sequence at those positions.
struct StepSeq {
  int seq = 0;       // Sequence::id
  int pos0 = 0;
  int n = 0;
  bool sample = false;  // the model returns a token for its last position
};

struct Step {
  bool prefill = false;
  std::vector<StepSeq> seqs;  // in order; sampled tokens come back in this order
  int n_tokens = 0;
  int n_samples = 0;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& cfg);
  // Queues a request; returns its sequence id. Throws Error (one line) when the prompt is
  // empty or prompt + max_new_tokens exceeds max_model_len or the whole pool.
  int add(const std::vector<int32_t>& prompt, int max_new_tokens);
  bool done() const { return waiting_.empty() && running_.empty(); }
  // The next step (empty seqs only when done()).
  Step schedule();
  // Applies a step's results: `sampled` holds step.n_samples tokens in step order.
  void update(const Step& step, const std::vector<int32_t>& sampled);

  const Sequence& seq(int id) const { return seqs_.at(static_cast<size_t>(id)); }
  int num_seqs() const { return static_cast<int>(seqs_.size()); }
  const BlockPool& pool() const { return pool_; }
  const SchedulerConfig& config() const { return cfg_; }
  int running() const { return static_cast<int>(running_.size()); }
  int64_t preemptions() const { return preemptions_; }

 private:
  Step schedule_prefill();
  Step schedule_decode();
  void preempt(int id);

  SchedulerConfig cfg_;
  BlockPool pool_;
  std::vector<Sequence> seqs_;
  std::deque<int> waiting_;
  std::vector<int> running_;  // admission order
  int64_t preemptions_ = 0;
};

}  // namespace moebench
