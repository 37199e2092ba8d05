// teacher_forced.h: the logits a model gives for a prompt and then `steps` teacher-forced
// decode steps (tokens 100 + 37 i), concatenated — what the tier/policy/strategy
// equivalence tests compare bit for bit on both backends.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/cpu_model.h"
#include "engine/engine.h"
#include "engine/model.h"

namespace moebench::test {

inline std::vector<float> teacher_forced_logits(Model& m, const std::vector<int32_t>& prompt, int steps = 8) {
  const int V = m.config().vocab_size;
  std::vector<float> all, l(V);
  m.forward(prompt.data(), static_cast<int>(prompt.size()), 0, l.data());
  all.insert(all.end(), l.begin(), l.end());
  for (int i = 0; i < steps; ++i) {
    int32_t t = 100 + 37 * i;
    m.forward(&t, 1, static_cast<int>(prompt.size()) + i, l.data());
    all.insert(all.end(), l.begin(), l.end());
  }
  return all;
}

// The CPU backend's teacher_forced_logits for `w` under settings `s`.
inline std::vector<float> cpu_teacher_forced_logits(const WeightSource& w, const EngineSettings& s,
                                                    const std::vector<int32_t>& prompt) {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.settings = s;
  CpuModel m(ctx);
  return teacher_forced_logits(m, prompt);
}

// Default settings with expert_dtype = d.
inline EngineSettings with_expert_dtype(const std::string& d) {
  EngineSettings s;
  s.expert_dtype = d;
  return s;
}

}  // namespace moebench::test
