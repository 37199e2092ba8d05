// parallel_model.cpp: see parallel_model.h.
#include "engine/cuda/parallel_model.h"

#include <cuda_runtime_api.h>

#include "common/error.h"
#include "common/log.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/nccl_comm.h"
#include "engine/cuda/tp_lsa_reduce.h"
#include "engine/rank_threads.h"
#include "engine/shard.h"
#include "profiler/counters.h"

namespace moebench::cuda {

#if MOEBENCH_HAVE_NCCL

ParallelModel::ParallelModel(const EngineContext& ctx) : cfg_(ctx.weights->config()), prof_(ctx.prof) {
  const int tp_n = ctx.settings.tensor_parallel, ep_n = ctx.settings.expert_parallel;
  check_parallel_knobs(cfg_, tp_n, ep_n);
  const bool ep = ep_n > 1;
  const int n = ep ? ep_n : tp_n;
  const char* knob = ep ? "expert_parallel" : "tensor_parallel";
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  if (count < n) fail("setting {}={}: this host has {} GPU{}", knob, n, count, count == 1 ? "" : "s");
  if (ep) placement_ = std::make_unique<ExpertPlacement>(ep_placement_for(ctx.settings, cfg_, n));
  std::vector<int> devices(n);
  for (int r = 0; r < n; ++r) devices[r] = r;
  comms_ = std::make_unique<NcclComms>(devices);
  NcclComms* comms = comms_.get();
  threads_ = std::make_unique<RankThreads>(n, [comms](int r) { CUDA_CHECK(cudaSetDevice(comms->device(r))); });
  std::vector<void*> sums = symmetric_sums(ctx);
  make_lsa(ctx);
  ranks_.resize(n);
  device_names_.resize(n);
  next_scratch_.resize(n);
  each_rank([&](int r) {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, comms->device(r)));
    device_names_[r] = prop.name;
    EngineContext c = ctx;
    if (r != 0) c.prof = nullptr;  // one profiler, fed by rank 0
    TpRank tp;
    tp.rank = r;
    tp.world = n;
    LsaAllReduce* lsa = lsa_.empty() ? nullptr : lsa_[r].get();
    tp.all_reduce = [comms, r, lsa](float* x, size_t count_f, cudaStream_t s) {
      if (lsa && lsa->takes(x, count_f)) return lsa->run(x, count_f, s);  // tp_allreduce=lsa: decode's
      comms->all_reduce_sum(r, x, x, count_f, DType::f32, s);
    };
    if (!sums.empty()) tp.sum_buffer = static_cast<float*>(sums[r]);
    tp.placement = placement_.get();
    ranks_[r] = std::make_unique<CudaModel>(c, ExpertProviderFactory{}, &tp);
  });
  std::string names;
  for (int r = 0; r < n; ++r) names += fmt::format("{}{}: {}", r ? ", " : "", r, device_names_[r]);
  log::info("{} parallel over {} GPUs (NCCL {}, {} all-reduces): {}", ep ? "expert" : "tensor", n,
            NcclComms::library_version(), allreduce_name(), names);
}

const char* ParallelModel::allreduce_name() const { return !lsa_.empty() ? "lsa" : symmetric_ ? "symmetric" : "plain"; }

void ParallelModel::make_lsa(const EngineContext& ctx) {
  const std::string& mode = ctx.settings.tp_allreduce;
  const int n = comms_->size();
  // Only when asked: lsa measured faster than NCCL's all-reduce on two H200 in every layout
  // and batch (PARALLEL.md), but the merged tree's two-layer Mixtral-shape comparison with
  // one GPU hung once with lsa chosen by auto; until that is understood auto stays on
  // NCCL's all-reduce.
  if (mode != "lsa") return;
  const int rows = std::min(LsaAllReduce::kMaxRows, CudaModel::pool_tokens_for(ctx));
  const size_t cap = static_cast<size_t>(rows) * static_cast<size_t>(cfg_.hidden_size);
  std::string why;
  std::vector<void*> windows;
  const std::vector<void*> bufs = comms_->alloc_symmetric(LsaAllReduce::buffer_bytes(cap, n), &why, &windows);
  if (bufs.empty()) fail("setting tp_allreduce=lsa: {}", why);
  lsa_.resize(n);
  NcclComms* comms = comms_.get();
  each_rank([&](int r) { lsa_[r] = std::make_unique<LsaAllReduce>(*comms, r, bufs[r], windows[r], cap); });
}

std::vector<void*> ParallelModel::symmetric_sums(const EngineContext& ctx) {
  const std::string& mode = ctx.settings.tp_allreduce;
  if (mode == "plain" || (mode == "auto" && comms_->size() != 2)) return {};
  std::string why;
  std::vector<void*> sums = comms_->alloc_symmetric(CudaModel::tp_sum_floats(ctx) * sizeof(float), &why);
  if (sums.empty()) {
    if (mode != "auto") fail("setting tp_allreduce={}: {}", mode, why);
    log::info("tp_allreduce=auto: the all-reduces use plain device memory ({})", why);
  }
  symmetric_ = !sums.empty();
  return sums;
}

ParallelModel::~ParallelModel() {
  // Each rank's model frees its memory on its own GPU (then the communicators free the
  // symmetric buffers the models used).
  for (size_t r = 0; r < ranks_.size(); ++r) {
    cudaSetDevice(static_cast<int>(r));
    ranks_[r].reset();
  }
  // The device communicators before the communicators they were made from, every rank's
  // at once on its own thread: ncclDevCommDestroy deregisters a window, a collective.
  if (!lsa_.empty() && threads_) {
    try {
      threads_->run([&](int r) { lsa_[r].reset(); });
    } catch (...) {  // a destructor does not throw; what is left goes with the communicators
    }
  }
  threads_.reset();
  comms_.reset();
}

void ParallelModel::each_rank(const std::function<void(int rank)>& f) { threads_->run(f); }

void ParallelModel::forward(const int32_t* tokens, int n, int pos0, float* logits, float* all_logits) {
  each_rank([&](int r) { ranks_[r]->forward(tokens, n, pos0, r == 0 ? logits : nullptr, r == 0 ? all_logits : nullptr); });
}

int32_t ParallelModel::forward_argmax(const int32_t* tokens, int n, int pos0) {
  int32_t next = 0;
  // Single-sequence decode steps run as CUDA graphs on every rank or on none: rank 0 runs
  // eagerly when its profiler traces (cuda_model_graph.cpp), so then the others do too.
  const bool graphs = !(prof_ && prof_->trace.enabled());
  each_rank([&](int r) {
    if (r == 0)
      next = ranks_[0]->forward_argmax(tokens, n, pos0);
    else
      ranks_[r]->forward_follow(tokens, n, pos0, graphs);
  });
  return next;
}

void ParallelModel::reset() {
  for (auto& m : ranks_) m->reset();
}
void ParallelModel::set_routing_stream(uint64_t stream) {
  for (auto& m : ranks_) m->set_routing_stream(stream);
}
int ParallelModel::max_seq_len() const { return ranks_[0]->max_seq_len(); }
std::string ParallelModel::experts_describe() const {
  if (placement_)
    return fmt::format("{}, expert parallel x{} ({} placement, {} all-reduce)", ranks_[0]->experts_describe(), world(),
                       placement_->policy, allreduce_name());
  return fmt::format("{}, tensor parallel x{} ({} all-reduce)", ranks_[0]->experts_describe(), world(), allreduce_name());
}

void ParallelModel::setup_kv_blocks(int block_size, int num_blocks, int max_seqs) {
  each_rank([&](int r) { ranks_[r]->setup_kv_blocks(block_size, num_blocks, max_seqs); });
}

void ParallelModel::forward_batch(const std::vector<BatchSeq>& seqs, int32_t* next, float* logits) {
  // Every rank replays its decode graph or none does: rank 0 runs eagerly when it returns
  // logits or its profiler traces (cuda_model_batch.cpp), so then the others do too.
  const bool eager = logits || (prof_ && prof_->trace.enabled());
  for (int r = 1; r < world(); ++r) {
    next_scratch_[r].resize(seqs.size());
    ranks_[r]->set_use_graphs(!eager);
  }
  each_rank([&](int r) {
    if (r == 0)
      ranks_[0]->forward_batch(seqs, next, logits);
    else
      ranks_[r]->forward_batch(seqs, next_scratch_[r].data(), nullptr);
  });
}

std::vector<Model::GpuRankStats> ParallelModel::gpu_ranks() const {
  std::vector<CudaModel::EpCounters> ep(ranks_.size());
  threads_->run([&](int r) { ep[r] = ranks_[r]->ep_counters(); });  // each on its GPU's thread
  std::vector<GpuRankStats> out;
  for (int r = 0; r < world(); ++r) {
    const CudaModel& m = *ranks_[r];
    GpuRankStats g;
    g.device = fmt::format("cuda:{} {}", comms_->device(r), device_names_[r]);
    g.arena_used_bytes = static_cast<int64_t>(m.arena_stats().used_bytes);
    g.arena_peak_bytes = static_cast<int64_t>(m.arena_stats().peak_bytes);
    g.decode_forwards = m.decode_forwards();
    g.decode_collective_ns = m.decode_collective_ns();
    g.decode_collective_calls = m.decode_collective_calls();
    g.experts_held = ep[r].experts_held;
    g.ep_decode_steps = ep[r].decode_steps;
    g.decode_experts_run = ep[r].experts_run;
    g.decode_expert_pairs = ep[r].pairs;
    out.push_back(g);
  }
  return out;
}

int ParallelModel::max_batch_tokens() const { return ranks_[0]->max_batch_tokens(); }
std::string ParallelModel::device_name(int r) const { return device_names_.at(r); }
int64_t ParallelModel::collective_ns(int r) const { return ranks_.at(r)->collective_ns(); }
int64_t ParallelModel::collective_calls(int r) const { return ranks_.at(r)->collective_calls(); }

#endif

std::unique_ptr<Model> make_cuda_model(const EngineContext& ctx) {
  if (ctx.settings.tensor_parallel <= 1 && ctx.settings.expert_parallel <= 1) return std::make_unique<CudaModel>(ctx);
#if MOEBENCH_HAVE_NCCL
  return std::make_unique<ParallelModel>(ctx);
#else
  const bool ep = ctx.settings.expert_parallel > 1;
  fail("setting {}={}: this build has no NCCL (nccl.h was not found next to the CUDA toolkit)",
       ep ? "expert_parallel" : "tensor_parallel", ep ? ctx.settings.expert_parallel : ctx.settings.tensor_parallel);
#endif
}

}  // namespace moebench::cuda
