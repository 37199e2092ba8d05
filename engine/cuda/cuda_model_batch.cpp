// cuda_model_batch.cpp: CudaModel's batched forward (BatchModel, engine/batch_model.h).
//
// Several sequences in one forward: their tokens are stacked into m rows (m <= the
// workspace's pool, i.e. max_num_batched_tokens) and go through the same ops as
// Model::forward, except that keys/values live in a paged pool — per layer
// (num_blocks, block_size, n_kv, head_dim) bf16 — addressed through each sequence's
// block table: rope_kv_store_paged writes the new rows, paged_attention reads them
// (decode_attention when every row is a decode row: one token per sequence).
// Only the last token of each sampled sequence goes through the final norm and lm_head;
// the argmax is taken on the device. Every per-step input (tokens, positions, KV slots,
// block tables) is packed into one pinned buffer and copied in one transfer, so a step's
// launches depend only on m: decode steps without a host sync (resident experts, fused
// decode dispatch, pooled buffers, no observer, no tracing profiler; a routing source's
// choices staged before the launch) are captured once per m in a CUDA graph and replayed.
#include <map>
#include <utility>
#include <set>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/decode_attention.h"
#include "engine/cuda/graph_capture.h"
#include "engine/cuda/ops.cuh"
#include "common/error.h"
#include "common/units.h"
#include "profiler/counters.h"

namespace moebench::cuda {

struct CudaModel::Paged {
  DeviceArena& arena;
  int block_size = 0, num_blocks = 0, max_seqs = 0, width = 0, cap = 0;
  std::vector<bf16*> k, v;      // (n_layers) each (num_blocks, block_size, n_kv, head_dim)
  int32_t* io_d = nullptr;      // (5 * cap + max_seqs * width) packed step inputs, see layout()
  int32_t* io_h = nullptr;      // pinned mirror
  int32_t* next_d = nullptr;    // (cap) argmax of each sampled sequence
  int32_t* next_h = nullptr;    // (cap) pinned
  // Decode step of m sequences; tensor parallel: with or without the all-reduces' timing events.
  std::map<std::pair<int, bool>, cudaGraphExec_t> graphs;
  std::map<std::pair<int, bool>, size_t> graph_events;  // tensor parallel: the timing events each graph records
  std::set<int> seen;                     // m run once eagerly (warm, tables uploaded)
  int64_t replays = 0;

  explicit Paged(DeviceArena& a) : arena(a) {}
  ~Paged() {
    for (auto& [m, g] : graphs) cudaGraphExecDestroy(g);
    for (auto* p : k) arena.free(p);
    for (auto* p : v) arena.free(p);
    if (io_d) arena.free(io_d);
    if (next_d) arena.free(next_d);
    if (io_h) cudaFreeHost(io_h);
    if (next_h) cudaFreeHost(next_h);
  }
  // Packed layout of a step of m tokens and s sequences: tokens (m), pos (m), slot (m),
  // seq_row (m), out_row (s), tables (s, width).
  static int64_t ints(int m, int s, int width) { return 4LL * m + s + static_cast<int64_t>(s) * width; }
};

void CudaModel::PagedDeleter::operator()(Paged* p) const { delete p; }

int64_t CudaModel::graph_replays() const { return paged_ ? paged_->replays : 0; }

void CudaModel::setup_kv_blocks(int block_size, int num_blocks, int max_seqs) {
  if (block_size <= 0 || num_blocks <= 0 || max_seqs <= 0)
    fail("setup_kv_blocks: block_size {}, num_blocks {}, max_seqs {} (expected all positive)", block_size, num_blocks,
         max_seqs);
  const int width = static_cast<int>((max_len_ + block_size - 1) / block_size);
  if (paged_ && paged_->block_size == block_size && paged_->num_blocks >= num_blocks && paged_->max_seqs >= max_seqs)
    return;  // the pool already there serves (and its graphs stay valid)
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  paged_.reset();
  const ModelConfig& c = cfg_;
  const uint64_t per_layer = static_cast<uint64_t>(num_blocks) * block_size * c.kv_dim();
  const uint64_t need = 2ull * c.num_hidden_layers * per_layer * sizeof(bf16);
  if (!arena_->fits(need))
    fail("paged KV cache of {} blocks x {} tokens x {} layers needs {} but the device arena has {} free: lower the "
         "batch, max_model_len or raise --gpu-mem-budget",
         num_blocks, block_size, c.num_hidden_layers, format_bytes(need),
         format_bytes(arena_->capacity() - arena_->stats().used_bytes));
  std::unique_ptr<Paged, PagedDeleter> p(new Paged(*arena_));
  p->block_size = block_size;
  p->num_blocks = num_blocks;
  p->max_seqs = max_seqs;
  p->width = width;
  p->cap = pool_tokens_;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    p->k.push_back(arena_->alloc_n<bf16>(per_layer, fmt::format("layer {} paged k cache", l)));
    p->v.push_back(arena_->alloc_n<bf16>(per_layer, fmt::format("layer {} paged v cache", l)));
  }
  const int64_t io = Paged::ints(p->cap, std::min(max_seqs, p->cap), width);
  p->io_d = arena_->alloc_n<int32_t>(static_cast<uint64_t>(io), "batch step inputs");
  p->next_d = arena_->alloc_n<int32_t>(static_cast<uint64_t>(p->cap), "batch sampled ids");
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&p->io_h), static_cast<size_t>(io) * 4, cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&p->next_h), static_cast<size_t>(p->cap) * 4, cudaHostAllocDefault));
  paged_ = std::move(p);
}

void CudaModel::batch_body(ForwardBuffers& b, int m, int n_seqs, int n_out, float* logits) {
  const ModelConfig& c = cfg_;
  Paged& P = *paged_;
  const int H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim(), V = c.vocab_size;
  const int nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  const float eps = c.rms_norm_eps;
  cublasHandle_t blas = blas_->get();
  cudaStream_t s = stream_;
  const int32_t* tok = P.io_d;
  const int32_t* pos = tok + m;
  const int32_t* slot = pos + m;
  const int32_t* seq_row = slot + m;
  const int32_t* out_row = seq_row + m;
  const int32_t* tables = out_row + n_seqs;
  CUDA_CHECK(cudaMemcpyAsync(P.io_d, P.io_h, static_cast<size_t>(Paged::ints(m, n_seqs, P.width)) * 4,
                             cudaMemcpyHostToDevice, s));
  embedding(embed_, tok, b.x, m, H, s);
  const int64_t step = step_++;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const Layer& L = layers_[l];
    // Qwen3-MoE, one decode row: the q/k norm, RoPE and KV store in the q/k/v launch.
    const bool qkv_roped = m == 1 && n_seqs == 1 && family_qkv_norm_rope(L, b, pos, slot, P.k[l], P.v[l]);
    if (!qkv_roped) {
      rmsnorm(b.x, L.attn_norm, b.h, m, H, eps, s);
      float* y[3] = {b.q, b.k, b.v};
      const int out[3] = {Q, KV, KV};
      linear_multi_weight(L.lw, b.h, y, out, 3, m, H, attn_scratch_, blas, s);
    }
    const bool folded = !qkv_roped && m == n_seqs &&
                        family_decode_attention(L, b, m, tables, P.width, seq_row, pos, P.k[l], P.v[l], P.block_size,
                                                b.attn_ws);  // Qwen3-MoE: norm + RoPE inside
    if (!folded && !qkv_roped) family_attention_rope(L, b, m, pos, slot, P.k[l], P.v[l]);
    if (folded) {
      // the attention ran with the q/k norm, RoPE and KV store in its launch
    } else if (m == n_seqs && decode_attention_supported(nh, nkv, hd, P.k[l], P.v[l]))  // decode rows only
      decode_attention(b.q, P.k[l], P.v[l], tables, P.width, seq_row, pos, b.att, m, nh, nkv, hd, P.block_size,
                       b.attn_ws, s);
    else
      paged_attention(b.q, P.k[l], P.v[l], tables, P.width, seq_row, pos, b.att, m, nh, nkv, hd, P.block_size,
                      b.attn_ws, s);
    o_proj(L, b, m);  // x += att @ wo^T
    moe_block(step, l, 0, b, m);  // x += moe(rmsnorm(x))
  }
  // The sampled rows only: gather -> final norm -> lm_head -> argmax. A step may sample
  // nothing (every sequence in it a chunk of a prompt longer than the step's token budget).
  if (n_out == 0) return;
  gather_rows(b.x, out_row, b.moe_out, n_out, H, s);
  rmsnorm(b.moe_out, norm_, b.h, n_out, H, eps, s);
  const int chunk = std::min(kLogitRows, m);  // rows b.logits holds
  for (int r0 = 0; r0 < n_out; r0 += chunk) {
    const int rows = std::min(chunk, n_out - r0);
    linear(b.h + static_cast<int64_t>(r0) * H, lm_head_, b.logits, rows, H, V, false, blas, s);
    argmax(b.logits, P.next_d + r0, rows, V, s);
    if (logits)
      CUDA_CHECK(cudaMemcpyAsync(logits + static_cast<size_t>(r0) * V, b.logits, static_cast<size_t>(rows) * V * 4,
                                 cudaMemcpyDeviceToHost, s));
  }
  CUDA_CHECK(cudaMemcpyAsync(P.next_h, P.next_d, static_cast<size_t>(n_out) * 4, cudaMemcpyDeviceToHost, s));
}

void CudaModel::forward_batch(const std::vector<BatchSeq>& seqs, int32_t* next, float* logits) {
  if (!paged_) fail("forward_batch: no paged KV pool (call setup_kv_blocks first)");
  Paged& P = *paged_;
  const int n_seqs = static_cast<int>(seqs.size());
  const BatchShape shape = check_batch(seqs, {.max_seqs = P.max_seqs, .block_size = P.block_size,
                                              .num_blocks = P.num_blocks, .table_width = P.width, .max_len = max_len_,
                                              .vocab = cfg_.vocab_size, .max_tokens = pool_tokens_});
  const int m = shape.m, n_out = shape.n_out;
  const bool all_decode = shape.all_decode;

  // Pack the step's inputs (layout: Paged::ints).
  int32_t* tok = P.io_h;
  int32_t* pos = tok + m;
  int32_t* slot = pos + m;
  int32_t* seq_row = slot + m;
  int32_t* out_row = seq_row + m;
  int32_t* tables = out_row + n_seqs;
  pack_batch_rows(seqs, P.block_size, P.width, tok, pos, slot, seq_row, out_row, tables);

  // The key split's partials (a function of m and the pool's shape only; the pooled
  // workspace was sized for them at construction, so graphs keep valid pointers).
  const size_t attn_floats = paged_attention_workspace_floats(m, cfg_.num_attention_heads, cfg_.num_key_value_heads,
                                                              cfg_.head_dim, P.width * P.block_size);
  moe_->begin_step(static_cast<int>(step_), m);  // batch_body takes step_ (and counts it); a replay counts it below
  ForwardBuffers& b = ws_->begin(m, attn_floats);
  bind_residual(b);  // multi-GPU, tp_reduce=residual: the residual is what the ranks all-reduce
  // A profiler that traces needs the host ranges of every step; one that does not (the
  // runner's, bench's) records nothing inside a resident decode step, so graphs are fine.
  const bool tracing = prof_ && prof_->trace.enabled();
  const bool graphable = use_graphs_ && all_decode && !logits && !tracing && !observed_ && !step_count_on_ &&
                         ws_->pooled() && settings_.expert_tier == "resident" && !moe_->syncs(m);
  // Tensor parallel: a replay in kTpTimedEvery times its all-reduces (cuda_model.h).
  tp_timing_ = !tp_ || !graphable || P.replays % kTpTimedEvery == 0;
  ep_count_ = all_decode;  // expert parallel: decode steps (and their graphs) feed the per-GPU expert counters
  const std::pair<int, bool> key(m, tp_timing_);
  try {
    if (graphable && P.graphs.count(key)) {
      CUDA_CHECK(cudaGraphLaunch(P.graphs[key], stream_));
      ++P.replays;
      ++step_;
      tp_events_used_ = P.graph_events[key];  // recorded again by the replay (none when untimed)
    } else if (graphable && P.seen.count(m)) {
      cudaGraphExec_t exec = capture_graph(stream_, [&] { batch_body(b, m, n_seqs, n_out, nullptr); });
      P.graphs[key] = exec;
      P.graph_events[key] = tp_events_used_;
      CUDA_CHECK(cudaGraphLaunch(exec, stream_));
      ++P.replays;
    } else {
      batch_body(b, m, n_seqs, n_out, logits);
      if (graphable) P.seen.insert(m);
    }
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    read_collective_times(all_decode);
    if (all_decode) note_decode_step(m);
    if (all_decode && step_count_on_ && m > 1) ++step_count_steps_;
  } catch (...) {
    tp_timing_ = true;
    ws_->end();
    throw;
  }
  tp_timing_ = true;  // every other forward is timed
  ws_->end();
  note_arena();
  for (int i = 0; i < n_out; ++i)
    if (P.next_h[i] < 0)  // the argmax kernel's mark for a NaN or an infinity among the logits
      throw NonFiniteLogits(fmt::format("the logits of sampled row {} hold a NaN or an infinity: the model gave "
                                        "non-finite logits (NaN or Inf in the weights, or an overflow)",
                                        i));
  std::copy(P.next_h, P.next_h + n_out, next);
}

}  // namespace moebench::cuda
