// engine.cpp: see engine.h.
#include "engine/engine.h"

#include "engine/cpu_model.h"
#include "common/error.h"

namespace moebench {

std::unique_ptr<Model> create_model(const EngineContext& ctx) {
  if (!ctx.weights) fail("create_model: no weights");
  ctx.settings.validate();
  if (ctx.backend == "cpu") {
    return std::make_unique<CpuModel>(ctx);
  }
#if MOEBENCH_CUDA_MODEL
  if (ctx.backend == "cuda") {
    const QuantFormat f = resolve_expert_format(ctx.settings.expert_dtype, *ctx.weights);
    if (f != QuantFormat::bf16)
      fail("setting expert_dtype={}: quantised experts are not implemented on the cuda backend yet (the cpu backend runs them: --backend cpu)",
           quant_format_name(f));
    return create_cuda_model(ctx);
  }
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
