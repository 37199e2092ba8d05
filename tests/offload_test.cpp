// offload_test.cpp: the host tiers of the expert store (everywhere) and the CUDA
// offload provider (skipped without a GPU).
//   host:  pinned store contents == WeightSource values (synthetic and checkpoint);
//          disk tier reads == the checkpoint's bytes, through O_DIRECT or fadvise, never
//          plainly from the page cache; disk tier refuses synthetic and non-bf16 weights;
//          slot planning: too small a budget names the minimum.
//   GPU:   after acquire(), the slot contents (read on the compute stream, as the model
//          would, then copied back) equal the expert's weights, for both tiers and with
//          prefetches in flight; the provider's hits/misses/loads equal simulate() for the
//          same mixtral-locality trace, policy and capacity (lru, lfu, prefetch, belady,
//          static, none); counters (bytes, load time, stall) are filled.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "engine/expert_host_store.h"
#include "engine/synth_checkpoint.h"
#include "common/units.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "tests/test_util.h"
#include "variants/routing.h"
#include "variants/simulator.h"

#if MOEBENCH_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/offload_provider.h"
#endif

namespace offload_test {

using namespace moebench;

namespace {

// A small Mixtral-shaped config: 4 layers x 8 experts, top-2 (like `tiny`, fewer tokens).
ModelConfig small_cfg(int layers = 4) {
  ModelConfig c = preset_config("tiny");
  c.num_hidden_layers = layers;
  return c;
}

const char* kW[3] = {"w1", "w3", "w2"};

// The expert's w1 | w3 | w2 bf16 bytes as the WeightSource gives them.
std::vector<uint16_t> expected_expert(const WeightSource& ws, int l, int e) {
  const ModelConfig& c = ws.config();
  const size_t m = static_cast<size_t>(c.hidden_size) * c.intermediate_size;
  std::vector<uint16_t> out(3 * m);
  for (int w = 0; w < 3; ++w) ws.read_bf16(tensor_spec(c, names::expert(l, e, kW[w])), out.data() + m * w);
  return out;
}

HostStoreOptions quiet(int threads = 3, uint64_t chunk = 1) {
  HostStoreOptions o;
  o.threads = threads;
  o.chunk_bytes = chunk;  // below one expert: one expert per chunk, many chunks
  o.progress = 0;
  return o;
}

}  // namespace

TEST(HostStore, PinnedEqualsWeightSourceSynthetic) {
  const ModelConfig c = small_cfg();
  const WeightSource ws = WeightSource::synthetic(c, 7, DType::bf16);
  for (uint64_t chunk : {uint64_t{1}, uint64_t{1} << 20, uint64_t{1} << 40}) {
    auto st = ExpertHostStore::pinned(ws, aligned_host_allocator(), quiet(3, chunk));
    ASSERT_EQ(st->tier(), HostTier::pinned);
    EXPECT_EQ(st->expert_bytes(), 3ull * c.hidden_size * c.intermediate_size * 2);
    EXPECT_EQ(st->host_bytes(), st->expert_bytes() * c.num_hidden_layers * c.num_local_experts);
    for (int l = 0; l < c.num_hidden_layers; ++l)
      for (int e = 0; e < c.num_local_experts; ++e) {
        auto want = expected_expert(ws, l, e);
        ASSERT_EQ(0, std::memcmp(st->expert(l, e), want.data(), st->expert_bytes()))
            << "expert (" << l << ", " << e << ") chunk " << chunk;
      }
    EXPECT_GT(st->pin_seconds(), 0.0);
    EXPECT_NE(st->describe().find("pinned: 32 experts"), std::string::npos) << st->describe();
  }
}

TEST(HostStore, PinnedFromCheckpointAndDiskReadsTheFileBytes) {
  test::TempDir dir;
  const ModelConfig c = small_cfg();
  // Small shards so experts spread over several files.
  write_synthetic_checkpoint(c, 11, DType::bf16, dir.str(), 2ull << 20);
  const WeightSource ck = WeightSource::checkpoint(dir.str());
  const WeightSource syn = WeightSource::synthetic(c, 11, DType::bf16);

  auto pinned = ExpertHostStore::pinned(ck, aligned_host_allocator(), quiet());
  auto disk = ExpertHostStore::disk(ck);
  ASSERT_EQ(disk->tier(), HostTier::disk);
  EXPECT_NE(disk->read_mode(), DiskReadMode::page_cache);
  const std::string d = disk->describe();
  EXPECT_TRUE(d.find("O_DIRECT") != std::string::npos || d.find("POSIX_FADV_DONTNEED") != std::string::npos) << d;
  std::printf("disk tier here: %s\n", d.c_str());

  const uint64_t mb = disk->matrix_bytes();
  void* staging = std::aligned_alloc(ExpertHostStore::kStagingAlign, disk->staging_bytes());
  for (int l = 0; l < c.num_hidden_layers; ++l)
    for (int e = 0; e < c.num_local_experts; ++e) {
      auto want = expected_expert(syn, l, e);
      ASSERT_EQ(0, std::memcmp(pinned->expert(l, e), want.data(), pinned->expert_bytes())) << l << "," << e;
      std::memset(staging, 0xab, disk->staging_bytes());
      const StagedExpert st = disk->read_expert(l, e, staging);
      const uint8_t* s = static_cast<const uint8_t*>(staging);
      const uint64_t off[3] = {st.w1, st.w3, st.w2};
      for (int w = 0; w < 3; ++w) {
        const TensorSpec spec = tensor_spec(c, names::expert(l, e, kW[w]));
        const TensorView& v = ck.ckpt()->get(spec.name, spec.shape);
        ASSERT_EQ(v.nbytes, mb);
        ASSERT_LE(off[w] + mb, disk->staging_bytes());
        ASSERT_EQ(0, std::memcmp(s + off[w], v.data, mb)) << spec.name << " (file bytes)";
        ASSERT_EQ(0, std::memcmp(s + off[w], want.data() + (mb / 2) * w, mb)) << spec.name << " (values)";
      }
    }
  std::free(staging);
  EXPECT_GE(disk->bytes_read(), 3 * mb * c.num_hidden_layers * c.num_local_experts);

  // The read-bandwidth probe reads real tensors the same way, and is not counted.
  const uint64_t before = disk->bytes_read();
  EXPECT_GT(disk->measure_read_gbps(3, 8 * mb), 0.0);
  EXPECT_EQ(disk->bytes_read(), before);
  EXPECT_THROW(pinned->measure_read_gbps(), Error);
  EXPECT_THROW(disk->measure_read_gbps(0), Error);
}

TEST(HostStore, DiskTierNeedsACheckpointOfBf16Experts) {
  const ModelConfig c = small_cfg(2);
  const WeightSource ws = WeightSource::synthetic(c, 1, DType::bf16);
  try {
    ExpertHostStore::disk(ws);
    FAIL() << "disk tier over synthetic weights must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs a checkpoint"), std::string::npos) << e.what();
  }
  test::TempDir dir;
  write_synthetic_checkpoint(c, 1, DType::f32, dir.str());
  const WeightSource ck = WeightSource::checkpoint(dir.str());
  try {
    ExpertHostStore::disk(ck);
    FAIL() << "disk tier over f32 experts must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected BF16"), std::string::npos) << e.what();
  }
  // The pinned tier converts instead.
  auto st = ExpertHostStore::pinned(ck, aligned_host_allocator(), quiet());
  auto want = expected_expert(ck, 1, 3);
  EXPECT_EQ(0, std::memcmp(st->expert(1, 3), want.data(), st->expert_bytes()));
  EXPECT_THROW(parse_host_tier("resident"), Error);
}

#if MOEBENCH_HAVE_CUDA

TEST(OffloadPlan, TooSmallBudgetNamesTheMinimum) {
  const WeightSource ws = WeightSource::synthetic(small_cfg(2), 1, DType::bf16);
  auto st = ExpertHostStore::pinned(ws, aligned_host_allocator(), quiet());
  const uint64_t stride = cuda::OffloadProvider::slot_stride(*st);
  const uint64_t cap = 1ull << 30;
  const uint64_t budget = stride + stride / 2;  // 1 slot fits, top_k = 2 needed
  try {
    cuda::OffloadProvider::plan_slots(cap, *st, budget, cuda::OffloadOptions{});
    FAIL() << "one slot must not be enough";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("top_k = 2"), std::string::npos) << m;
    EXPECT_NE(m.find(format_bytes(cap - budget + 2 * stride)), std::string::npos) << m;  // minimum GPU budget
    EXPECT_NE(m.find(format_bytes(2 * stride)), std::string::npos) << m;               // minimum for slots
  }
  cuda::OffloadOptions o;
  EXPECT_EQ(cuda::OffloadProvider::plan_slots(cap, *st, 5 * stride + 7, o), 5);
  EXPECT_EQ(cuda::OffloadProvider::plan_slots(cap, *st, 1000 * stride, o), 16);  // at most every expert
  o.slots = 4;
  EXPECT_EQ(cuda::OffloadProvider::plan_slots(cap, *st, 4 * stride, o), 4);
  try {
    o.slots = 6;
    cuda::OffloadProvider::plan_slots(cap, *st, 4 * stride, o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cache_slots = 6"), std::string::npos) << e.what();
  }
}

namespace {

class Offload : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: offload provider tests skipped";
    CUDA_CHECK(cudaStreamCreateWithFlags(&cs_, cudaStreamNonBlocking));
  }
  void TearDown() override {
    if (cs_) cudaStreamDestroy(cs_);
  }
  cudaStream_t cs_ = nullptr;
};

RoutingTrace locality_trace(const ModelConfig& c, int steps, uint64_t seed) {
  RoutingParams p{c.num_hidden_layers, c.num_local_experts, c.num_experts_per_tok, seed, ""};
  auto src = make_routing_source(parse_routing_spec("mixtral-locality"), p);
  return generate_trace(*src, p, steps, 1);
}

// Drives the provider over a trace as the model does; every `verify_every` steps copies
// the experts each layer got (on the compute stream, device to device, as the expert
// compute would read them) and checks them against the reference store.
struct DriveResult {
  int64_t checked = 0;
};
DriveResult drive(cuda::OffloadProvider& prov, const RoutingTrace& t, cudaStream_t cs, const ExpertHostStore* ref,
                  int verify_every) {
  DriveResult out;
  const int L = t.n_layers, E = t.n_experts, K = t.top_k;
  const uint64_t eb = prov.slot_bytes();
  std::vector<ExpertWeights> w(E);
  // One step's worth of copies: L layers x (up to) n_tokens*K experts.
  size_t max_tok = 1;
  for (auto& s : t.steps) max_tok = std::max<size_t>(max_tok, s.n_tokens);
  const size_t per_step = static_cast<size_t>(L) * std::min<size_t>(E, max_tok * K);
  void* dev = nullptr;
  void* host = nullptr;
  if (ref) {
    CUDA_CHECK(cudaMalloc(&dev, per_step * eb));
    CUDA_CHECK(cudaMallocHost(&host, per_step * eb));
  }
  std::vector<std::pair<int, int>> copied;
  for (int s = 0; s < t.n_steps(); ++s) {
    const bool verify = ref && (s % verify_every == 0);
    copied.clear();
    for (int l = 0; l < L; ++l) {
      auto ids = t.ids(s, l);
      prov.acquire(s, l, ids.data(), static_cast<int>(ids.size()), w.data(), cs);
      if (prov.wants_prediction() && l + 1 < L) {
        auto next = t.ids(s, l + 1);  // the oracle prediction, as simulate() with accuracy 1
        prov.prefetch(s, l + 1, next.data(), static_cast<int>(next.size()));
      }
      if (verify) {
        std::vector<char> seen(E, 0);
        for (int32_t e : ids) {
          if (seen[e]) continue;
          seen[e] = 1;
          EXPECT_NE(w[e].w1, nullptr);
          const uint64_t mb = eb / 3;
          EXPECT_EQ(static_cast<const uint8_t*>(w[e].w3), static_cast<const uint8_t*>(w[e].w1) + mb);
          EXPECT_EQ(static_cast<const uint8_t*>(w[e].w2), static_cast<const uint8_t*>(w[e].w1) + 2 * mb);
          uint8_t* d = static_cast<uint8_t*>(dev) + copied.size() * eb;
          CUDA_CHECK(cudaMemcpyAsync(d, w[e].w1, eb, cudaMemcpyDeviceToDevice, cs));
          copied.emplace_back(l, e);
        }
      }
      prov.release(l, cs);
    }
    if (verify) {
      CUDA_CHECK(cudaMemcpyAsync(host, dev, copied.size() * eb, cudaMemcpyDeviceToHost, cs));
      CUDA_CHECK(cudaStreamSynchronize(cs));
      for (size_t i = 0; i < copied.size(); ++i) {
        auto [l, e] = copied[i];
        const bool same = std::memcmp(static_cast<uint8_t*>(host) + i * eb, ref->expert(l, e), eb) == 0;
        EXPECT_TRUE(same) << "step " << s << ": slot contents of expert (" << l << ", " << e << ") differ";
        if (!same) break;
        ++out.checked;
      }
    }
  }
  CUDA_CHECK(cudaStreamSynchronize(cs));
  prov.finish();
  if (dev) cudaFree(dev);
  if (host) cudaFreeHost(host);
  return out;
}

}  // namespace

TEST_F(Offload, SlotContentsEqualTheExpertsForEveryTier) {
  const ModelConfig c = small_cfg();
  test::TempDir dir;
  write_synthetic_checkpoint(c, 5, DType::bf16, dir.str(), 2ull << 20);
  const WeightSource ck = WeightSource::checkpoint(dir.str());
  auto ref = ExpertHostStore::pinned(ck, aligned_host_allocator(), quiet());
  const RoutingTrace t = locality_trace(c, 40, 3);
  cuda::DeviceArena arena(64ull << 20, "offload test arena");
  for (HostTier tier : {HostTier::pinned, HostTier::disk}) {
    auto st = ExpertHostStore::make(tier, ck, cuda::pinned_host_allocator(), quiet());
    for (const char* policy : {"lru", "prefetch", "none"}) {
      SCOPED_TRACE(std::string(host_tier_name(tier)) + " " + policy);
      cuda::OffloadOptions o;
      o.policy = policy;
      o.slots = 5;
      cuda::OffloadProvider prov(arena, *st, arena.capacity(), o);
      EXPECT_EQ(prov.n_slots(), 5);
      auto r = drive(prov, t, cs_, ref.get(), 1);
      EXPECT_GT(r.checked, 40 * c.num_hidden_layers);
      EXPECT_GT(prov.stats().demand_loads, 0);
      EXPECT_GT(prov.stats().bytes, 0);
      EXPECT_GT(prov.stats().copy_ns, 0);
      std::printf("%s: %lld loads, %.2f GB/s measured on the copy stream, %lld stalls (%.3f ms)\n",
                  prov.describe().c_str(), static_cast<long long>(prov.stats().demand_loads + prov.stats().prefetch_loads),
                  prov.stats().h2d_gbps(), static_cast<long long>(prov.stats().stalls), prov.stats().stall_ns * 1e-6);
    }
  }
  EXPECT_EQ(arena.stats().used_bytes, 0u);  // the slots went back
}

TEST_F(Offload, HitsAndMissesEqualTheSimulator) {
  const ModelConfig c = small_cfg(8);
  const WeightSource ws = WeightSource::synthetic(c, 9, DType::bf16);
  auto st = ExpertHostStore::pinned(ws, cuda::pinned_host_allocator(), quiet(4, 1ull << 30));
  EXPECT_TRUE(st->page_locked());
  const RoutingTrace t = locality_trace(c, 300, 17);
  cuda::DeviceArena arena(64ull << 20, "offload test arena");
  SimOptions so;
  so.link.expert_bytes = static_cast<int64_t>(st->expert_bytes());
  so.prediction.accuracy = 1.0;
  for (int cap : {2, 5, 12, 24}) {
    for (const char* policy : {"lru", "lfu", "prefetch", "belady", "static", "none"}) {
      SCOPED_TRACE(std::string(policy) + " capacity " + std::to_string(cap));
      const SimResult sim = simulate(t, policy, cap, so);
      cuda::OffloadOptions o;
      o.policy = policy;
      o.slots = cap;
      o.trace = &t;
      cuda::OffloadProvider prov(arena, *st, arena.capacity(), o);
      drive(prov, t, cs_, cap == 5 ? st.get() : nullptr, 7);  // contents checked at one capacity
      const CacheCounters& got = prov.cache_counters();
      EXPECT_EQ(got.accesses, sim.counters.accesses);
      EXPECT_EQ(got.hits, sim.counters.hits);
      EXPECT_EQ(got.misses, sim.counters.misses);
      EXPECT_EQ(got.prefetch_loads, sim.counters.prefetch_loads);
      EXPECT_EQ(got.warm_loads, sim.counters.warm_loads);
      EXPECT_EQ(got.prefetch_hits, sim.counters.prefetch_hits);
      EXPECT_EQ(got.prefetch_wasted, sim.counters.prefetch_wasted);
      EXPECT_EQ(got.hit_rate(), sim.hit_rate());
      // The profiler counters agree with the cache (hits, misses; loads once finished).
      const profiler::ExpertStats& tot = prov.counters()->total();
      EXPECT_EQ(tot.hits, sim.counters.hits);
      EXPECT_EQ(tot.misses, sim.counters.misses);
      EXPECT_EQ(tot.loads, sim.counters.misses + sim.counters.prefetch_loads);
      EXPECT_EQ(tot.bytes_moved, sim.demand_bytes + sim.prefetch_bytes);
      EXPECT_EQ(prov.stats().warm_loads, sim.counters.warm_loads);
      EXPECT_EQ(prov.stats().bytes, sim.bytes_moved());
      if (tot.loads > 0) {
        EXPECT_GT(tot.load_ns, 0);
      }
      int64_t usage = 0;
      for (int64_t u : prov.counters()->usage_matrix()) usage += u;
      EXPECT_EQ(usage, sim.counters.accesses);
    }
  }
}

TEST_F(Offload, PreloadAllAndBudgetErrors) {
  const ModelConfig c = small_cfg(2);
  const WeightSource ws = WeightSource::synthetic(c, 2, DType::bf16);
  auto st = ExpertHostStore::pinned(ws, cuda::pinned_host_allocator(), quiet());
  cuda::DeviceArena arena(16ull << 20, "offload test arena");
  const uint64_t stride = cuda::OffloadProvider::slot_stride(*st);
  {
    cuda::OffloadOptions o;
    o.policy = "preload-all";
    size_t free0 = 0, free1 = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free0, &total));
    cuda::OffloadProvider prov(arena, *st, arena.capacity(), o);  // 16 experts fit: all resident
    CUDA_CHECK(cudaMemGetInfo(&free1, &total));
    // The slots come from the arena: outside it, only the stream and events (driver-side).
    const int64_t outside = static_cast<int64_t>(free0) - static_cast<int64_t>(free1);
    std::printf("device memory taken outside the arena by the provider: %lld bytes\n", static_cast<long long>(outside));
    EXPECT_LT(outside, int64_t{64} << 20);
    EXPECT_EQ(prov.n_slots(), 16);
    const RoutingTrace t = locality_trace(c, 20, 4);
    drive(prov, t, cs_, st.get(), 1);
    EXPECT_EQ(prov.cache_counters().misses, 0);
    EXPECT_EQ(prov.stats().warm_loads, 16);
  }
  try {
    cuda::OffloadProvider prov(arena, *st, stride, cuda::OffloadOptions{});
    FAIL() << "one slot must not be enough";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(format_bytes(arena.capacity() - stride + 2 * stride)), std::string::npos)
        << e.what();
  }
  try {
    cuda::OffloadOptions o;
    o.policy = "belady";
    cuda::OffloadProvider prov(arena, *st, arena.capacity(), o);  // no trace
    FAIL() << "belady needs a trace";
  } catch (const Error& e) {
    SUCCEED() << e.what();
  }
  EXPECT_EQ(arena.stats().used_bytes, 0u);
}

#endif  // MOEBENCH_HAVE_CUDA

}  // namespace offload_test
