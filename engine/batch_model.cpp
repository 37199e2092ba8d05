// batch_model.cpp: see batch_model.h.
#include "engine/batch_model.h"

#include <algorithm>

#include "common/error.h"

namespace moebench {

BatchShape check_batch(const std::vector<BatchSeq>& seqs, const BatchLimits& lim) {
  const int n_seqs = static_cast<int>(seqs.size());
  if (n_seqs == 0) fail("forward_batch: no sequences");
  if (n_seqs > lim.max_seqs)
    fail("forward_batch: {} sequences, the KV pool was set up for at most {}", n_seqs, lim.max_seqs);
  BatchShape b;
  for (const BatchSeq& q : seqs) {
    if (q.n <= 0) fail("forward_batch: a sequence with {} tokens (expected at least 1)", q.n);
    if (q.pos0 < 0 || q.pos0 + q.n > lim.max_len) fail("sequence length {} exceeds max_model_len {}", q.pos0 + q.n, lim.max_len);
    if (q.n_blocks * lim.block_size < q.pos0 + q.n || (lim.table_width > 0 && q.n_blocks > lim.table_width))
      fail("forward_batch: block table of {} blocks of {} cannot hold {} tokens", q.n_blocks, lim.block_size,
           q.pos0 + q.n);
    for (int j = 0; j < q.n_blocks; ++j)
      if (q.block_table[j] < 0 || q.block_table[j] >= lim.num_blocks)
        fail("forward_batch: KV block id {} out of range 0..{}", q.block_table[j], lim.num_blocks - 1);
    for (int j = 0; j < q.n; ++j)
      if (q.tokens[j] < 0 || q.tokens[j] >= lim.vocab) fail("token id {} out of range 0..{}", q.tokens[j], lim.vocab - 1);
    b.m += q.n;
    b.n_out += q.sample ? 1 : 0;
    b.max_blocks = std::max(b.max_blocks, q.n_blocks);
    b.all_decode = b.all_decode && q.n == 1 && q.sample;
  }
  if (b.m > lim.max_tokens) fail("forward_batch: {} tokens exceed max_num_batched_tokens {}", b.m, lim.max_tokens);
  return b;
}

void pack_batch_rows(const std::vector<BatchSeq>& seqs, int block_size, int width, int32_t* tok, int32_t* pos,
                     int32_t* slot, int32_t* seq_row, int32_t* out_row, int32_t* tables) {
  int row = 0, k = 0;
  for (size_t si = 0; si < seqs.size(); ++si) {
    const BatchSeq& q = seqs[si];
    for (int j = 0; j < q.n; ++j, ++row) {
      const int p = q.pos0 + j;
      tok[row] = q.tokens[j];
      pos[row] = p;
      slot[row] = q.block_table[p / block_size] * block_size + p % block_size;
      seq_row[row] = static_cast<int32_t>(si);
    }
    if (q.sample) out_row[k++] = row - 1;
    int32_t* t = tables + si * static_cast<size_t>(width);
    std::copy(q.block_table, q.block_table + q.n_blocks, t);
    std::fill(t + q.n_blocks, t + width, 0);
  }
}

}  // namespace moebench
