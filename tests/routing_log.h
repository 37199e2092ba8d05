// routing_log.h: the experts a model chose at every (layer, position), recorded through
// its routing observer, and the first position where two models chose differently —
// what the CUDA-vs-CPU tests use to hold logits to a tolerance only while both routed
// alike (a near-tied router score may go another way under bf16 activations).
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace moebench::test {

// The experts chosen at every (layer, position), as sorted sets.
struct RoutingLog {
  int k = 0;
  std::map<std::pair<int, int>, std::vector<int32_t>> sets;
  void record(int layer, int pos0, int n, const int32_t* ids) {
    for (int i = 0; i < n; ++i) {
      std::vector<int32_t> e(ids + static_cast<size_t>(i) * k, ids + static_cast<size_t>(i + 1) * k);
      std::sort(e.begin(), e.end());
      sets[{layer, pos0 + i}] = e;
    }
  }
};
// First position whose expert choice differs in any layer (INT_MAX when none).
inline int first_routing_difference(const RoutingLog& a, const RoutingLog& b) {
  int first = INT_MAX;
  for (auto& [key, e] : a.sets) {
    auto it = b.sets.find(key);
    if (it != b.sets.end() && it->second != e) first = std::min(first, key.second);
  }
  return first;
}

}  // namespace moebench::test
