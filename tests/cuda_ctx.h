// cuda_ctx.h: the engine context the CUDA-vs-CPU model tests build a small CUDA model
// from (128 positions, 64 tokens per forward, a 1 GiB budget) with the MoE strategy
// under test.
#pragma once
#include <string>

#include "engine/engine.h"
#include "engine/weight_source.h"

namespace moebench::test {

inline EngineContext cuda_ctx(const WeightSource& w, const std::string& dispatch = "fused",
                              const std::string& combine = "fused", const std::string& buffers = "pooled") {
  EngineContext ctx;
  ctx.weights = &w;
  ctx.backend = "cuda";
  ctx.settings.max_model_len = 128;
  ctx.settings.max_num_batched_tokens = 64;
  ctx.settings.gpu_mem_budget = "1GiB";
  ctx.settings.dispatch = dispatch;
  ctx.settings.combine = combine;
  ctx.settings.buffers = buffers;
  return ctx;
}

}  // namespace moebench::test
