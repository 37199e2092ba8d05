// parallel_plan.h: how a Mixtral model is split over N GPUs (ranks) for decode, as
// plain numbers: tensor-parallel shard shapes, bytes per rank and the collectives
// of a layer; expert-parallel bytes per rank and the all-to-all of one layer of a
// step. No GPU code: the CUDA model and the NCCL communicator follow these plans.
//
// Tensor parallel (TP) over N ranks, every layer:
//   attention  q heads and kv heads in N contiguous blocks (both counts must divide
//              by N, so a rank keeps whole GQA groups: its q heads read only its kv
//              heads); wq, wk, wv: the heads' row blocks; wo: the matching column
//              block. A rank's o_proj output is a partial sum of the (B, hidden)
//              result -> all-reduce #1.
//   experts    every expert's intermediate dimension in N contiguous blocks (sizes
//              differ by at most one when N does not divide it): w1, w3 row blocks,
//              w2 the column block; each rank's gate-weighted sum over a token's
//              top-k is a partial sum of the MoE output -> all-reduce #2.
//   replicated the two norms and the router (gate) of each layer, the embedding, the
//              final norm and lm_head. The router runs on every rank on the same
//              all-reduced input, so every rank picks the same experts. lm_head is
//              replicated, not vocab-split: a split would save (N-1)/N of it per rank
//              (131 MB of Mixtral-8x7B's 262 MB in bf16 at N = 2, 0.3 % of a rank's
//              bytes) but add a gather of the logits and a cross-rank argmax/sample
//              every step.
//   KV cache   each rank caches its own kv heads only.
//
// Expert parallel (EP) over N ranks: a placement (variants/placement.h) puts each
// (layer, expert) on one rank; attention, norms, router, embedding and lm_head are
// on every rank. Each token lives on one rank (its home: the rank that holds its
// sequence and runs its attention). After the router, the home sends the token's
// activation (one row of hidden) once to every other rank that holds one of its
// top-k experts (dispatch); that rank runs those experts, sums their gate-weighted
// outputs and sends one row back (combine, the same counts transposed).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "variants/placement.h"

namespace moebench {

// [begin, end) of a dimension.
struct IndexRange {
  int begin = 0;
  int end = 0;
  int size() const { return end - begin; }
};
// Part `part` of `total` split into `parts` contiguous blocks, the first total % parts
// blocks one longer.
IndexRange split_range(int total, int parts, int part);

// Bytes of one element of each kind of data (bf16 = 2).
struct ParallelDtypes {
  int weight_bytes = 2;      // weights
  int activation_bytes = 2;  // what the collectives carry
  int kv_bytes = 2;          // KV cache
};

struct TpShard {
  int rank = 0;
  IndexRange q_heads, kv_heads;     // head indices
  IndexRange q_rows, kv_rows;       // rows of wq / of wk, wv (heads x head_dim); q_rows are wo's columns
  IndexRange inter;                 // rows of every expert's w1, w3; columns of its w2
  int64_t attention_params = 0;   // per layer: wq, wk, wv, wo blocks
  int64_t expert_params = 0;      // per layer: all experts' blocks
  int64_t replicated_layer_params = 0;  // per layer: norms + router
  int64_t replicated_params = 0;  // once: embedding, final norm, lm_head
  int64_t params = 0;             // everything this rank holds
  int64_t weight_bytes = 0;       // params x weight_bytes
  int64_t kv_bytes_per_token = 0; // KV cache of one position, all layers
};

struct CollectiveSpec {
  std::string name;               // what it reduces, e.g. "attention o_proj"
  int64_t elements = 0;           // B x hidden
  int64_t bytes = 0;              // elements x activation_bytes
  int64_t ring_bytes_per_rank = 0;  // a ring all-reduce sends 2 (N-1)/N x bytes from each rank
};

struct TpPlan {
  ModelConfig config;
  int n_ranks = 0;
  int batch_tokens = 0;
  std::vector<TpShard> shards;             // (n_ranks)
  std::vector<CollectiveSpec> per_layer;   // in order; empty for one rank
  int64_t full_params = 0;                 // the unsharded model (config.total_params())
};

// Throws Error (naming the field, its value and N) when heads or kv heads do not divide
// by N, N exceeds the intermediate size, or N / batch are not positive.
TpPlan plan_tensor_parallel(const ModelConfig& c, int n_ranks, int batch_tokens, const ParallelDtypes& d = {});

// Bound inputs (variants/placement.h) of a TP plan's slowest rank and of an EP layout.
ParallelBoundParams tp_bound_params(const TpPlan& plan, const ParallelDtypes& d, double hbm_gbps,
                                    int64_t collective_ns_per_layer);
ParallelBoundParams ep_bound_params(const ModelConfig& c, const ParallelDtypes& d, double hbm_gbps,
                                    int64_t collective_ns_per_layer);
// Weight bytes each rank holds under an EP placement (replicated parts + its experts).
std::vector<int64_t> ep_rank_weight_bytes(const ModelConfig& c, const ExpertPlacement& p, const ParallelDtypes& d);

// The all-to-all of one layer of one step.
struct AllToAllPlan {
  int n_ranks = 0;
  int64_t row_bytes = 0;            // hidden x activation_bytes
  std::vector<int64_t> send_rows;   // (n_ranks, n_ranks) [src * N + dst]: rows src dispatches to dst;
                                    // the diagonal counts tokens whose experts are (also) at home
  std::vector<int64_t> expert_rows; // (n_ranks) (token, expert) pairs each rank computes
  std::vector<int> experts_run;     // (n_ranks) distinct experts each rank runs
  int64_t rows(int src, int dst) const { return send_rows[static_cast<size_t>(src) * n_ranks + dst]; }
  int64_t send_bytes(int rank) const;  // dispatch rows leaving `rank` x row_bytes (diagonal excluded)
  int64_t recv_bytes(int rank) const;  // dispatch rows arriving at `rank` x row_bytes (diagonal excluded)
  // The combine sends the same rows back: rank sends recv_bytes(rank), receives send_bytes(rank).
};

// ids: (n_tokens, top_k) of `layer`; home: (n_tokens) the rank of each token.
AllToAllPlan plan_all_to_all(const ExpertPlacement& p, int layer, std::span<const int32_t> ids,
                             std::span<const int> home, int top_k, int hidden, const ParallelDtypes& d = {});
// Tokens 0..n-1 on ranks in contiguous blocks (split_range): sequence-parallel attention.
std::vector<int> block_homes(int n_tokens, int n_ranks);

// Row and column blocks of a row-major (rows, cols) matrix, for uploading a shard.
template <class T>
std::vector<T> take_rows(const T* w, int cols, IndexRange rows) {
  return std::vector<T>(w + static_cast<size_t>(rows.begin) * cols, w + static_cast<size_t>(rows.end) * cols);
}
template <class T>
std::vector<T> take_cols(const T* w, int rows, int cols, IndexRange c) {
  std::vector<T> out(static_cast<size_t>(rows) * c.size());
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < c.size(); ++j)
      out[static_cast<size_t>(r) * c.size() + j] = w[static_cast<size_t>(r) * cols + c.begin + j];
  return out;
}

}  // namespace moebench
