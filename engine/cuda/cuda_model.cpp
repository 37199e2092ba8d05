// cuda_model.cpp: see cuda_model.h.
#include "engine/cuda/cuda_model.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "engine/cuda/check.cuh"
#include "engine/cuda/decode_attention.h"
#include "engine/cuda/gemv_staged.h"
#include "engine/cuda/l2_prefetch.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/moe_small_block.h"
#include "engine/cuda/offload_provider.h"
#include "engine/cuda/parallel_model.h"
#include "engine/cuda/quant_dequant.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/resident_provider.h"
#include "engine/cuda/weight_upload.h"
#include "engine/device_plan.h"
#include "engine/shard.h"
#include "common/error.h"
#include "common/log.h"
#include "engine/progress.h"
#include "common/units.h"
#include "profiler/counters.h"

namespace moebench {

std::unique_ptr<Model> create_cuda_model(const EngineContext& ctx) { return cuda::make_cuda_model(ctx); }

namespace cuda {

using profiler::RangeKind;
using profiler::ScopedRange;

namespace {
bool is_expert(const std::string& name) { return name.find(".block_sparse_moe.experts.") != std::string::npos; }

// One host store per process: the models of a run (one per stage or setting) share it,
// so the experts are pinned once. Tensor parallel: one per rank (each its slices), kept
// side by side. Replaced when another model or tier asks.
std::shared_ptr<const ExpertHostStore> shared_host_store(HostTier tier, const WeightSource& src, QuantFormat format,
                                                         int tp_rank = 0, int tp_world = 1) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const ExpertHostStore>> stores;  // by shard, of one model and tier
  static std::string model_key;
  const std::string k = fmt::format("{}|{}|layers={}|{}|tp={}", host_tier_name(tier), src.describe(),
                                    src.config().num_hidden_layers, quant_format_name(format), tp_world);
  const std::string shard = std::to_string(tp_rank);
  std::lock_guard<std::mutex> lock(mu);
  if (model_key != k) {
    stores.clear();  // free the old ones first: two 84 GiB stores do not fit
    model_key = k;
  }
  if (auto it = stores.find(shard); it != stores.end()) return it->second;
  HostStoreOptions opt;
  opt.tp_rank = tp_rank;
  opt.tp_world = tp_world;
  auto store = std::shared_ptr<const ExpertHostStore>(ExpertHostStore::make(tier, src, pinned_host_allocator(), opt, format));
  log::info("expert host store: {}", store->describe());
  stores[shard] = store;
  return store;
}
}  // namespace

CudaModel::CudaModel(const EngineContext& ctx, ExpertProviderFactory provider_factory, const TpRank* tp)
    : cfg_(rank_config(ctx.weights->config(), tp)),
      settings_(ctx.settings),
      prof_(ctx.prof),
      full_cfg_(ctx.weights->config()) {
  const int64_t t0 = profiler::now_ns();
  const WeightSource& src = *ctx.weights;
  expert_fmt_ = resolve_expert_format(settings_.expert_dtype, src);
  attn_fmt_ = resolve_weight_format(settings_.weight_dtype, src);
  if (tp && !tp->placement && attn_fmt_ != QuantFormat::bf16)
    fail("setting tensor_parallel={}: runs bf16 attention projections (got weight_dtype={})", tp->world,
         settings_.weight_dtype);
  if (tp && tp->placement) {
    if (settings_.expert_tier != "resident" || expert_fmt_ != QuantFormat::bf16 || provider_factory)
      fail("setting expert_parallel={}: runs resident bf16 experts (got expert_tier={} expert_dtype={})", tp->world,
           settings_.expert_tier, settings_.expert_dtype);
    if (settings_.dispatch != "fused" || settings_.combine != "fused")
      fail("setting expert_parallel={}: runs the fused dispatch and combine (got dispatch={} combine={})", tp->world,
           settings_.dispatch, settings_.combine);
    tp_ = *tp;
  } else if (tp) {
    if (settings_.expert_tier == "disk" || expert_fmt_ != QuantFormat::bf16 || provider_factory)
      fail("setting tensor_parallel={}: runs bf16 experts, resident or pinned (got expert_tier={} expert_dtype={})",
           tp->world, settings_.expert_tier, settings_.expert_dtype);
    tp_ = *tp;
  }
  tp_residual_ = tp && settings_.tp_reduce == "residual";
  max_len_ = std::min(settings_.max_model_len, cfg_.max_position_embeddings);
  if (max_len_ <= 0) fail("max_model_len {} must be positive", settings_.max_model_len);
  routing_ = RoutingDriver::for_model(settings_, cfg_);
  pool_tokens_ = pool_tokens_for(ctx);
  chunk_tokens_ = pool_tokens_;
  const bool resident = settings_.expert_tier == "resident";
  if (!resident && !provider_factory) open_host_store(src);
  plan_memory(resident, !provider_factory);
  arena_ = std::make_unique<DeviceArena>(plan_.arena_bytes, "device arena");
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  blas_ = std::make_unique<Blas>(arena_.get());
  upload_weights(src, resident);
  make_provider(src, resident, provider_factory);
  ws_ = std::make_unique<Workspace>(*arena_, wd_, settings_.buffers == "pooled", pool_tokens_, attn_floats_);
  moe_ = std::make_unique<MoeLayer>(md_, parse_dispatch(settings_.dispatch), parse_combine(settings_.combine), *provider_,
                                    *arena_, blas_->get(), stream_, trace(), pool_tokens_, routing_.get());
  moe_->set_fused_decode_max_tokens(settings_.fused_decode_max_tokens);
  if (tp_) setup_pair_filter();
  decode_graphs_on_ = step_graph_from_env();
  make_host_experts();
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_io_), (2 * static_cast<size_t>(pool_tokens_) + 1) * sizeof(int32_t),
                           cudaHostAllocDefault));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  // The shared host store's fill is not this model's load (it is reported on its own).
  load_ns_ = profiler::now_ns() - t0 - store_fill_ns_;
  if (prof_ && store_) prof_->memory.note_host_pinned(static_cast<int64_t>(store_->host_bytes()));
  if (prof_) prof_->model_load_ns = load_ns_;
  note_arena();
  log::info("cuda model {}: {} weights, arena {} of {} used, experts: {} ({}), dispatch={} combine={} buffers={} routing={}",
            cfg_.name, format_bytes(weight_bytes_), format_bytes(arena_->stats().used_bytes),
            format_bytes(arena_->capacity()), provider_->describe(), quant_format_name(expert_fmt_), settings_.dispatch,
            settings_.combine, settings_.buffers, routing_name());
}

int CudaModel::pool_tokens_for(const EngineContext& ctx) {
  const int max_len = std::min(ctx.settings.max_model_len, ctx.weights->config().max_position_embeddings);
  return std::max(1, std::min(ctx.settings.max_num_batched_tokens, max_len));
}

size_t CudaModel::tp_sum_floats(const EngineContext& ctx) {
  return static_cast<size_t>(pool_tokens_for(ctx)) * ctx.weights->config().hidden_size;
}

void CudaModel::open_host_store(const WeightSource& src) {
  const int64_t f0 = profiler::now_ns();
  store_ = shared_host_store(parse_host_tier(settings_.expert_tier), src, expert_fmt_, tp_ ? tp_->rank : 0,
                             tp_ ? tp_->world : 1);
  store_fill_ns_ = profiler::now_ns() - f0;  // near zero when another model of the process filled it already
}

void CudaModel::plan_memory(bool resident, bool own_slots) {
  const ModelConfig& c = cfg_;
  DevicePlanInput in;
  in.config = c;
  in.format = expert_fmt_;
  in.resident = resident;
  in.cache_slots = settings_.cache_slots;
  if (expert_parallel()) {
    in.resident_experts = 0;
    for (int l = 0; l < c.num_hidden_layers; ++l)
      for (int e = 0; e < c.num_local_experts; ++e) in.resident_experts += holds_expert(l, e) ? 1 : 0;
  }
  in.own_slots = own_slots;
  for (auto& s : model_tensor_specs(c))
    if (!is_expert(s.name)) in.fixed.dense_weights += dense_bytes(s);
  if (attn_fmt_ != QuantFormat::bf16)  // the prefill scratch of a quantised projection
    in.fixed.dense_weights += round256(static_cast<uint64_t>(c.q_dim()) * c.hidden_size * 2);
  in.fixed.kv_cache = 2ull * c.num_hidden_layers * round256(static_cast<uint64_t>(max_len_) * c.kv_dim() * 2);
  attn_floats_ = attention_workspace_floats(pool_tokens_, 0, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
  // Short prefill chunks late in a long prompt (their key split is sized like decode's was).
  for (int p = 0; p < max_len_; ++p)
    attn_floats_ = std::max(attn_floats_, attention_workspace_floats(1, p, c.num_attention_heads, c.num_key_value_heads, c.head_dim));
  // Decode (m = 1) of forward: paged_attention over the contiguous cache (max_keys = max_len).
  attn_floats_ = std::max(attn_floats_, paged_attention_workspace_floats(1, c.num_attention_heads, c.num_key_value_heads,
                                                                         c.head_dim, max_len_));
  // forward_batch: the key split of m tokens over a pool of any block size (its table
  // covers at most max_len + block_size keys; the split count is capped, so an unbounded
  // key count gives the largest workspace). Sized once here so the pooled buffers, and
  // the decode graphs' pointers into them, never move.
  for (int m = 1; m <= pool_tokens_ && paged_attention_splits(m, c.num_key_value_heads, INT32_MAX / 2) > 1; ++m)
    attn_floats_ = std::max(attn_floats_, paged_attention_workspace_floats(m, c.num_attention_heads, c.num_key_value_heads,
                                                                           c.head_dim, INT32_MAX / 2));
  wd_ = WorkspaceDims{c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.num_local_experts,
                      c.num_experts_per_tok, c.vocab_size};
  md_ = MoeDims{c.hidden_size, c.intermediate_size, c.num_local_experts, c.num_experts_per_tok, c.num_hidden_layers,
                expert_fmt_, store_ ? store_->layout() : expert_layout(c, expert_fmt_), c.norm_topk_prob};
  // alloc mode needs the same workspace bytes at peak, once per forward; then the cuBLAS
  // workspace, the MoE tables (and dequantising scratch), the contiguous block table.
  ws_b_ = Workspace::bytes_for(wd_, pool_tokens_, attn_floats_);
  table_b_ = MoeLayer::device_bytes(md_, pool_tokens_);
  in.fixed.workspace = ws_b_ + Blas::kWorkspaceBytes + table_b_ + round256(sizeof(int32_t)) +
                       family_workspace_bytes(c, pool_tokens_);
  if (tp_) in.fixed.workspace += round256(static_cast<uint64_t>(pool_tokens_) * c.hidden_size * sizeof(float));
  if (expert_parallel())  // which experts are here, and the decode counters (cuda_model_tp.cpp)
    in.fixed.workspace += round256(static_cast<uint64_t>(c.num_hidden_layers) * c.num_local_experts) + round256(16);
  else if (tp_)  // tensor parallel: one layer's table (every expert held) and the counters
    in.fixed.workspace += round256(static_cast<uint64_t>(c.num_local_experts)) + round256(16);
  std::string budget_from;
  if (!settings_.gpu_mem_budget.empty()) {
    in.budget_bytes = parse_bytes(settings_.gpu_mem_budget);
    budget_from = "gpu_mem_budget " + settings_.gpu_mem_budget;
  } else {
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    in.budget_bytes = static_cast<uint64_t>(settings_.gpu_memory_utilization * static_cast<double>(free_b)) / 256 * 256;
    budget_from = fmt::format("gpu_memory_utilization {} x {} free", settings_.gpu_memory_utilization, format_bytes(free_b));
  }
  try {
    plan_ = plan_device_memory(in);
  } catch (const Error& e) {
    fail("{} (budget from {}; max_model_len {}, {} tokens per forward)", e.what(), budget_from, max_len_, pool_tokens_);
  }
}

void CudaModel::upload_weights(const WeightSource& src, bool resident) {
  const ModelConfig& c = cfg_;
  std::map<std::string, const bf16*> dev;
  const bool bf16_experts = resident && expert_fmt_ == QuantFormat::bf16;
  // (full tensor, this rank's slice): the whole tensor on one GPU.
  std::vector<std::pair<TensorSpec, TensorSlice>> specs;
  uint64_t bytes = 0;
  const bool quant_attn = attn_fmt_ != QuantFormat::bf16;
  std::set<std::string> elsewhere;  // expert parallel: the experts other ranks hold
  for (int l = 0; l < c.num_hidden_layers && expert_parallel(); ++l)
    for (int e = 0; e < c.num_local_experts; ++e)
      if (!holds_expert(l, e))
        for (const char* w : {"w1", "w2", "w3"}) elsewhere.insert(names::expert(l, e, w));
  const bool sharded = tp_ && !expert_parallel();
  for (auto& s : model_tensor_specs(full_cfg_))
    if ((bf16_experts || !is_expert(s.name)) && !(quant_attn && is_attention_projection(s.name)) &&
        !elsewhere.count(s.name)) {
      const TensorSlice slice = sharded ? tp_slice(full_cfg_, s.name, tp_->rank, tp_->world) : TensorSlice{};
      bytes += round256(static_cast<uint64_t>(slice_spec(s, slice).numel()) * 2);
      specs.emplace_back(s, slice);
    }
  {
    Progress progress(fmt::format("loading {} ({})", c.name, src.is_synthetic() ? "synthetic, generated on the GPU" : "checkpoint"),
                      bytes);
    WeightUploader up(src, *arena_, stream_, &progress);
    for (auto& [s, slice] : specs) dev[s.name] = up.upload_slice(s, slice);
    up.finish();
    progress.finish();
  }
  embed_ = dev.at(names::embed());
  norm_ = dev.at(names::final_norm());
  lm_head_ = c.tie_word_embeddings ? embed_ : dev.at(names::lm_head());
  layers_.resize(c.num_hidden_layers);
  resident_experts_.assign(c.num_hidden_layers, std::vector<ExpertWeights>(c.num_local_experts));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    Layer& L = layers_[l];
    L.attn_norm = dev.at(names::layer(l, "input_layernorm.weight"));
    if (quant_attn) {
      bytes += upload_quant_attention(src, l, L);
    } else {
      L.wq = dev.at(names::layer(l, "self_attn.q_proj.weight"));
      L.wk = dev.at(names::layer(l, "self_attn.k_proj.weight"));
      L.wv = dev.at(names::layer(l, "self_attn.v_proj.weight"));
      L.wo = dev.at(names::layer(l, "self_attn.o_proj.weight"));
      for (int i = 0; i < 4; ++i) L.lw[i] = LinearWeight{QuantFormat::bf16, i == 0 ? L.wq : i == 1 ? L.wk : i == 2 ? L.wv : L.wo};
    }
    L.ffn_norm = dev.at(names::layer(l, "post_attention_layernorm.weight"));
    L.gate = dev.at(names::layer(l, "block_sparse_moe.gate.weight"));
    family_upload(L, l, dev);
    const uint64_t kv = static_cast<uint64_t>(max_len_) * c.kv_dim();
    L.k_cache = arena_->alloc_n<bf16>(kv, fmt::format("layer {} k cache", l));
    L.v_cache = arena_->alloc_n<bf16>(kv, fmt::format("layer {} v cache", l));
    if (bf16_experts)
      for (int e = 0; e < c.num_local_experts; ++e)
        if (!expert_parallel() || holds_expert(l, e))  // another rank's: no weights here
          resident_experts_[l][e] = ExpertWeights{dev.at(names::expert(l, e, "w1")), dev.at(names::expert(l, e, "w3")),
                                                  dev.at(names::expert(l, e, "w2"))};
  }
  if (resident && !bf16_experts) bytes += upload_quant_experts(src);
  if (quant_attn)
    attn_scratch_ = arena_->alloc_n<bf16>(static_cast<uint64_t>(c.q_dim()) * c.hidden_size, "attention projection scratch");
  weight_bytes_ = bytes;
  zero_i32_ = arena_->alloc_n<int32_t>(1, "contiguous KV block table");
  family_alloc_workspace();
  if (tp_) {
    const uint64_t n = static_cast<uint64_t>(pool_tokens_) * c.hidden_size;
    tp_sum_ = tp_->sum_buffer ? tp_->sum_buffer : arena_->alloc_n<float>(n, "tensor-parallel partial sums");
    CUDA_CHECK(cudaMemsetAsync(tp_sum_, 0, n * sizeof(float), stream_));  // kept zero between uses (cuda_model_tp.cpp)
  }
  CUDA_CHECK(cudaMemsetAsync(zero_i32_, 0, sizeof(int32_t), stream_));
}

// Resident quantised experts: quantised on the host exactly as the host store (and the
// CPU backend) does it, in the slot layout, then one block per expert in the arena. The
// quantised copy is the process's shared pinned store, so the next model of a run in
// this format (another case, the quality pass) uploads without quantising again; like
// the pinned tier's fill, its time is shared setup, not this model's load.
uint64_t CudaModel::upload_quant_experts(const WeightSource& src) {
  const ModelConfig& c = cfg_;
  const int64_t f0 = profiler::now_ns();
  const auto host = shared_host_store(HostTier::pinned, src, expert_fmt_);
  store_fill_ns_ += profiler::now_ns() - f0;
  const ExpertLayout& L = host->layout();
  // On the device w3 follows w1 part by part, so decode reads them as one matrix (one
  // GEMV launch, engine/cuda/gate_up.h); the same bytes, only their order differs.
  const ExpertLayout D = gate_up_layout(L, c.intermediate_size);
  const bool same = std::memcmp(D.offset, L.offset, sizeof L.offset) == 0 && D.total_bytes == L.total_bytes;
  md_.layout = D;
  // int4 on the device in the paired word order (MOEBENCH_INT4_PAIRED): each matrix's
  // codes reordered in place after the copy; the kernels and the prefill's dequantising
  // read them that way (MoeDims::int4_paired).
  md_.int4_paired = expert_fmt_ == QuantFormat::int4 && int4_paired_from_env();
  uint64_t bytes = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l)
    for (int e = 0; e < c.num_local_experts; ++e) {
      auto* d = static_cast<uint8_t*>(
          arena_->alloc(D.total_bytes, fmt::format("layer {} expert {} ({})", l, e, quant_format_name(expert_fmt_))));
      const auto* h = reinterpret_cast<const uint8_t*>(host->expert(l, e));
      if (same) {
        CUDA_CHECK(cudaMemcpy(d, h, L.total_bytes, cudaMemcpyHostToDevice));
      } else {
        CUDA_CHECK(cudaMemset(d, 0, D.total_bytes));  // the padding, zero as in the host store
        for (int mat = 0; mat < 3; ++mat)
          for (int part = 0; part < L.n_parts; ++part)
            CUDA_CHECK(cudaMemcpy(d + D.offset[mat][part], h + L.offset[mat][part], L.bytes[mat][part],
                                  cudaMemcpyHostToDevice));
      }
      if (md_.int4_paired)
        for (int mat = 0; mat < 3; ++mat) int4_pair_words(d + D.offset[mat][0], static_cast<int64_t>(D.bytes[mat][0]), nullptr);
      resident_experts_[l][e] = ExpertWeights{d + D.matrix_offset(0), d + D.matrix_offset(1), d + D.matrix_offset(2)};
      bytes += round256(D.total_bytes);
    }
  if (md_.int4_paired) CUDA_CHECK(cudaDeviceSynchronize());  // the reordering, before any stream reads the codes
  return bytes;
}

void CudaModel::make_provider(const WeightSource& src, bool resident, const ExpertProviderFactory& provider_factory) {
  if (prof_) prof_->experts.configure(cfg_.num_hidden_layers, cfg_.num_local_experts);
  if (resident) {
    provider_ = std::make_unique<ResidentExpertProvider>(std::move(resident_experts_));
  } else if (provider_factory) {
    provider_ = provider_factory(src, *arena_, stream_);
  } else {
    // The slots get what the budget leaves once the rest is in (workspace and tables are
    // allocated after them: reserve their bytes, plus one alignment unit per allocation).
    // The plan's slot count is the same up to that alignment slack.
    const uint64_t rest = ws_b_ + table_b_ + 64 * 1024;
    const uint64_t used = arena_->stats().used_bytes;
    // hybrid's split experts take a scratch slot of their own out of the slots' budget.
    const uint64_t split = store_ ? HostExperts::split_scratch_bytes(
                                        parse_expert_exec(settings_.expert_exec, "setting expert_exec"), *store_,
                                        settings_.hybrid_split)
                                  : 0;
    const uint64_t slot_budget =
        arena_->capacity() > used + rest + split ? arena_->capacity() - used - rest - split : 0;
    OffloadOptions opt = OffloadOptions::from_settings(settings_);
    opt.trace = routing_ ? routing_->trace() : nullptr;
    opt.counters = prof_ ? &prof_->experts : nullptr;
    auto off = std::make_unique<OffloadProvider>(*arena_, *store_, slot_budget, opt);
    off->warm_up(stream_);
    if (prof_) prof_->experts.note_slots(off->n_slots());
    // A chunk's tokens need their experts (at most top_k each, and at most a layer's
    // experts) in device slots at once: with fewer slots than a layer has experts (the
    // baseline's LRU of 42 under OLMoE's 64, top-8), prefill runs in chunks of
    // slots / top_k tokens, instead of failing on the first prompt longer than that.
    const int fit = off->n_slots() >= cfg_.num_local_experts
                        ? chunk_tokens_
                        : std::max(1, off->n_slots() / std::max(1, cfg_.num_experts_per_tok));
    if (fit < chunk_tokens_) {
      log::info("cuda model: prefill in chunks of {} tokens ({} expert slots, top-{})", fit, off->n_slots(),
                cfg_.num_experts_per_tok);
      chunk_tokens_ = fit;
    }
    provider_ = std::move(off);
  }
  if (!provider_) fail("cuda model: the expert provider factory returned nothing");
}

void CudaModel::make_host_experts() {
  if (prof_) prof_->experts.note_host_kernel({});  // not the rate of an earlier model
  if (settings_.expert_exec == "gpu" && settings_.cpu_moe_layers == 0) return;
  auto* off = dynamic_cast<OffloadProvider*>(provider_.get());
  if (!off) {  // resident experts never miss; a factory's provider has no host store
    log::info("expert_exec={} cpu_moe_layers={}: no effect with {}", settings_.expert_exec, settings_.cpu_moe_layers,
              provider_->describe());
    return;
  }
  host_experts_ = std::make_unique<HostExperts>(*store_, *off, parse_expert_exec(settings_.expert_exec, "setting expert_exec"),
                                                settings_.cpu_moe_layers, prof_ ? &prof_->experts : nullptr, trace(),
                                                arena_.get(), settings_.hybrid_split);
  host_experts_->learn_rates_in_decode(settings_.hybrid_rates == "decode");
  moe_->set_host_experts(host_experts_.get());
  if (prof_) prof_->experts.note_host_kernel(host_experts_->host_kernel());
  log::info("host experts: {}", host_experts_->describe());
}

CudaModel::~CudaModel() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (cudaGraphExec_t g : decode_graph_)
    if (g) cudaGraphExecDestroy(g);
  paged_.reset();
  moe_.reset();
  ws_.reset();
  provider_.reset();
  if (host_io_) cudaFreeHost(host_io_);
  if (prefetch_stream_) {
    cudaStreamSynchronize(prefetch_stream_);
    cudaStreamDestroy(prefetch_stream_);
  }
  if (prefetch_event_) cudaEventDestroy(prefetch_event_);
  for (cudaEvent_t e : tp_events_) cudaEventDestroy(e);
  if (step_count_d_) cudaFree(step_count_d_);
  blas_.reset();
  arena_.reset();
  if (stream_) cudaStreamDestroy(stream_);
}

profiler::CpuTrace& CudaModel::trace() { return prof_ ? prof_->trace : null_trace_; }

void CudaModel::check_tokens(const int32_t* tokens, int n, int pos0) const {
  if (n <= 0) fail("forward: no tokens");
  if (pos0 < 0 || pos0 + n > max_len_) fail("sequence length {} exceeds max_model_len {}", pos0 + n, max_len_);
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size)
      fail("token id {} out of range 0..{}", tokens[i], cfg_.vocab_size - 1);
}

void CudaModel::forward(const int32_t* tokens, int n, int pos0, float* logits, float* all_logits) {
  run_chunks(tokens, n, pos0, logits, all_logits, nullptr);
}

int32_t CudaModel::forward_argmax(const int32_t* tokens, int n, int pos0) {
  int32_t next = 0;
  run_chunks(tokens, n, pos0, nullptr, nullptr, &next);
  if (next < 0)  // the argmax kernel's mark for a NaN or an infinity among the logits
    throw NonFiniteLogits(fmt::format("the logits of position {} hold a NaN or an infinity: the model gave non-finite "
                                      "logits (NaN or Inf in the weights, or an overflow)",
                                      pos0 + n - 1));
  return next;
}

void CudaModel::run_chunks(const int32_t* tokens, int n, int pos0, float* logits, float* all_logits, int32_t* next) {
  check_tokens(tokens, n, pos0);
  for (int off = 0; off < n; off += chunk_tokens_) {
    const int m = std::min(chunk_tokens_, n - off);
    const bool last = off + m == n;
    run_chunk(tokens + off, m, pos0 + off, last ? logits : nullptr,
              all_logits ? all_logits + static_cast<size_t>(off) * cfg_.vocab_size : nullptr, last ? next : nullptr);
  }
  // Steps are recorded by the caller (generate.h), as for CpuModel; here only the arena.
  note_arena();
}

void CudaModel::note_arena() {
  if (prof_)
    prof_->memory.note_arena(static_cast<int64_t>(arena_->stats().used_bytes), static_cast<int64_t>(arena_->stats().peak_bytes));
}

int64_t CudaModel::expert_prediction_launches() const { return moe_ ? moe_->predicted_launches() : 0; }
int64_t CudaModel::router_in_gate_up_launches() const { return moe_ ? moe_->router_in_gate_up_launches() : 0; }
int64_t CudaModel::persistent_moe_launches() const { return moe_ ? moe_->persistent_launches() : 0; }
int64_t CudaModel::persistent_moe_router_launches() const { return moe_ ? moe_->persistent_router_launches() : 0; }

void CudaModel::prefetch_attention_out(const Layer& L, bool with_o_proj, int layer, const float* scored) {
  const ModelConfig& c = cfg_;
  if (!prefetch_stream_) {
    CUDA_CHECK(cudaStreamCreateWithFlags(&prefetch_stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&prefetch_event_, cudaEventDisableTiming));
  }
  CUDA_CHECK(cudaEventRecord(prefetch_event_, stream_));
  CUDA_CHECK(cudaStreamWaitEvent(prefetch_stream_, prefetch_event_, 0));
  const size_t H = static_cast<size_t>(c.hidden_size);
  auto range = [](const bf16* p, size_t elems) { return L2Range{p, p ? elems * sizeof(bf16) : 0}; };
  const L2Range ranges[] = {range(with_o_proj ? L.wo : nullptr, H * static_cast<size_t>(c.q_dim())), range(L.ffn_norm, H),
                            range(L.gate, H * static_cast<size_t>(c.num_local_experts))};
  l2_prefetch(ranges, 3, prefetch_stream_);
  // MOEBENCH_EXPERT_PREDICT_AT=1, 2: then the first bytes of the gate/up's w1 and w3 ranges
  // of the expert the scores rank first (once the layer's expert table is settled).
  if (scored && expert_predict_at_from_env() != 0) {
    const MoeLayer::PredictTarget t = moe_->prediction_target(layer);
    if (t.table)
      l2_prefetch_predicted(scored, c.num_local_experts, t.table, t.w3_offset, t.rows, t.range_rows, t.row_bytes, t.bytes,
                            prefetch_stream_);
  }
}

void CudaModel::run_chunk(const int32_t* tokens, int m, int pos0, float* logits, float* all_logits, int32_t* next) {
  const ModelConfig& c = cfg_;
  const int nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  // Decode (m = 1) runs decode_attention (paged_attention where its shapes are not taken)
  // over the contiguous cache seen as one paged block (block table {0}, block_size
  // max_len), keys split over blocks; prefill chunks keep attention() (its row tiles share
  // K/V between tokens).
  const bool decode = m == 1;
  ep_count_ = decode;  // expert parallel: decode steps feed the per-GPU expert counters
  const int64_t step = step_++;
  moe_->begin_step(static_cast<int>(step), m);  // a routing source's choices of every layer, in one copy
  ForwardBuffers& b = ws_->begin(m, decode ? paged_attention_workspace_floats(1, nh, nkv, hd, max_len_)
                                           : attention_workspace_floats(m, pos0, nh, nkv, hd));
  bind_residual(b);  // multi-GPU, tp_reduce=residual: the residual is what the ranks all-reduce

  int32_t* tok_h = host_io_;
  int32_t* pos_h = host_io_ + pool_tokens_;
  std::copy(tokens, tokens + m, tok_h);
  for (int i = 0; i < m; ++i) pos_h[i] = pos0 + i;
  if (decode_graph_ok(m, logits, all_logits, next)) {
    decode_graph_step(b, pos0, step, next ? host_io_ + 2 * pool_tokens_ : nullptr);  // forward_body, replayed
  } else {
    forward_body(b, m, pos0, step, logits, all_logits, next);
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    read_collective_times(decode);
    if (decode) note_decode_step(1);
  }
  if (next) *next = host_io_[2 * pool_tokens_];
  ws_->end();
  provider_->sync_counters();
  if (host_experts_) host_experts_->sync_counters();
}

void CudaModel::forward_body(ForwardBuffers& b, int m, int pos0, int64_t step, float* logits, float* all_logits,
                             int32_t* next) {
  const ModelConfig& c = cfg_;
  const int H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim(), V = c.vocab_size;
  const int nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  const float eps = c.rms_norm_eps;
  cublasHandle_t blas = blas_->get();
  cudaStream_t s = stream_;
  const bool decode = m == 1;
  CUDA_CHECK(cudaMemcpyAsync(b.tokens, host_io_, m * sizeof(int32_t), cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaMemcpyAsync(b.pos, host_io_ + pool_tokens_, m * sizeof(int32_t), cudaMemcpyHostToDevice, s));

  embedding(embed_, b.tokens, b.x, m, H, s);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const Layer& L = layers_[l];
    ScopedRange lr(trace(), RangeKind::layer, l);
    bool moe_done = false;
    bool qkv_roped = false;  // Qwen3-MoE: the q/k norm, RoPE and KV store in the q/k/v launch
    const float* scored = nullptr;  // the experts scored on this layer's input (MOEBENCH_EXPERT_PREDICT_BYTES)
    {
      ScopedRange ar(trace(), RangeKind::attention, l);
      {  // one GEMV launch at m = 1 (bit-identical to three), decode's with the norm in it
        const bf16* w[3] = {L.wq, L.wk, L.wv};
        float* y[3] = {b.q, b.k, b.v};
        const int out[3] = {Q, KV, KV};
        const bool bf16_weights = L.lw[0].format == QuantFormat::bf16 && L.lw[1].format == QuantFormat::bf16 &&
                                  L.lw[2].format == QuantFormat::bf16;
        if (decode && family_qkv_norm_rope(L, b, b.pos, b.pos, L.k_cache, L.v_cache)) {  // slot: the position
          qkv_roped = true;
        } else if (decode && bf16_weights && rmsnorm_linear_multi_supported(b.h, w, out, 3, H)) {
          // MOEBENCH_EXPERT_PREDICT_BYTES: the experts scored on this input too, for the L2
          // requests of the guessed expert's rows during attention (a hint: the same bits).
          ExpertPredict pred;
          if (!tp_ && moe_->takes_prediction(m)) {
            pred = ExpertPredict{L.ffn_norm, L.gate, b.pred_logits, c.num_local_experts};
            if (!expert_predict_supported(b.x, pred)) pred = ExpertPredict{};
          }
          rmsnorm_linear_multi(b.x, L.attn_norm, eps, b.h, w, y, out, 3, H, s, pred);
          scored = pred.n_experts > 0 ? pred.logits : nullptr;
          moe_->set_prediction(scored);
        } else {
          rmsnorm(b.x, L.attn_norm, b.h, m, H, eps, s);
          linear_multi_weight(L.lw, b.h, y, out, 3, m, H, attn_scratch_, blas, s);
        }
      }
      // Expert parallel: one GPU's attention. Tensor parallel: its shard's o_proj and the
      // router's weights too where MOEBENCH_TP_L2_PREFETCH=1 (unset: 0), an A/B of the
      // prefetch on the smaller shapes.
      static const bool tp_prefetch = env_choice("MOEBENCH_TP_L2_PREFETCH", {0, 1}, 0) == 1;
      // MOEBENCH_OPROJ_STAGED: o_proj stages its weights itself (gemv_staged.h), its blocks let
      // in during attention (AttentionHandoff); the side stream then asks L2 only for the router's.
      const bool bf16_o_proj = decode && !tp_ && L.lw[3].format == QuantFormat::bf16;  // decode on one GPU, bf16 o_proj
      int staged = bf16_o_proj && !o_proj_router_on() && !moe_small_block_o_proj_enabled() &&
                           gemv_staged_supported(b.att, L.wo, Q, H)
                       ? o_proj_staged_level()
                       : 0;
      if (staged < 0) staged = gemv_staged_holds_all(Q, H) ? 2 : 0;
      if (decode && (!tp_ || expert_parallel() || tp_prefetch) && !moe_small_block_skips_side_prefetch() &&
          side_prefetch_from_env())
        prefetch_attention_out(L, staged == 0, l, scored);
      const AttentionHandoff handoff(staged);
      // The contiguous cache is a paged pool whose slot is the position: bit-identical to
      // rope() + rope() + kv_store(), one launch (with the family's q/k bias and norm).
      const bool folded =  // Qwen3-MoE: the q/k norm, RoPE and store inside the attention launch
          !qkv_roped && decode &&
          family_decode_attention(L, b, 1, zero_i32_, 1, zero_i32_, b.pos, L.k_cache, L.v_cache, max_len_,
                                  decode_attention_one_split(pos0 + 1) ? nullptr : b.attn_ws);
      // RoPE and the KV store inside the decode attention launch for models without q/k bias
      // or norm (the same bits; MOEBENCH_ROPE_IN_ATTENTION=0, launch_env.h: a launch before it).
      const bool rope_folded = !folded && !qkv_roped && decode && rope_in_attention_from_env() && !L.bq &&
                               c.qk_norm == QkNorm::none && decode_attention_supported(nh, nkv, hd, L.k_cache, L.v_cache);
      if (!folded && !rope_folded && !qkv_roped) family_attention_rope(L, b, m, b.pos, b.pos, L.k_cache, L.v_cache);
      if (folded) {
        // the attention ran with the q/k norm, RoPE and KV store in its launch
      } else if (rope_folded) {
        decode_attention_folded(b.q, b.k, b.v, c.rope_theta, L.k_cache, L.v_cache, zero_i32_, 1, zero_i32_, b.pos, b.att,
                                1, nh, nkv, hd, max_len_, decode_attention_one_split(pos0 + 1) ? nullptr : b.attn_ws,
                                true, attention_merge_in_last_split_from_env(), s);
      } else if (decode && decode_attention_supported(nh, nkv, hd, L.k_cache, L.v_cache))  // no merge launch for few keys
        decode_attention(b.q, L.k_cache, L.v_cache, zero_i32_, 1, zero_i32_, b.pos, b.att, 1, nh, nkv, hd, max_len_,
                         decode_attention_one_split(pos0 + 1) ? nullptr : b.attn_ws, s);
      else if (decode)
        paged_attention(b.q, L.k_cache, L.v_cache, zero_i32_, 1, zero_i32_, b.pos, b.att, 1, nh, nkv, hd, max_len_,
                        b.attn_ws, s);
      else
        attention(b.q, L.k_cache, L.v_cache, b.att, m, pos0, nh, nkv, hd, b.attn_ws, s);
      // Decode over many small experts (MOEBENCH_SMALL_MOE_BLOCK=3, 4): o_proj inside the MoE launch.
      moe_done = !staged && bf16_o_proj &&
                 moe_->run_norm_o_proj(static_cast<int>(step), l, b.att, L.wo, Q, b.x, L.ffn_norm, eps, L.gate, b);
      // x += att @ wo^T, or (MOEBENCH_OPROJ_ROUTER=1) in the launch of the MoE block's norm + router.
      const bool o_proj_deferred = !staged && !moe_done && bf16_o_proj &&
                                   moe_->defer_o_proj(b.att, L.wo, Q, b.x, L.gate, b);
      if (staged) gemv_staged(b.att, L.wo, b.x, Q, H, s);  // x += att @ wo^T, gemv's bits
      else if (!moe_done && !o_proj_deferred) o_proj(L, b, m);
    }
    if (moe_done) family_shared_expert(L, b, m);
    else moe_block(step, l, pos0, b, m);  // x += moe(rmsnorm(x))
  }
  if (all_logits) {
    rmsnorm(b.x, norm_, b.h, m, H, eps, s);
    for (int r0 = 0; r0 < m; r0 += kLogitRows) {
      const int rows = std::min(kLogitRows, m - r0);
      linear(b.h + static_cast<int64_t>(r0) * H, lm_head_, b.logits, rows, H, V, false, blas, s);
      CUDA_CHECK(cudaMemcpyAsync(all_logits + static_cast<size_t>(r0) * V, b.logits, static_cast<size_t>(rows) * V * 4,
                                 cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));  // b.logits is reused by the next block
    }
    if (logits) std::copy(all_logits + static_cast<size_t>(m - 1) * V, all_logits + static_cast<size_t>(m) * V, logits);
  } else if (logits || next) {
    rmsnorm(b.x + static_cast<int64_t>(m - 1) * H, norm_, b.h, 1, H, eps, s);
    linear(b.h, lm_head_, b.logits, 1, H, V, false, blas, s);
    if (next) {
      argmax(b.logits, b.next, 1, V, s);
      CUDA_CHECK(cudaMemcpyAsync(host_io_ + 2 * pool_tokens_, b.next, sizeof(int32_t), cudaMemcpyDeviceToHost, s));
    }
    if (logits) CUDA_CHECK(cudaMemcpyAsync(logits, b.logits, static_cast<size_t>(V) * 4, cudaMemcpyDeviceToHost, s));
  }
}

}  // namespace cuda
}  // namespace moebench
