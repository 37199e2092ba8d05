// offload_bench.cpp: the host->device link as the offload provider sees it (Google
// Benchmark, manual time; its own binary, moebench_offload_bench). Lets a result state
// "miss bytes / measured H2D" with the H2D measured in the same process.
//
//   h2d_pinned/BYTES     cudaMemcpyAsync from page-locked memory into the device,
//                        CUDA events around the copy; one Mixtral-8x7B expert
//                        (3 x 4096 x 14336 x 2 = 352,321,536 B) and smaller sizes
//   h2d_pageable/BYTES   the same from ordinary memory (what never to use)
//   h2d_pitched/W/P      a 2D copy of 4096 rows of W bytes, P apart, from page-locked
//                        memory (a split expert's w2 block); d2d_pitched/W/P the same
//                        from device memory
//   provider_miss/TIER   OffloadProvider::acquire of 2 experts that both miss (LRU,
//                        2 slots, Mixtral-shaped experts), timed from acquire() to the
//                        compute stream passing its waits (events on the compute stream
//                        before acquire and after it: the time a layer waits for its
//                        loads); bytes = 2 experts. TIER = pinned, and disk when
//                        MOEBENCH_BENCH_DIR names a folder on a real disk (a 1-layer
//                        checkpoint of 8 experts, 2.8 GB, is written there and removed).
// Without a GPU it prints why and exits 0.
#include <benchmark/benchmark.h>

#if MOEBENCH_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/offload_provider.h"
#include "engine/expert_host_store.h"
#include "engine/synth_checkpoint.h"
#include "engine/weight_source.h"

using namespace moebench;

namespace {

constexpr uint64_t kExpertBytes = 3ull * 4096 * 14336 * 2;  // 352,321,536

struct Ctx {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  void* dev = nullptr;     // kExpertBytes
  void* pinned = nullptr;  // kExpertBytes
  std::vector<uint8_t> pageable;
};
Ctx* g = nullptr;

// Times `copy` (enqueued on the stream) with CUDA events around it, after one untimed
// warm-up; reports `bytes` per copy as a rate.
template <class Copy>
void time_copies(benchmark::State& state, uint64_t bytes, Copy&& copy) {
  copy();
  CUDA_CHECK(cudaStreamSynchronize(g->stream));
  for (auto _ : state) {
    CUDA_CHECK(cudaEventRecord(g->start, g->stream));
    copy();
    CUDA_CHECK(cudaEventRecord(g->stop, g->stream));
    CUDA_CHECK(cudaEventSynchronize(g->stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, g->start, g->stop));
    state.SetIterationTime(ms * 1e-3);
  }
  state.counters["bytes"] = benchmark::Counter(static_cast<double>(bytes), benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
}

void bm_h2d(benchmark::State& state, bool pinned) {
  const uint64_t bytes = static_cast<uint64_t>(state.range(0));
  const void* src = pinned ? g->pinned : static_cast<const void*>(g->pageable.data());
  time_copies(state, bytes, [&] { CUDA_CHECK(cudaMemcpyAsync(g->dev, src, bytes, cudaMemcpyHostToDevice, g->stream)); });
}

// A split expert's pitched copy (w2's block of columns): kPitchedRows rows of WIDTH bytes,
// PITCH apart at the source, packed at the destination; from page-locked memory
// (h2d_pitched) or from device memory (d2d_pitched: the same packing done on the device
// after one contiguous copy). Mixtral's int4 w2 rows: values 7168 B (a 256-row part 128
// B), scales 224 B (a part 4 B).
constexpr int64_t kPitchedRows = 4096;
void bm_pitched(benchmark::State& state, bool from_host) {
  const uint64_t width = static_cast<uint64_t>(state.range(0)), pitch = static_cast<uint64_t>(state.range(1));
  const uint8_t* src = from_host ? static_cast<const uint8_t*>(g->pinned) : static_cast<const uint8_t*>(g->dev) + kExpertBytes / 2;
  time_copies(state, width * kPitchedRows, [&] {
    CUDA_CHECK(cudaMemcpy2DAsync(g->dev, width, src, pitch, width, kPitchedRows,
                                 from_host ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice, g->stream));
  });
}

// Mixtral-shaped, one layer, 8 experts.
ModelConfig one_layer_mixtral() {
  ModelConfig c = preset_config("mixtral-8x7b");
  c.num_hidden_layers = 1;
  return c;
}

struct ProviderCase {
  std::unique_ptr<WeightSource> ws;
  std::unique_ptr<ExpertHostStore> store;
  std::string ckpt_dir;
};
ProviderCase* g_pinned = nullptr;
ProviderCase* g_disk = nullptr;

void bm_provider_miss(benchmark::State& state, ProviderCase* pc) {
  if (!pc || !pc->store) {
    state.SkipWithError("tier not prepared (disk: set MOEBENCH_BENCH_DIR to a folder on a real disk)");
    return;
  }
  const ExpertHostStore& st = *pc->store;
  cuda::DeviceArena arena(2 * cuda::OffloadProvider::slot_stride(st), "bench arena");
  cuda::OffloadOptions o;
  o.policy = "lru";
  o.slots = 2;
  cuda::OffloadProvider prov(arena, st, arena.capacity(), o);
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<ExpertWeights> w(st.n_experts());
  int step = 0;
  auto pair = [&](int s) {
    const int base = (2 * s) % st.n_experts();  // 8 experts, 2 slots: every access misses
    return std::vector<int32_t>{base, base + 1};
  };
  {  // warm-up (first touches, event pool)
    auto ids = pair(step);
    prov.acquire(step++, 0, ids.data(), 2, w.data(), g->stream);
    prov.release(0, g->stream);
    CUDA_CHECK(cudaStreamSynchronize(g->stream));
  }
  for (auto _ : state) {
    auto ids = pair(step);
    CUDA_CHECK(cudaEventRecord(a, g->stream));
    prov.acquire(step++, 0, ids.data(), 2, w.data(), g->stream);
    CUDA_CHECK(cudaEventRecord(b, g->stream));
    prov.release(0, g->stream);
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    state.SetIterationTime(ms * 1e-3);
  }
  prov.finish();
  const double bytes = 2.0 * static_cast<double>(st.expert_bytes());
  state.counters["bytes"] =
      benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.counters["copy_GBps"] = prov.stats().h2d_gbps();  // copy-stream events only (no pread)
  state.counters["read_ms_per_expert"] =
      prov.stats().demand_loads ? prov.stats().read_ns * 1e-6 / static_cast<double>(prov.stats().demand_loads) : 0;
  state.counters["miss_rate"] = 1.0 - prov.cache_counters().hit_rate();
  state.SetLabel(prov.describe());
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (!cuda::gpu_available()) {
    std::printf("moebench_offload_bench: no GPU present; link benchmarks skipped\n");
    return 0;
  }
  {
    const cuda::DeviceInfo d = cuda::device_info();
    benchmark::AddCustomContext("device", d.name);
    benchmark::AddCustomContext("device_memory_bytes", std::to_string(d.total_bytes));
  }
  Ctx ctx;
  g = &ctx;
  CUDA_CHECK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaEventCreate(&ctx.start));
  CUDA_CHECK(cudaEventCreate(&ctx.stop));
  CUDA_CHECK(cudaMalloc(&ctx.dev, kExpertBytes));
  CUDA_CHECK(cudaHostAlloc(&ctx.pinned, kExpertBytes, cudaHostAllocPortable));
  std::memset(ctx.pinned, 1, kExpertBytes);
  ctx.pageable.assign(kExpertBytes, 1);

  for (int64_t b : {int64_t{1} << 20, int64_t{16} << 20, int64_t{112} << 20, static_cast<int64_t>(kExpertBytes)}) {
    benchmark::RegisterBenchmark(("h2d_pinned/" + std::to_string(b)).c_str(), bm_h2d, true)
        ->Arg(b)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->MinTime(0.3);
  }
  for (const auto& [width, pitch] : std::vector<std::pair<int64_t, int64_t>>{
           {4, 224}, {56, 224}, {112, 224}, {128, 7168}, {512, 7168}, {1792, 7168}, {3584, 7168}}) {
    for (bool host : {true, false})
      benchmark::RegisterBenchmark(
          (std::string(host ? "h2d_pitched/" : "d2d_pitched/") + std::to_string(width) + "/" + std::to_string(pitch)).c_str(),
          bm_pitched, host)
          ->Args({width, pitch})
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond)
          ->MinTime(0.1);
  }
  benchmark::RegisterBenchmark("h2d_pageable/352321536", bm_h2d, false)
      ->Arg(static_cast<int64_t>(kExpertBytes))
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->Iterations(5);

  // The pinned tier: a Mixtral-shaped layer of 8 experts in page-locked memory.
  ProviderCase pinned_case, disk_case;
  {
    HostStoreOptions so;
    so.progress = 0;
    so.chunk_bytes = 1;  // one expert per allocation: 8 threads pin and fill in parallel
    pinned_case.ws = std::make_unique<WeightSource>(WeightSource::synthetic(one_layer_mixtral(), 1, DType::bf16));
    pinned_case.store = ExpertHostStore::pinned(*pinned_case.ws, cuda::pinned_host_allocator(), so);
    std::printf("pinned store: %s\n", pinned_case.store->describe().c_str());
    g_pinned = &pinned_case;
  }
  if (const char* dir = std::getenv("MOEBENCH_BENCH_DIR"); dir && *dir) {
    disk_case.ckpt_dir = std::string(dir) + "/offload_bench_ckpt";
    write_synthetic_checkpoint(one_layer_mixtral(), 1, DType::bf16, disk_case.ckpt_dir);
    disk_case.ws = std::make_unique<WeightSource>(WeightSource::checkpoint(disk_case.ckpt_dir));
    disk_case.store = ExpertHostStore::disk(*disk_case.ws);
    std::printf("disk store: %s\n", disk_case.store->describe().c_str());
    g_disk = &disk_case;
  }
  std::fflush(stdout);
  benchmark::RegisterBenchmark("provider_miss/pinned", bm_provider_miss, g_pinned)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->MinTime(0.5);
  benchmark::RegisterBenchmark("provider_miss/disk", bm_provider_miss, g_disk)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->Iterations(8);

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  disk_case.store.reset();
  if (!disk_case.ckpt_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(disk_case.ckpt_dir, ec);
  }
  pinned_case.store.reset();
  CUDA_CHECK(cudaFreeHost(ctx.pinned));
  CUDA_CHECK(cudaFree(ctx.dev));
  CUDA_CHECK(cudaEventDestroy(ctx.start));
  CUDA_CHECK(cudaEventDestroy(ctx.stop));
  CUDA_CHECK(cudaStreamDestroy(ctx.stream));
  return 0;
}

#else  // built without CUDA

#include <cstdio>
int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  std::printf("moebench_offload_bench: built without CUDA; link benchmarks skipped\n");
  return 0;
}

#endif  // MOEBENCH_HAVE_CUDA
