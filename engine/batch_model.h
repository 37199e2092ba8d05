// batch_model.h: what a backend offers the scheduler (engine/scheduler.h) — a forward
// over several sequences at once whose keys/values live in a paged KV cache (fixed-size
// blocks, one block table per sequence). Both backends implement it: the CPU model
// (engine/cpu_model.cpp, fp32 pool) and the CUDA model (engine/cuda/cuda_model_batch.cpp,
// bf16 pool).
#pragma once
#include <cstdint>
#include <vector>

namespace moebench {

// One sequence's part of a batched forward: n tokens at positions pos0 .. pos0+n-1,
// whose keys/values go to (and whose attention reads) the blocks of block_table.
struct BatchSeq {
  const int32_t* tokens = nullptr;       // (n) host
  int n = 0;
  int pos0 = 0;
  const int32_t* block_table = nullptr;  // (n_blocks) host, physical block ids
  int n_blocks = 0;                      // must cover pos0 + n slots
  bool sample = false;                   // return the argmax (and logits) of its last token
};

// What a forward_batch's sequences add up to, once checked (check_batch).
struct BatchShape {
  int m = 0;               // tokens (rows) of the step
  int n_out = 0;           // sampled sequences
  int max_blocks = 0;      // the longest block table
  bool all_decode = true;  // every sequence one sampled token
};
// The limits a backend's pool and workspace set.
struct BatchLimits {
  int max_seqs = 0, block_size = 0, num_blocks = 0;
  int table_width = 0;  // most blocks a table may have (0: no limit beyond num_blocks)
  int max_len = 0, vocab = 0, max_tokens = 0;
};
// Checks the sequences of a forward_batch against the limits; throws Error with one line
// naming the first bad value (the same lines on both backends).
BatchShape check_batch(const std::vector<BatchSeq>& seqs, const BatchLimits& lim);
// The step's rows, in sequence order (m of them): token, position, pool slot (block_table[p /
// block_size] * block_size + p % block_size) and sequence index; out_row (n_out) the last
// row of each sampled sequence; tables (seqs x width) each block table, zero past its end.
void pack_batch_rows(const std::vector<BatchSeq>& seqs, int block_size, int width, int32_t* tok, int32_t* pos,
                     int32_t* slot, int32_t* seq_row, int32_t* out_row, int32_t* tables);

class BatchModel {
 public:
  virtual ~BatchModel() = default;
  // Allocates the paged KV pool: num_blocks blocks of block_size slots per layer, block
  // tables of up to max_seqs sequences. Throws Error (naming the bytes) when it does not fit.
  virtual void setup_kv_blocks(int block_size, int num_blocks, int max_seqs) = 0;
  // Runs every sequence's tokens through the model (keys/values stored in the pool) and
  // writes, for each sequence with `sample`, in order, the argmax of its last token's
  // logits to next[i] (host) and, when logits is non-null, the logits to logits[i * vocab].
  // A step may sample nothing (every sequence in it a chunk of a prompt longer than the
  // step's token budget): its keys/values are stored and nothing is returned.
  virtual void forward_batch(const std::vector<BatchSeq>& seqs, int32_t* next, float* logits = nullptr) = 0;
  // Tokens one forward_batch may hold (the workspace's capacity).
  virtual int max_batch_tokens() const = 0;
};

}  // namespace moebench
