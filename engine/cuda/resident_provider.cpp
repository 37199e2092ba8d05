// resident_provider.cpp: see resident_provider.h.
#include "engine/cuda/resident_provider.h"

#include "common/error.h"

namespace moebench::cuda {

ResidentExpertProvider::ResidentExpertProvider(std::vector<std::vector<ExpertWeights>> experts)
    : experts_(std::move(experts)) {}

std::string ResidentExpertProvider::describe() const {
  const size_t e = experts_.empty() ? 0 : experts_[0].size();
  return fmt::format("resident, {} layers x {} experts on the device", experts_.size(), e);
}

void ResidentExpertProvider::acquire(int, int layer, const int32_t* ids, int n_ids, ExpertWeights* out, void*) {
  if (layer < 0 || layer >= static_cast<int>(experts_.size()))
    fail("resident expert provider: layer {} out of range 0..{}", layer, static_cast<int>(experts_.size()) - 1);
  const auto& L = experts_[layer];
  const int E = static_cast<int>(L.size());
  if (!ids) {
    for (int e = 0; e < E; ++e) out[e] = L[e];
    return;
  }
  for (int i = 0; i < n_ids; ++i) {
    if (ids[i] < 0 || ids[i] >= E) fail("resident expert provider: expert id {} out of range 0..{}", ids[i], E - 1);
    out[ids[i]] = L[ids[i]];
  }
}

}  // namespace moebench::cuda
