// engine.cpp: see engine.h.
#include "engine/engine.h"

#include "engine/cpu_model.h"
#include "common/error.h"

namespace moebench {

std::unique_ptr<Model> create_model(const EngineContext& ctx) {
  if (!ctx.weights) fail("create_model: no weights");
  ctx.settings.validate();
  if (ctx.settings.tensor_parallel > 1 && ctx.backend != "cuda")
    fail("setting tensor_parallel={}: tensor parallelism runs on the cuda backend (got backend {})",
         ctx.settings.tensor_parallel, ctx.backend);
  if (ctx.settings.expert_parallel > 1 && ctx.backend != "cuda")
    fail("setting expert_parallel={}: expert parallelism runs on the cuda backend (got backend {})",
         ctx.settings.expert_parallel, ctx.backend);
  if (ctx.backend == "cpu") {
    return std::make_unique<CpuModel>(ctx);
  }
#if MOEBENCH_CUDA_MODEL
  if (ctx.backend == "cuda") return create_cuda_model(ctx);
#endif
  fail("backend '{}' is not available in this build (expected cpu{})", ctx.backend,
#if MOEBENCH_CUDA_MODEL
       "|cuda"
#else
       ""
#endif
  );
}

}  // namespace moebench
