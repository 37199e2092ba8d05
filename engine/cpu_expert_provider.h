// cpu_expert_provider.h: expert providers of the CPU backend (fp32 host pointers). The
// experts are in the run's format (expert_dtype, engine/quant.h): the fp32 a slot holds
// is that format dequantised — the CPU reference's definition of the format.
//   CpuResidentProvider: every expert dequantised once and held (the `resident` tier).
//   CpuCachedProvider:   `cache_slots` fp32 slots managed by an ExpertCache (the same
//                        decision code as `moebench simulate`); a miss loads the expert
//                        from its tier (`pinned`: a host copy in the format, weights +
//                        scales; `disk`: the checkpoint's tensors as stored, read with
//                        pread) and dequantises it into the slot. A load counts the
//                        format's bytes (expert_bytes()).
#pragma once
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "engine/expert_provider.h"
#include "model/settings.h"
#include "engine/weight_source.h"
#include "variants/expert_cache.h"
#include "variants/routing_trace.h"

namespace moebench {

namespace profiler {
struct Profiler;
}

class CpuResidentProvider : public ExpertProvider {
 public:
  CpuResidentProvider(const WeightSource& src, QuantFormat format, profiler::Profiler* prof);
  std::string describe() const override;
  void acquire(int step, int layer, const int32_t* ids, int n_ids, ExpertWeights* out, void* stream) override;

 private:
  int n_experts_;
  QuantFormat format_;
  profiler::Profiler* prof_;
  std::vector<std::vector<float>> w_;  // (layers * experts * 3) tensors, fp32
  std::vector<char> seen_;
};

class CpuCachedProvider : public ExpertProvider {
 public:
  // `trace` (optional) is the run's future routing, for policies that need it (belady, static).
  CpuCachedProvider(const WeightSource& src, const EngineSettings& s, profiler::Profiler* prof,
                    const RoutingTrace* trace = nullptr);
  ~CpuCachedProvider() override;
  std::string describe() const override;
  void acquire(int step, int layer, const int32_t* ids, int n_ids, ExpertWeights* out, void* stream) override;
  bool wants_prediction() const override { return cache_.speculative(); }
  void prefetch(int step, int layer, const int32_t* ids, int n_ids) override;
  const ExpertCache& cache() const { return cache_; }

 private:
  void load(ExpertKey key, int slot);
  const WeightSource& src_;
  EngineSettings settings_;
  profiler::Profiler* prof_;
  int H_, I_, E_;
  ExpertCache cache_;
  QuantFormat format_;
  std::vector<float> slots_;          // (capacity, 3, I*H) fp32: w1 | w3 | w2
  std::vector<QuantMatrix> host_;     // pinned tier: (layers, experts, 3) in format_ (fp8, int8, int4)
  // pinned tier at bf16: the values as read_f32 gives them, which the resident reference
  // computes with (an F32 or F16 checkpoint's, or a quantised one's dequantised, are not
  // bf16 values: rounding them here would make the tier another model)
  std::vector<std::vector<float>> host_values_;
  uint64_t loaded_bytes_ = 0;         // bytes one load moves (the tier's copy of an expert)
  std::vector<AccessResult> results_;
  std::list<std::vector<float>> overflow_;  // experts displaced within one call (stable addresses)
  std::string disk_note_;
};

// Slots to give the cache for these settings on the CPU backend.
int cpu_cache_slots(const EngineSettings& s, const ModelConfig& c);

}  // namespace moebench
