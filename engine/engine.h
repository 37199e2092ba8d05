// engine.h: builds a Model for a backend from weights + settings. The CPU backend is
// always there; the CUDA backend registers through create_cuda_model when compiled in.
#pragma once
#include <memory>
#include <string>

#include "engine/model.h"
#include "model/settings.h"
#include "engine/weight_source.h"

// The CUDA model is compiled in when the CUDA backend is on and its source exists.
#if defined(MOEBENCH_HAVE_CUDA) && __has_include("engine/cuda/cuda_model.h")
#define MOEBENCH_CUDA_MODEL 1
#else
#define MOEBENCH_CUDA_MODEL 0
#endif

namespace moebench {

namespace profiler {
struct Profiler;
}

struct EngineContext {
  const WeightSource* weights = nullptr;
  EngineSettings settings;
  std::string backend = "cpu";               // cpu | cuda (resolved, not auto)
  profiler::Profiler* prof = nullptr;        // optional; counters and ranges go here
};

std::unique_ptr<Model> create_model(const EngineContext& ctx);

#if MOEBENCH_CUDA_MODEL
// Defined in engine/cuda/cuda_model.cpp (the CUDA backend).
std::unique_ptr<Model> create_cuda_model(const EngineContext& ctx);
#endif

}  // namespace moebench
