// cuda_handoff_probe_test.cpp: the handoff probe (handoff_probe.h) computes what its chain
// defines in every mode: after h hops every element is its start value + h, so a hop that
// read its input before the hop before had written it (a counter released too early, a wait
// that did not wait) leaves an element short. Eager runs with an even and an odd hop count,
// blocks that fit an SM beside the next launch's and blocks that fill it, and a CUDA graph
// of each mode replayed twice (the run zeroes its counters itself). Skipped without a GPU
// or before Hopper.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <string>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/handoff_probe.h"
#include "tests/device_copy.h"

namespace cuda_handoff_probe_test {

using namespace moebench;
using test::download;

namespace {

struct Probe {
  cuda::DeviceArena arena{16ull << 20, "handoff probe test"};
  float* a = nullptr;
  float* b = nullptr;
  uint32_t* counters = nullptr;
  std::vector<float> start;
  explicit Probe(int n, int hops) {
    a = arena.alloc_n<float>(static_cast<size_t>(n), "probe a");
    b = arena.alloc_n<float>(static_cast<size_t>(n), "probe b");
    counters = arena.alloc_n<uint32_t>(static_cast<size_t>(hops), "probe counters");
    start.resize(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) start[static_cast<size_t>(i)] = static_cast<float>(i % 97);
  }
  void reset() {
    CUDA_CHECK(cudaMemcpy(a, start.data(), start.size() * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(b, 0xff, start.size() * sizeof(float)));  // NaN: a slice never written shows
  }
  // Every element start + hops, in the buffer the chain ends in.
  void expect_done(int hops) const {
    const std::vector<float> got = download(hops % 2 == 0 ? a : b, start.size());
    int wrong = 0;
    for (size_t i = 0; i < start.size(); ++i)
      if (got[i] != start[i] + static_cast<float>(hops) && wrong++ < 5)
        ADD_FAILURE() << "element " << i << ": " << got[i] << ", expected " << start[i] + static_cast<float>(hops);
    EXPECT_EQ(wrong, 0) << "elements not carried through every hop";
  }
};

}  // namespace

TEST(CudaHandoffProbe, EveryModeCarriesEveryHop) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA handoff probe test skipped";
  if (cuda::device_info_cached().cc_major < 9) GTEST_SKIP() << "the handoff probe needs Hopper";
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  // Blocks beside the next launch's (no shared memory), and two blocks filling an SM.
  const cuda::HandoffShape shapes[] = {{4, 0, 33, 4096}, {2, 100, 64, 4096}, {1, 0, 7, 1000}};
  for (const cuda::HandoffShape& shape : shapes) {
    Probe p(shape.n, shape.hops);
    for (const cuda::HandoffMode mode : cuda::kHandoffModes) {
      SCOPED_TRACE(std::string(cuda::handoff_mode_name(mode)) + ", " + std::to_string(shape.blocks_per_sm) +
                   " blocks an SM, " +
                   std::to_string(shape.smem_kib) + " KiB, " + std::to_string(shape.hops) + " hops");
      std::string why;
      if (!cuda::handoff_probe_supported(mode, shape, &why)) {
        ASSERT_EQ(mode, cuda::HandoffMode::persistent) << why;  // only a grid that does not fit is refused
        continue;
      }
      p.reset();
      cuda::handoff_probe_run(mode, shape, p.a, p.b, p.counters, s);
      CUDA_CHECK(cudaStreamSynchronize(s));
      p.expect_done(shape.hops);
      // In a CUDA graph, replayed twice from a fresh start.
      cudaGraph_t g;
      cudaGraphExec_t ge;
      CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      cuda::handoff_probe_run(mode, shape, p.a, p.b, p.counters, s);
      CUDA_CHECK(cudaStreamEndCapture(s, &g));
      CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
      for (int run = 0; run < 2; ++run) {
        p.reset();
        CUDA_CHECK(cudaGraphLaunch(ge, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
        p.expect_done(shape.hops);
      }
      CUDA_CHECK(cudaGraphExecDestroy(ge));
      CUDA_CHECK(cudaGraphDestroy(g));
    }
  }
  CUDA_CHECK(cudaStreamDestroy(s));
}

TEST(CudaHandoffProbe, RefusesBadShapes) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA handoff probe test skipped";
  std::string why;
  EXPECT_FALSE(cuda::handoff_probe_supported(cuda::HandoffMode::pdl, {2, 0, 64, 4095}, &why));
  EXPECT_NE(why.find("n 4095"), std::string::npos) << why;
  EXPECT_FALSE(cuda::handoff_probe_supported(cuda::HandoffMode::stream, {0, 0, 64, 4096}, &why));
  if (cuda::device_info_cached().cc_major >= 9) {
    // 8 blocks of 100 KiB cannot all be resident on one SM: the persistent launch is refused.
    EXPECT_FALSE(cuda::handoff_probe_supported(cuda::HandoffMode::persistent, {8, 100, 64, 4096}, &why));
    EXPECT_NE(why.find("do not fit"), std::string::npos) << why;
  }
}

}  // namespace cuda_handoff_probe_test

#endif
