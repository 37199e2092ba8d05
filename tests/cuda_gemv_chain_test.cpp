// cuda_gemv_chain_test.cpp: the persistent GEMV chain (gemv_chain.h). Every op against the
// CPU reference fed the op's own input (its dependency's output from the GPU, rounded to
// bf16), the persistent launch against one launch an op bit for bit, repeated runs with a
// new input each (the run count on the device must make every wait hold the new run's
// rows), the same in a CUDA graph replayed twice, and the shapes it refuses. Skipped
// without a GPU (or before Hopper, where the chain does not run).
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/gemv_chain.h"
#include "engine/dtype.h"
#include "tests/device_copy.h"

namespace cuda_gemv_chain_test {

using namespace moebench;
using test::download;
using test::upload;

namespace {

float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

struct Chain {
  std::vector<cuda::GemvChainOp> ops;
  std::vector<std::vector<uint16_t>> w;  // host copies of the weights
};

// Three layers of a small model's shape (q/k/v 1280 x 1024, o 1024 x 1024, gate/up 3072 x 1024,
// down 1024 x 3072), then an op of 7 rows (fewer rows than blocks: only 7 blocks count it).
Chain make_chain(cuda::DeviceArena& arena, std::mt19937& rng) {
  struct Shape {
    int rows, cols;
  };
  std::vector<Shape> shapes;
  for (int l = 0; l < 3; ++l)
    for (const Shape s : {Shape{1280, 1024}, Shape{1024, 1024}, Shape{3072, 1024}, Shape{1024, 3072}})
      shapes.push_back(s);
  shapes.push_back(Shape{7, 1024});
  Chain c;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape s = shapes[i];
    std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt(static_cast<float>(s.cols)));
    std::vector<uint16_t> w(static_cast<size_t>(s.rows) * s.cols);
    for (auto& v : w) v = f32_to_bf16(nd(rng));
    cuda::GemvChainOp op;
    op.w = reinterpret_cast<const __nv_bfloat16*>(upload(arena, w, "chain weights"));
    op.y = arena.alloc_n<float>(static_cast<size_t>(s.rows), "chain output");
    op.rows = s.rows;
    op.cols = s.cols;
    op.dep = static_cast<int>(i) - 1;
    c.ops.push_back(op);
    c.w.push_back(std::move(w));
  }
  return c;
}

std::vector<std::vector<float>> outputs(const Chain& c) {
  std::vector<std::vector<float>> y;
  for (const auto& op : c.ops) y.push_back(download(op.y, static_cast<size_t>(op.rows)));
  return y;
}

// Each op's rows against the reference computed from the input the op saw.
void expect_each_op_matches_the_reference(const Chain& c, const std::vector<float>& x0,
                                          const std::vector<std::vector<float>>& y) {
  for (size_t i = 0; i < c.ops.size(); ++i) {
    const auto& op = c.ops[i];
    const std::vector<float>& in = op.dep < 0 ? x0 : y[static_cast<size_t>(op.dep)];
    for (int r = 0; r < op.rows; ++r) {
      double s = 0;
      for (int k = 0; k < op.cols; ++k)
        s += static_cast<double>(bf16_to_f32(c.w[i][static_cast<size_t>(r) * op.cols + k])) * round_bf16(in[k]);
      ASSERT_NEAR(y[i][static_cast<size_t>(r)], s, 1e-4 * (1.0 + std::fabs(s))) << "op " << i << " row " << r;
    }
  }
}

TEST(CudaGemvChain, PersistentMatchesOneLaunchAnOpAndTheCpuReference) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA GEMV chain test skipped";
  if (cuda::device_info_cached().cc_major < 9) GTEST_SKIP() << "the GEMV chain needs Hopper";
  std::mt19937 rng(21);
  cuda::DeviceArena arena(64ull << 20, "gemv_chain test");
  const Chain c = make_chain(arena, rng);
  const int n = static_cast<int>(c.ops.size());
  std::string why;
  ASSERT_TRUE(cuda::gemv_chain_supported(c.ops.data(), n, &why)) << why;
  auto* ops_dev = arena.alloc_n<cuda::GemvChainOp>(static_cast<size_t>(n), "chain ops");
  cuda::gemv_chain_upload(c.ops.data(), n, ops_dev);
  auto* counters = arena.alloc_n<uint32_t>(cuda::gemv_chain_counter_words(n), "chain counters");
  CUDA_CHECK(cudaMemset(counters, 0, cuda::gemv_chain_counter_words(n) * sizeof(uint32_t)));
  float* x0 = arena.alloc_n<float>(1024, "chain input");
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto new_input = [&] {
    std::vector<float> x(1024);
    for (auto& v : x) v = nd(rng);
    CUDA_CHECK(cudaMemcpy(x0, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice));
    return x;
  };
  auto clear = [&] {
    for (const auto& op : c.ops) CUDA_CHECK(cudaMemset(op.y, 0xff, static_cast<size_t>(op.rows) * sizeof(float)));
  };
  const cuda::GemvChainShape shapes[] = {{8, 8}, {8, 16}, {4, 16}, {4, 32}};
  for (const cuda::GemvChainShape shape : shapes) {
    ASSERT_TRUE(cuda::gemv_chain_supported(c.ops.data(), n, &why, shape)) << why;
    for (int run = 0; run < 3; ++run) {
      SCOPED_TRACE(std::to_string(shape.warps) + " warps, " + std::to_string(shape.chunk_kib) + " KiB slots, run " +
                   std::to_string(run + 1));
      const auto x = new_input();
      clear();
      cuda::gemv_chain_run(c.ops.data(), n, x0, ops_dev, nullptr, cuda::GemvChainMode::per_op, nullptr, shape);
      const auto want = outputs(c);
      expect_each_op_matches_the_reference(c, x, want);
      clear();
      cuda::gemv_chain_run(c.ops.data(), n, x0, ops_dev, counters, cuda::GemvChainMode::persistent, nullptr, shape);
      ASSERT_EQ(outputs(c), want) << "the persistent launch's outputs differ from one launch an op";
    }
  }
  // A graph of the persistent launch, replayed with a new input each time.
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  cuda::gemv_chain_run(c.ops.data(), n, x0, ops_dev, counters, cuda::GemvChainMode::persistent, s);
  CUDA_CHECK(cudaStreamEndCapture(s, &g));
  CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  for (int run = 0; run < 2; ++run) {
    SCOPED_TRACE("graph replay " + std::to_string(run + 1));
    new_input();
    clear();
    cuda::gemv_chain_run(c.ops.data(), n, x0, ops_dev, nullptr, cuda::GemvChainMode::per_op, nullptr);
    const auto want = outputs(c);
    clear();
    CUDA_CHECK(cudaGraphLaunch(ge, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    ASSERT_EQ(outputs(c), want) << "the replayed persistent launch's outputs differ";
  }
  CUDA_CHECK(cudaGraphExecDestroy(ge));
  CUDA_CHECK(cudaGraphDestroy(g));
  CUDA_CHECK(cudaStreamDestroy(s));
  // Shapes it refuses, each with a reason naming the op and the value.
  EXPECT_FALSE(cuda::gemv_chain_supported(c.ops.data(), n, &why, cuda::GemvChainShape{4, 8}));
  EXPECT_NE(why.find("4 warps and 8 KiB"), std::string::npos) << why;
  std::vector<cuda::GemvChainOp> bad = {c.ops[0], c.ops[1]};
  bad[1].cols = 1536;
  EXPECT_FALSE(cuda::gemv_chain_supported(bad.data(), 2, &why));
  EXPECT_NE(why.find("op 1: cols 1536"), std::string::npos) << why;
  bad = {c.ops[0], c.ops[1]};
  bad[1].dep = 1;
  EXPECT_FALSE(cuda::gemv_chain_supported(bad.data(), 2, &why));
  EXPECT_NE(why.find("op 1: dep 1"), std::string::npos) << why;
  bad = {c.ops[12], c.ops[1]};  // 7 rows cannot feed 1024 cols
  bad[0].dep = -1;
  bad[1].dep = 0;
  EXPECT_FALSE(cuda::gemv_chain_supported(bad.data(), 2, &why));
  EXPECT_NE(why.find("fewer than its 1024 cols"), std::string::npos) << why;
}

}  // namespace

}  // namespace cuda_gemv_chain_test

#endif
