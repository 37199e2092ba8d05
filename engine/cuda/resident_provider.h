// resident_provider.h: the GPU-resident expert tier — every expert's weights (bf16,
// or quantised in the slot layout, ExpertLayout) live in the device arena for the
// whole run (uploaded with the rest of the model by CudaModel), and acquire hands out
// pointers into them: no loads, no misses, no host round trip (needs_ids() is false).
// Host C++.
#pragma once
#include <vector>

#include "engine/expert_provider.h"

namespace moebench::cuda {

class ResidentExpertProvider : public ExpertProvider {
 public:
  // experts: (n_layers, n_experts) device pointers, owned by the caller (the arena).
  explicit ResidentExpertProvider(std::vector<std::vector<ExpertWeights>> experts);
  std::string describe() const override;
  void acquire(int step, int layer, const int32_t* ids, int n_ids, ExpertWeights* out, void* stream) override;
  bool needs_ids() const override { return false; }

 private:
  std::vector<std::vector<ExpertWeights>> experts_;  // (n_layers, n_experts)
};

}  // namespace moebench::cuda
