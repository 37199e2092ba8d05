// cpu_expert_provider.cpp: see cpu_expert_provider.h.
#include "engine/cpu_expert_provider.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/log.h"
#include "common/clock.h"
#include "profiler/counters.h"

namespace moebench {

CpuResidentProvider::CpuResidentProvider(const WeightSource& src, QuantFormat format, profiler::Profiler* prof)
    : n_experts_(src.config().num_local_experts), format_(format), prof_(prof) {
  const ModelConfig& c = src.config();
  w_.resize(static_cast<size_t>(c.num_hidden_layers) * n_experts_ * 3);
  for (int l = 0; l < c.num_hidden_layers; ++l)
    for (int e = 0; e < n_experts_; ++e)
      for (int k = 0; k < 3; ++k) {
        TensorSpec s = tensor_spec(c, names::expert(l, e, names::kExpertSlotOrder[k]));
        auto& v = w_[(static_cast<size_t>(l) * n_experts_ + e) * 3 + k];
        v.resize(static_cast<size_t>(s.numel()));
        src.read_f32_as(s, format, v.data());
      }
  seen_.assign(n_experts_, 0);
}

std::string CpuResidentProvider::describe() const {
  return format_ == QuantFormat::bf16 ? "resident" : fmt::format("resident, {}", quant_format_name(format_));
}

void CpuResidentProvider::acquire(int, int layer, const int32_t* ids, int n_ids, ExpertWeights* out, void*) {
  std::fill(seen_.begin(), seen_.end(), 0);
  for (int i = 0; i < n_ids; ++i) {
    int e = ids[i];
    if (seen_[e]) continue;
    seen_[e] = 1;
    size_t b = (static_cast<size_t>(layer) * n_experts_ + e) * 3;
    out[e] = {w_[b].data(), w_[b + 1].data(), w_[b + 2].data()};
    if (prof_) prof_->experts.route(layer, e, true);
  }
}

int cpu_cache_slots(const EngineSettings& s, const ModelConfig& c) {
  const int all = c.num_hidden_layers * c.num_local_experts;
  int n = s.cache_slots > 0 ? s.cache_slots : all;
  return std::min(n, all);
}

namespace {
CacheShape shape_for(const EngineSettings& s, const ModelConfig& c) {
  CacheShape sh;
  sh.n_layers = c.num_hidden_layers;
  sh.n_experts = c.num_local_experts;
  sh.top_k = c.num_experts_per_tok;
  sh.capacity = cpu_cache_slots(s, c);
  return sh;
}
PolicyContext policy_ctx(const EngineSettings& s, const ModelConfig& c, const RoutingTrace* trace) {
  PolicyContext p;
  p.shape = shape_for(s, c);
  p.trace = trace;
  return p;
}
}  // namespace

CpuCachedProvider::CpuCachedProvider(const WeightSource& src, const EngineSettings& s, profiler::Profiler* prof,
                                     const RoutingTrace* trace)
    : src_(src),
      settings_(s),
      prof_(prof),
      H_(src.config().hidden_size),
      I_(src.config().intermediate_size),
      E_(src.config().num_local_experts),
      cache_(shape_for(s, src.config()), make_cache_policy(s.cache_policy, policy_ctx(s, src.config(), trace))),
      format_(resolve_expert_format(s.expert_dtype, src)) {
  const ModelConfig& c = src.config();
  const size_t per = static_cast<size_t>(H_) * I_;
  slots_.resize(static_cast<size_t>(cache_.shape().capacity) * 3 * per);
  if (s.expert_tier == "pinned") {
    const size_t n = static_cast<size_t>(c.num_hidden_layers) * E_ * 3;
    if (format_ == QuantFormat::bf16) host_values_.resize(n);
    else host_.resize(n);
    for (int l = 0; l < c.num_hidden_layers; ++l)
      for (int e = 0; e < E_; ++e)
        for (int k = 0; k < 3; ++k) {
          const size_t i = (static_cast<size_t>(l) * E_ + e) * 3 + k;
          const TensorSpec s = tensor_spec(c, names::expert(l, e, names::kExpertSlotOrder[k]));
          if (format_ != QuantFormat::bf16) {
            host_[i] = src.read_quant(s, format_);
            continue;
          }
          host_values_[i].resize(static_cast<size_t>(s.numel()));
          src.read_f32(s, host_values_[i].data());
        }
    for (int k = 0; k < 3; ++k) {  // a load moves the format's bytes
      const TensorSpec s = tensor_spec(c, names::expert(0, 0, names::kExpertSlotOrder[k]));
      loaded_bytes_ += format_ == QuantFormat::bf16 ? quant_matrix_bytes(format_, s.shape[0], s.shape[1]) : host_[k].nbytes();
    }
  } else if (s.expert_tier == "disk") {
    if (!src.ckpt())
      fail("expert_tier=disk needs a checkpoint on disk; {} has no files (write one with make-model)", src.describe());
    if (src.expert_format() != format_)
      fail("expert_tier=disk reads experts as stored: {} stores them as {}, expert_dtype={} needs a checkpoint in {} "
           "(make-model --dtype {})",
           src.describe(), quant_format_name(src.expert_format()), s.expert_dtype, s.expert_dtype, s.expert_dtype);
    disk_note_ = "pread+POSIX_FADV_DONTNEED";
    for (int k = 0; k < 3; ++k) {
      std::vector<const TensorView*> parts;
      src.stored_format(tensor_spec(c, names::expert(0, 0, names::kExpertSlotOrder[k])), &parts);
      for (auto* v : parts) loaded_bytes_ += v->nbytes;
    }
  } else {
    fail("CpuCachedProvider: expert_tier '{}' is not pinned|disk", s.expert_tier);
  }
  for (auto& r : cache_.warm_up()) load(r.key, r.slot);
}

CpuCachedProvider::~CpuCachedProvider() = default;

std::string CpuCachedProvider::describe() const {
  return fmt::format("{}{}, {}, {} slots{}", settings_.expert_tier, disk_note_.empty() ? "" : " (" + disk_note_ + ")",
                     settings_.cache_policy, cache_.shape().capacity,
                     format_ == QuantFormat::bf16 ? "" : fmt::format(", {}", quant_format_name(format_)));
}

void CpuCachedProvider::load(ExpertKey key, int slot) {
  const ModelConfig& c = src_.config();
  const size_t per = static_cast<size_t>(H_) * I_;
  const int64_t t0 = profiler::now_ns();
  float* dst = &slots_[static_cast<size_t>(slot) * 3 * per];
  for (int k = 0; k < 3; ++k) {
    TensorSpec s = tensor_spec(c, names::expert(key.layer, key.expert, names::kExpertSlotOrder[k]));
    if (settings_.expert_tier == "pinned") {
      const size_t i = (static_cast<size_t>(key.layer) * E_ + key.expert) * 3 + k;
      if (format_ == QuantFormat::bf16) std::copy(host_values_[i].begin(), host_values_[i].end(), dst + k * per);
      else dequantize(host_[i], dst + k * per);
      continue;
    }
    // disk: a real read of the tensor's stored parts (values, scales, zero points) from
    // their files, page cache dropped first
    std::vector<const TensorView*> parts;
    src_.stored_format(s, &parts);
    std::vector<std::vector<uint8_t>> bufs;
    for (const TensorView* v : parts) {
      int fd = ::open(v->file->c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) fail("{}: cannot open for expert read ({})", *v->file, std::strerror(errno));
      ::posix_fadvise(fd, static_cast<off_t>(v->file_offset), static_cast<off_t>(v->nbytes), POSIX_FADV_DONTNEED);
      std::vector<uint8_t>& buf = bufs.emplace_back(v->nbytes);
      size_t got = 0;
      while (got < v->nbytes) {
        ssize_t r = ::pread(fd, buf.data() + got, v->nbytes - got, static_cast<off_t>(v->file_offset + got));
        if (r <= 0) {
          ::close(fd);
          fail("{}: short read of tensor '{}' at offset {}", *v->file, v->name, v->file_offset + got);
        }
        got += static_cast<size_t>(r);
      }
      ::close(fd);
    }
    if (format_ == QuantFormat::bf16) {
      to_f32(parts[0]->dtype, bufs[0].data(), dst + k * per, per);
    } else if (parts[1]->dtype != quant_parts(format_, s.shape[0], s.shape[1])[1].dtype) {
      // scales stored in another dtype (fp8's as bf16 or f16, int4's as f16): through the loader's conversion
      dequantize(src_.read_quant(s, format_), dst + k * per);
    } else {
      dequantize(format_, s.shape[0], s.shape[1], bufs[0].data(), bufs[1].data(),
                 bufs.size() > 2 ? bufs[2].data() : nullptr, dst + k * per);
    }
  }
  if (prof_) prof_->experts.load(key.layer, static_cast<int64_t>(loaded_bytes_), profiler::now_ns() - t0);
}

void CpuCachedProvider::acquire(int step, int layer, const int32_t* ids, int n_ids, ExpertWeights* out, void*) {
  cache_.access_layer(step, layer, std::span<const int32_t>(ids, n_ids), results_);
  const size_t per = static_cast<size_t>(H_) * I_;
  overflow_.clear();
  for (size_t i = 0; i < results_.size(); ++i) {
    const AccessResult& r = results_[i];
    if (r.evicted && r.evicted->layer == layer) {
      // More distinct experts in this call than slots (a prefill chunk): the slot of an
      // expert this call already placed is reused; keep that expert's weights aside.
      for (size_t j = 0; j < i; ++j)
        if (results_[j].key.expert == r.evicted->expert) {
          const float* b = &slots_[static_cast<size_t>(results_[j].slot) * 3 * per];
          overflow_.emplace_back(b, b + 3 * per);
          const float* o = overflow_.back().data();
          out[r.evicted->expert] = {o, o + per, o + 2 * per};
        }
    }
    if (!r.hit) load(r.key, r.slot);
    if (prof_) prof_->experts.route(layer, r.key.expert, r.hit);
    const float* b = &slots_[static_cast<size_t>(r.slot) * 3 * per];
    out[r.key.expert] = {b, b + per, b + 2 * per};
  }
  log::debug("layer {} step {}: {} experts, cache {}", layer, step, results_.size(), describe());
}

void CpuCachedProvider::prefetch(int step, int layer, const int32_t* ids, int n_ids) {
  cache_.prefetch(step, layer, std::span<const int32_t>(ids, n_ids), results_);
  for (auto& r : results_) load(r.key, r.slot);
}

}  // namespace moebench
