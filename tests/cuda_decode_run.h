// cuda_decode_run.h: the decode run the CUDA model A/B tests compare bit for bit: the
// prompt, then eager one-token steps up to position end / 2 (each step's logits appended
// to `logits`), then forward_argmax's graph-replayed greedy steps up to `end`; returns the
// greedy tokens of the graph half (and the token after it). Only for test files built with
// CUDA.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/cuda/cuda_model.h"

namespace moebench::test {

inline std::vector<int32_t> eager_then_graph_decode(cuda::CudaModel& cm, const std::vector<int32_t>& prompt, int end,
                                                    std::vector<float>& logits) {
  const int V = cm.config().vocab_size;
  std::vector<float> l(V);
  cm.forward(prompt.data(), static_cast<int>(prompt.size()), 0, l.data());
  int32_t t = 0;
  for (int pos = static_cast<int>(prompt.size()); pos < end / 2; ++pos) {  // eager, logits kept
    t = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    cm.forward(&t, 1, pos, l.data());
    logits.insert(logits.end(), l.begin(), l.end());
  }
  std::vector<int32_t> tokens;
  t = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
  for (int pos = end / 2; pos < end; ++pos) {  // forward_argmax: graph replays
    tokens.push_back(t);
    t = cm.forward_argmax(&t, 1, pos);
  }
  tokens.push_back(t);
  return tokens;
}

}  // namespace moebench::test
