// parallel_model.h: the CUDA model over N GPUs of one host, tensor-parallel
// (settings.tensor_parallel = N): one process, one host thread per GPU, NCCL
// communicators from ncclCommInitAll (engine/cuda/nccl_comm.h), the threads kept for
// the model's life (engine/rank_threads.h). Rank r on GPU r is a
// CudaModel over its shard (engine/shard.h: its q/kv heads, its block of every
// expert's intermediate dimension, everything else replicated), built on its own
// thread; each forward runs every rank's forward on its thread, and the ranks meet
// twice per layer in an all-reduce (sum) of the fp32 partial outputs of o_proj and of
// the MoE block, on each rank's compute stream. The router then sees the same input
// on every rank, so every rank picks the same experts. Rank 0 returns the logits and
// the argmax (lm_head is replicated; the other ranks skip it); rank 0 alone reports to
// the profiler. The partial sums live in NCCL symmetric memory where settings
// tp_allreduce asks for it (NCCL's low-latency kernels for small all-reduces);
// tp_allreduce=lsa runs decode's all-reduces in a kernel of ours over NCCL's device API
// (engine/cuda/tp_lsa_reduce.h), larger ones through NCCL in symmetric memory.
//
// Expert parallel (settings.expert_parallel = N): rank r holds the whole model but the
// experts that the placement (settings.ep_placement, engine/shard.h ep_placement_for)
// gives other ranks; attention, norms, router, embedding and lm_head run replicated on
// every rank over every token. After the router (the same input on every rank, so the
// same choice) each rank computes the (token, expert) pairs whose expert it holds, and
// one all-reduce per layer sums the ranks' partial MoE outputs. Why this rather than
// moving tokens with an all-to-all: at decode batches of 1-32 the tokens are already on
// every rank (replicated attention reads the same attention weights a data-parallel
// split would: each rank reads them whole either way, only the small KV reads and
// compute would split), and one all-reduce of (B, hidden) fp32, at most 512 KiB, costs
// one collective latency per layer where a dispatch and a combine all-to-all cost two,
// with row counts that depend on the routing (a host sync to size them, or padding).
// Host C++.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/batch_model.h"
#include "engine/engine.h"
#include "engine/model.h"

namespace moebench {
class RankThreads;
struct ExpertPlacement;
}

namespace moebench::cuda {

class CudaModel;
class LsaAllReduce;
class NcclComms;

class ParallelModel : public Model, public BatchModel {
 public:
  // GPUs 0 .. N - 1 (N = settings.tensor_parallel or expert_parallel). Throws Error (one line) when the host has
  // fewer GPUs, NCCL cannot be opened, or the model does not split (engine/shard.h).
  explicit ParallelModel(const EngineContext& ctx);
  ~ParallelModel() override;

  const ModelConfig& config() const override { return cfg_; }
  std::string backend() const override { return "cuda"; }
  void forward(const int32_t* tokens, int n, int pos0, float* logits, float* all_logits = nullptr) override;
  int32_t forward_argmax(const int32_t* tokens, int n, int pos0) override;
  void reset() override;
  void set_routing_stream(uint64_t stream) override;
  int max_seq_len() const override;
  int64_t shared_setup_ns() const override { return 0; }
  std::string experts_describe() const override;
  std::vector<GpuRankStats> gpu_ranks() const override;

  void setup_kv_blocks(int block_size, int num_blocks, int max_seqs) override;
  void forward_batch(const std::vector<BatchSeq>& seqs, int32_t* next, float* logits = nullptr) override;
  int max_batch_tokens() const override;

  int world() const { return static_cast<int>(ranks_.size()); }
  CudaModel& rank(int r) { return *ranks_.at(r); }
  const CudaModel& rank(int r) const { return *ranks_.at(r); }
  std::string device_name(int r) const;
  // Per rank: all-reduce GPU time so far (ns) and calls.
  int64_t collective_ns(int r) const;
  int64_t collective_calls(int r) const;

 private:
  void each_rank(const std::function<void(int rank)>& f);
  // The ranks' partial-sum buffers in NCCL symmetric memory (settings tp_allreduce), or
  // empty: each rank's arena.
  std::vector<void*> symmetric_sums(const EngineContext& ctx);
  // settings tp_allreduce=lsa: each rank's all-reduce kernel over NCCL's device API
  // (engine/cuda/tp_lsa_reduce.h) for all-reduces of up to LsaAllReduce::kMaxRows rows.
  void make_lsa(const EngineContext& ctx);
  const char* allreduce_name() const;  // lsa, symmetric or plain
  ModelConfig cfg_;
  profiler::Profiler* prof_ = nullptr;  // rank 0's (the others have none)
  std::unique_ptr<ExpertPlacement> placement_;  // expert parallel (null: tensor parallel)
  bool symmetric_ = false;
  std::unique_ptr<NcclComms> comms_;
  std::vector<std::unique_ptr<LsaAllReduce>> lsa_;  // tp_allreduce=lsa (else empty)
  std::unique_ptr<RankThreads> threads_;  // one per GPU, its device current; every rank's calls run there
  std::vector<std::unique_ptr<CudaModel>> ranks_;
  std::vector<std::string> device_names_;
  std::vector<std::vector<int32_t>> next_scratch_;  // forward_batch: the argmaxes of ranks > 0
};

// The CUDA backend's model for ctx: a CudaModel on one GPU, or a ParallelModel when
// settings.tensor_parallel or expert_parallel > 1.
std::unique_ptr<Model> make_cuda_model(const EngineContext& ctx);

}  // namespace moebench::cuda
