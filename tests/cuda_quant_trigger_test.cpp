// cuda_quant_trigger_test.cpp: where the quantised down + combine launch lets the next
// kernel's blocks start (MOEBENCH_QUANT_DOWN_TRIGGER: right after its wait, or as its warps
// finish) moves only launch timing, so the model's decode steps (eager logits and
// graph-replayed greedy tokens) must be the same bits either way, for every expert format.
// Skipped without a GPU.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <string>
#include <vector>

#include "engine/cuda/cuda_model.h"
#include "engine/cuda/device.h"
#include "engine/cuda/launch_env.h"
#include "engine/engine.h"
#include "engine/weight_source.h"
#include "tests/cuda_ctx.h"
#include "tests/cuda_decode_run.h"

namespace cuda_quant_trigger_test {

using namespace moebench;

namespace {

TEST(CudaQuantDownTrigger, ModelStepsAreTheSameBitsEitherWay) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA quantised down trigger test skipped";
  auto src = WeightSource::open("synthetic:small", 5);
  const std::vector<int32_t> prompt = {5, 9, 2, 17, 4, 11, 3};
  const int end = 40;
  for (const std::string dtype : {"int8", "int4", "fp8"}) {
    SCOPED_TRACE("expert_dtype " + dtype);
    auto run = [&](int late, std::vector<float>& logits) {
      const cuda::ScopedSwitch trigger(cuda::set_quant_down_trigger, late);
      EngineContext ctx = test::cuda_ctx(src);
      ctx.settings.expert_dtype = dtype;
      cuda::CudaModel cm(ctx);
      return test::eager_then_graph_decode(cm, prompt, end, logits);
    };
    std::vector<float> l0, l1;
    const auto t0 = run(0, l0);
    const auto t1 = run(1, l1);
    ASSERT_EQ(l0.size(), l1.size());
    EXPECT_TRUE(l0 == l1) << "decode logits differ between the early and the late trigger";
    EXPECT_EQ(t0, t1) << "greedy tokens differ between the early and the late trigger";
  }
}

}  // namespace

}  // namespace cuda_quant_trigger_test

#endif  // MOEBENCH_HAVE_CUDA
