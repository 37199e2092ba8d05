// nccl_test.cpp: the NCCL communicator (engine/cuda/nccl_comm.h) on every visible GPU,
// one thread per GPU: all-reduce of known vectors (f32 and bf16) must give their exact
// sum (small integers: every partial sum is exact in either type), and the all-to-all
// must deliver each rank's rows, tagged with (source, destination, row, element), to
// the right place in order; an all-reduce in NCCL symmetric memory gives the same bits
// on every rank (at two ranks: each element's a + b, rounded once). Skipped with fewer
// than two GPUs or without NCCL.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_NCCL
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/check.cuh"
#include "engine/cuda/nccl_comm.h"
#include "engine/dtype.h"

namespace nccl_test {

using namespace moebench;

namespace {

int visible_gpus() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

std::vector<int> all_devices() {
  std::vector<int> d(visible_gpus());
  std::iota(d.begin(), d.end(), 0);
  return d;
}

}  // namespace

TEST(Nccl, AllReduceSumsAKnownVectorAcrossTheVisibleGpus) {
  if (visible_gpus() < 2) GTEST_SKIP() << "fewer than 2 GPUs: NCCL test skipped";
  cuda::NcclComms comms(all_devices());
  const int n = comms.size();
  std::printf("NCCL %s over %d GPUs\n", cuda::NcclComms::library_version().c_str(), n);
  constexpr size_t count = (1 << 20) + 3;  // not a multiple of anything NCCL chunks by
  std::vector<int64_t> bad_f32(n, 0), bad_bf16(n, 0);
  cuda::run_per_rank(comms, [&](int r) {
    // f32: x_r[i] = i % 1000 + 1000 r; sums stay below 2^24.
    std::vector<float> h(count);
    for (size_t i = 0; i < count; ++i) h[i] = static_cast<float>(i % 1000 + 1000 * r);
    // bf16: x_r[i] = i % 16 + r; sums stay below 256, exact in bf16's 8 significant bits.
    std::vector<uint16_t> hb(count);
    for (size_t i = 0; i < count; ++i) hb[i] = f32_to_bf16(static_cast<float>(i % 16 + r));
    float* d = nullptr;
    uint16_t* db = nullptr;
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d), count * sizeof(float)));
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&db), count * sizeof(uint16_t)));
    CUDA_CHECK(cudaMemcpy(d, h.data(), count * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(db, hb.data(), count * sizeof(uint16_t), cudaMemcpyHostToDevice));
    comms.all_reduce_sum(r, d, d, count, DType::f32);
    comms.all_reduce_sum(r, db, db, count, DType::bf16);
    comms.synchronize(r);
    CUDA_CHECK(cudaMemcpy(h.data(), d, count * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(hb.data(), db, count * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFree(d));
    CUDA_CHECK(cudaFree(db));
    const double ranks = n * (n - 1) / 2.0;
    for (size_t i = 0; i < count; ++i) {
      if (h[i] != static_cast<float>(n * static_cast<double>(i % 1000) + 1000 * ranks)) ++bad_f32[r];
      if (bf16_to_f32(hb[i]) != static_cast<float>(n * static_cast<double>(i % 16) + ranks)) ++bad_bf16[r];
    }
  });
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(bad_f32[r], 0) << "rank " << r << ": f32 elements off the sum";
    EXPECT_EQ(bad_bf16[r], 0) << "rank " << r << ": bf16 elements off the sum";
  }
}

// The tensor-parallel step's all-reduce (fp32, in place) on buffers from alloc_symmetric,
// at a decode step's size and a batch's: every rank ends with the same bits (the router
// after it must pick the same experts on every rank), at two ranks the float sum of the
// two inputs.
TEST(Nccl, SymmetricAllReduceGivesEveryRankTheSameBits) {
  if (visible_gpus() < 2) GTEST_SKIP() << "fewer than 2 GPUs: NCCL test skipped";
  cuda::NcclComms comms(all_devices());
  const int n = comms.size();
  constexpr size_t max_count = 32 * 4096;
  std::string why;
  const std::vector<void*> bufs = comms.alloc_symmetric(max_count * sizeof(float), &why);
  if (bufs.empty() && why.find("has no symmetric memory") != std::string::npos) GTEST_SKIP() << why;
  ASSERT_EQ(static_cast<int>(bufs.size()), n) << why;
  auto input = [](int r, size_t count) {
    std::mt19937 g(1234 + r);
    std::normal_distribution<float> d(0.0f, 3.0f);
    std::vector<float> x(count);
    for (auto& v : x) v = d(g);
    return x;
  };
  for (size_t count : {size_t{4096}, max_count}) {
    std::vector<std::vector<float>> out(n);
    cuda::run_per_rank(comms, [&](int r) {
      const std::vector<float> x = input(r, count);
      CUDA_CHECK(cudaMemcpy(bufs[r], x.data(), count * sizeof(float), cudaMemcpyHostToDevice));
      comms.all_reduce_sum(r, bufs[r], bufs[r], count, DType::f32);
      comms.synchronize(r);
      out[r].resize(count);
      CUDA_CHECK(cudaMemcpy(out[r].data(), bufs[r], count * sizeof(float), cudaMemcpyDeviceToHost));
    });
    for (int r = 1; r < n; ++r)
      EXPECT_EQ(0, std::memcmp(out[r].data(), out[0].data(), count * sizeof(float))) << "rank " << r << ", " << count;
    if (n == 2) {
      const std::vector<float> a = input(0, count), b = input(1, count);
      size_t off = 0;
      for (size_t i = 0; i < count; ++i) off += out[0][i] != a[i] + b[i];
      EXPECT_EQ(off, 0u) << count << " floats";
    }
  }
}

TEST(Nccl, AllToAllDeliversEveryRowInOrder) {
  if (visible_gpus() < 2) GTEST_SKIP() << "fewer than 2 GPUs: NCCL test skipped";
  cuda::NcclComms comms(all_devices());
  const int n = comms.size();
  constexpr int elems = 64;  // a row
  // rows(s, d): 0..3 rows from s to d, some zero, the diagonal too.
  auto rows = [](int s, int d) { return static_cast<int64_t>((3 * s + d) % 4); };
  auto tag = [](int s, int d, int64_t row, int j) { return static_cast<float>(s * 100000 + d * 10000 + row * 100 + j); };
  std::vector<int64_t> bad(n, 0);
  cuda::run_per_rank(comms, [&](int r) {
    std::vector<int64_t> send_rows(n), recv_rows(n);
    for (int p = 0; p < n; ++p) {
      send_rows[p] = rows(r, p);
      recv_rows[p] = rows(p, r);
    }
    const int64_t ns = std::accumulate(send_rows.begin(), send_rows.end(), int64_t{0});
    const int64_t nr = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});
    std::vector<float> h;
    for (int p = 0; p < n; ++p)
      for (int64_t i = 0; i < send_rows[p]; ++i)
        for (int j = 0; j < elems; ++j) h.push_back(tag(r, p, i, j));
    float *ds = nullptr, *dr = nullptr;
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ds), (ns + 1) * elems * sizeof(float)));
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dr), (nr + 1) * elems * sizeof(float)));
    CUDA_CHECK(cudaMemcpy(ds, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    comms.all_to_all_rows(r, ds, send_rows, dr, recv_rows, elems, DType::f32);
    comms.synchronize(r);
    std::vector<float> got(static_cast<size_t>(nr) * elems);
    CUDA_CHECK(cudaMemcpy(got.data(), dr, got.size() * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFree(ds));
    CUDA_CHECK(cudaFree(dr));
    size_t k = 0;
    for (int p = 0; p < n; ++p)
      for (int64_t i = 0; i < recv_rows[p]; ++i)
        for (int j = 0; j < elems; ++j)
          if (got[k++] != tag(p, r, i, j)) ++bad[r];
  });
  for (int r = 0; r < n; ++r) EXPECT_EQ(bad[r], 0) << "rank " << r << ": elements not where the plan puts them";
}

}  // namespace nccl_test

#else
TEST(Nccl, SkippedWithoutNccl) { GTEST_SKIP() << "built without CUDA or without nccl.h: NCCL tests skipped"; }
#endif
