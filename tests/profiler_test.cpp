// profiler_test.cpp: counters, the memory timeline, the CPU range recorder,
// GPU-time aggregation, the CUPTI record adapter, and the collector (which
// reports "not available" cleanly without a GPU and is checked on one).
#include <gtest/gtest.h>

#include "common/error.h"
#include "profiler/chrome_trace.h"
#include "profiler/counters.h"
#include "profiler/cpu_trace.h"
#include "profiler/cupti.h"
#include "profiler/trace_validate.h"

#ifdef MOEBENCH_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <cupti.h>
#endif

namespace profiler_test {

using namespace moebench;
using namespace moebench::profiler;

TEST(Counters, TokenSamplesByPhase) {
  Profiler p;
  p.record_token(Phase::prefill, 12, 100, 1100);
  p.record_token(Phase::decode, 1, 1100, 1300);
  p.record_token(Phase::decode, 1, 1300, 1600);
  EXPECT_EQ(p.tokens.steps(Phase::prefill), 1);
  EXPECT_EQ(p.tokens.steps(Phase::decode), 2);
  EXPECT_EQ(p.tokens.tokens(Phase::prefill), 12);
  EXPECT_EQ(p.tokens.tokens(Phase::decode), 2);
  EXPECT_EQ(p.tokens.total_ns(Phase::prefill), 1000);
  EXPECT_EQ(p.tokens.total_ns(Phase::decode), 500);
  EXPECT_EQ(p.tokens.latencies_ns(Phase::decode), (std::vector<int64_t>{200, 300}));
  EXPECT_EQ(p.tokens.samples[0].start_ns, 100);
}

TEST(Counters, ExpertCountersPerLayerAndTotal) {
  ExpertCounters c;
  c.configure(2, 4);
  c.route(0, 1, true);
  c.route(0, 2, false);
  c.load(0, 1000, 50);
  c.stall(0, 20);
  c.route(1, 1, true);
  c.route(1, 1, true);
  c.route(1, 3, false);
  c.load(1, 2000, 70);
  c.load(1, 2000, 80);  // a prefetch: a load without a miss

  EXPECT_EQ(c.layer(0), (ExpertStats{1, 1, 1, 1000, 50, 20}));
  EXPECT_EQ(c.layer(1), (ExpertStats{2, 1, 2, 4000, 150, 0}));
  EXPECT_EQ(c.total(), (ExpertStats{3, 2, 3, 5000, 200, 20}));
  EXPECT_DOUBLE_EQ(c.total().hit_rate(), 0.6);
  EXPECT_DOUBLE_EQ(ExpertStats{}.hit_rate(), 1.0);
  EXPECT_EQ(c.usage(1, 1), 2);
  EXPECT_EQ(c.usage(0, 2), 1);
  EXPECT_EQ(c.usage(0, 0), 0);
  // (n_layers, n_experts) row-major
  EXPECT_EQ(c.usage_matrix(), (std::vector<int64_t>{0, 1, 1, 0, 0, 2, 0, 1}));
}

TEST(Counters, HitRateOverTokens) {
  ExpertCounters c;
  c.configure(1, 2);
  c.route(0, 0, false);  // token 0: 0 / 1
  c.end_token();
  c.route(0, 0, true);   // token 1: 2 / 2
  c.route(0, 1, true);
  c.end_token();
  c.end_token();         // token 2: nothing routed
  c.route(0, 1, true);   // token 3: 1 / 2
  c.route(0, 0, false);
  c.end_token();
  ASSERT_EQ(c.per_token().size(), 4u);
  EXPECT_EQ(c.per_token()[1].hits, 2);
  EXPECT_EQ(c.per_token()[3].misses, 1);
  EXPECT_EQ(c.hit_rate_series(false), (std::vector<double>{0.0, 1.0, 1.0, 0.5}));
  EXPECT_EQ(c.hit_rate_series(true), (std::vector<double>{0.0, 2.0 / 3, 2.0 / 3, 3.0 / 5}));
}

TEST(Counters, ExpertOutOfRangeIsAnErrorNamingIt) {
  ExpertCounters c;
  c.configure(2, 4);
  try {
    c.route(2, 0, true);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("2 layers"), std::string::npos) << e.what();
  }
  EXPECT_THROW(c.route(0, 4, true), Error);
  EXPECT_THROW(c.route(0, -1, true), Error);
  EXPECT_THROW(c.load(-1, 1, 1), Error);
  EXPECT_THROW(c.usage(0, 9), Error);
  ExpertCounters unconfigured;
  EXPECT_THROW(unconfigured.stall(0, 1), Error);
}

TEST(Counters, MemoryPeaksAndTimeline) {
  Profiler p;
  p.memory.note_arena(100);
  p.memory.note_host_pinned(1000);
  p.record_token(Phase::prefill, 4, 0, 10);
  p.memory.note_arena(300, 350);  // the arena saw 350 between two reports
  p.record_token(Phase::decode, 1, 10, 20);
  p.memory.note_arena(200);
  p.memory.note_host_pinned(500);
  p.record_token(Phase::decode, 1, 20, 30);

  EXPECT_EQ(p.memory.arena_peak_bytes, 350);
  EXPECT_EQ(p.memory.arena_used_bytes, 200);
  EXPECT_EQ(p.memory.host_pinned_peak_bytes, 1000);
  EXPECT_EQ(p.memory.device_used_peak_bytes, -1);  // not sampled: option off
  ASSERT_EQ(p.memory.timeline.size(), 3u);
  EXPECT_EQ(p.memory.timeline[1].t_ns, 20);
  EXPECT_EQ(p.memory.timeline[1].step, 1);
  EXPECT_EQ(p.memory.timeline[1].arena_used_bytes, 300);
  EXPECT_EQ(p.memory.timeline[2].host_pinned_bytes, 500);
  EXPECT_EQ(p.memory.timeline[2].device_used_bytes, -1);

  p.memory.sample(40, 3, 5000);
  p.memory.sample(50, 4, 4000);
  EXPECT_EQ(p.memory.device_used_peak_bytes, 5000);
}

TEST(Counters, MemorySampleEvery) {
  Profiler p;
  p.options.memory_sample_every = 3;
  for (int i = 0; i < 7; ++i) p.record_token(Phase::decode, 1, i * 10, i * 10 + 5);
  ASSERT_EQ(p.memory.timeline.size(), 3u);  // steps 0, 3, 6
  EXPECT_EQ(p.memory.timeline[2].step, 6);
}

TEST(Counters, ResetRepetitionKeepsShapeAndLoadTime) {
  Profiler p;
  p.model_load_ns = 12345;
  p.experts.configure(2, 3);
  p.experts.route(1, 2, false);
  p.memory.note_arena(500);
  p.memory.note_arena(200);
  p.trace.set_enabled(true);
  { ScopedRange r(p.trace, RangeKind::token); }
  p.record_token(Phase::decode, 1, 0, 10);

  p.reset_repetition();
  EXPECT_EQ(p.model_load_ns, 12345);
  EXPECT_TRUE(p.tokens.samples.empty());
  EXPECT_EQ(p.experts.n_layers(), 2);
  EXPECT_EQ(p.experts.n_experts(), 3);
  EXPECT_EQ(p.experts.total(), ExpertStats{});
  EXPECT_EQ(p.experts.usage(1, 2), 0);
  EXPECT_TRUE(p.experts.per_token().empty());
  EXPECT_EQ(p.memory.arena_peak_bytes, 200);  // the current level is the new peak
  EXPECT_TRUE(p.memory.timeline.empty());
  EXPECT_TRUE(p.trace.ranges().empty());
  EXPECT_TRUE(p.trace.enabled());
}

TEST(CpuTrace, RecordsOnlyWhenEnabled) {
  CpuTrace t;
  { ScopedRange r(t, RangeKind::layer, 3); }
  EXPECT_TRUE(t.ranges().empty());
  t.set_enabled(true);
  t.name_this_thread("engine");
  {
    ScopedRange layer(t, RangeKind::layer, 3);
    { ScopedRange e(t, RangeKind::expert_compute, 3, 5); }
    { ScopedRange n(t, RangeKind::other, -1, -1, "sample"); }
  }
  const auto rs = t.ranges();
  ASSERT_EQ(rs.size(), 3u);  // in order of completion: inner ranges first
  EXPECT_EQ(rs[0].kind, RangeKind::expert_compute);
  EXPECT_EQ(rs[0].layer, 3);
  EXPECT_EQ(rs[0].expert, 5);
  EXPECT_STREQ(rs[1].name, "sample");
  EXPECT_EQ(rs[2].kind, RangeKind::layer);
  EXPECT_LE(rs[2].start_ns, rs[0].start_ns);
  EXPECT_GE(rs[2].end_ns, rs[1].end_ns);
  EXPECT_EQ(t.thread_names(), (std::vector<std::string>{"engine"}));
}

TEST(CpuTrace, ThreadsGetTheirOwnTracks) {
  CpuTrace t;
  t.set_enabled(true);
  { ScopedRange r(t, RangeKind::token); }
  std::thread other([&] {
    t.name_this_thread("loader");
    ScopedRange r(t, RangeKind::expert_load, 0, 1);
  });
  other.join();
  const auto rs = t.ranges();
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].thread, 0);
  EXPECT_EQ(rs[1].thread, 1);
  EXPECT_EQ(t.thread_names(), (std::vector<std::string>{"thread 0", "loader"}));
}

TEST(GpuTime, KernelNamesToCategories) {
  auto cat = [](const char* name) { return *categorize(GpuEvent{GpuEventKind::kernel, name}); };
  EXPECT_EQ(cat("void moe_gate_topk_kernel<8, 2>(float const*, int*)"), GpuCategory::router);
  EXPECT_EQ(cat("nvjet_hsh_128x256_64x4_1x2_h_bz_coopA_NTN"), GpuCategory::gemv_gemm);
  EXPECT_EQ(cat("expert_gemv_bf16(__nv_bfloat16 const*)"), GpuCategory::expert);
  // The engine's own kernels (engine/cuda/*.cu), as CUPTI names them on the GPU.
  EXPECT_EQ(cat("void moebench::cuda::(anonymous namespace)::moe_gate_up_kernel<1, 2>(__nv_bfloat16 const*, int const*)"),
            GpuCategory::expert);
  EXPECT_EQ(cat("void moebench::cuda::(anonymous namespace)::moe_down_combine_kernel<2>(__nv_bfloat16 const*)"),
            GpuCategory::expert);
  EXPECT_EQ(cat("moebench::cuda::(anonymous namespace)::combine_all_kernel(float const*, int const*)"), GpuCategory::expert);
  EXPECT_EQ(cat("moebench::cuda::(anonymous namespace)::router_kernel(float const*, int*, float*, int, int, int)"),
            GpuCategory::router);
  EXPECT_EQ(cat("void moebench::cuda::(anonymous namespace)::gemv_kernel<1, 2>(__nv_bfloat16 const*)"), GpuCategory::gemv_gemm);
  EXPECT_EQ(cat("moebench::cuda::(anonymous namespace)::kv_store_kernel(float const*, float const*)"), GpuCategory::attention);
  EXPECT_EQ(cat("moebench::cuda::(anonymous namespace)::attention_merge_kernel(float const*)"), GpuCategory::attention);
  EXPECT_EQ(cat("decode_attention_kernel(float*)"), GpuCategory::attention);
  EXPECT_EQ(cat("rope_inplace(float*)"), GpuCategory::attention);
  EXPECT_EQ(cat("RMSNorm_kernel(float*)"), GpuCategory::norm);
  EXPECT_EQ(cat("embedding_lookup(float*)"), GpuCategory::other);
  GpuEvent copy{GpuEventKind::memcpy, "memcpy H2D"};
  copy.copy_kind = CopyKind::h2d;
  EXPECT_EQ(*categorize(copy), GpuCategory::copy_h2d);
  copy.copy_kind = CopyKind::d2h;
  EXPECT_EQ(*categorize(copy), GpuCategory::copy_d2h);
  copy.copy_kind = CopyKind::d2d;
  EXPECT_EQ(*categorize(copy), GpuCategory::copy_other);
  EXPECT_EQ(*categorize(GpuEvent{GpuEventKind::memset, "memset"}), GpuCategory::memset);
  EXPECT_FALSE(categorize(GpuEvent{GpuEventKind::runtime_api, "cudaLaunchKernel"}).has_value());
  // Custom rules replace the defaults.
  std::vector<KernelCategoryRule> mine = {{"embedding", GpuCategory::norm}};
  EXPECT_EQ(*categorize(GpuEvent{GpuEventKind::kernel, "embedding_lookup"}, mine), GpuCategory::norm);
}

TEST(GpuTime, AggregateAndBusyTime) {
  std::vector<GpuEvent> ev;
  ev.push_back(GpuEvent{GpuEventKind::kernel, "gemv", 0, 100});
  ev.push_back(GpuEvent{GpuEventKind::kernel, "attention", 100, 130});
  GpuEvent copy{GpuEventKind::memcpy, "memcpy H2D", 50, 250};  // overlaps both kernels (copy stream)
  copy.copy_kind = CopyKind::h2d;
  ev.push_back(copy);
  ev.push_back(GpuEvent{GpuEventKind::runtime_api, "cudaLaunchKernel", 0, 1000});  // CPU time: ignored
  ev.push_back(GpuEvent{GpuEventKind::kernel, "gemv", 1000, 1010});

  const auto all = aggregate_gpu_time(ev);
  EXPECT_EQ(all.of(GpuCategory::gemv_gemm), 110);
  EXPECT_EQ(all.count[static_cast<size_t>(GpuCategory::gemv_gemm)], 2);
  EXPECT_EQ(all.of(GpuCategory::attention), 30);
  EXPECT_EQ(all.of(GpuCategory::copy_h2d), 200);
  EXPECT_EQ(all.total_ns(), 340);
  const auto window = aggregate_gpu_time(ev, default_kernel_rules(), 0, 1000);  // by start time
  EXPECT_EQ(window.total_ns(), 330);
  EXPECT_EQ(gpu_busy_ns(ev, 0, 2000), 250 + 10);
  EXPECT_EQ(gpu_busy_ns(ev, 120, 1005), 130 + 5);
}

TEST(GpuTime, Demangle) {
  EXPECT_EQ(demangle("_Z4gemvPf"), "gemv(float*)");
  EXPECT_EQ(demangle("nvjet_hsh_128x256"), "nvjet_hsh_128x256");
  EXPECT_EQ(demangle(nullptr), "?");
}

#ifdef MOEBENCH_HAVE_CUDA
// The adapter reads the installed CUDA's record structs; no GPU needed.
TEST(CuptiAdapter, TranslatesRecordsOfThisCudaRelease) {
  CUpti_ActivityKernel10 k{};
  k.kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
  k.name = "_Z4gemvPf";
  k.start = 1000;
  k.end = 3000;
  k.deviceId = 1;
  k.streamId = 7;
  k.correlationId = 42;
  auto e = translate_cupti_record(&k);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->kind, GpuEventKind::kernel);
  EXPECT_EQ(e->name, "_Z4gemvPf");  // the collector demangles
  EXPECT_EQ(e->start_ns, 1000);
  EXPECT_EQ(e->end_ns, 3000);
  EXPECT_EQ(e->device_id, 1u);
  EXPECT_EQ(e->stream_id, 7u);
  EXPECT_EQ(e->correlation_id, 42u);

  CUpti_ActivityMemcpy6 m{};
  m.kind = CUPTI_ACTIVITY_KIND_MEMCPY;
  m.copyKind = CUPTI_ACTIVITY_MEMCPY_KIND_HTOD;
  m.bytes = 1 << 20;
  m.start = 10;
  m.end = 20;
  m.streamId = 13;
  m.correlationId = 43;
  e = translate_cupti_record(&m);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->kind, GpuEventKind::memcpy);
  EXPECT_EQ(e->copy_kind, CopyKind::h2d);
  EXPECT_EQ(e->bytes, 1 << 20);
  EXPECT_EQ(e->stream_id, 13u);
  EXPECT_EQ(e->name, "memcpy H2D");
  m.copyKind = CUPTI_ACTIVITY_MEMCPY_KIND_DTOH;
  EXPECT_EQ(translate_cupti_record(&m)->copy_kind, CopyKind::d2h);

  CUpti_ActivityMemset4 s{};
  s.kind = CUPTI_ACTIVITY_KIND_MEMSET;
  s.bytes = 4096;
  s.correlationId = 44;
  e = translate_cupti_record(&s);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->kind, GpuEventKind::memset);
  EXPECT_EQ(e->bytes, 4096);
  EXPECT_EQ(e->correlation_id, 44u);

  CUpti_ActivityAPI a{};
  a.kind = CUPTI_ACTIVITY_KIND_RUNTIME;
  a.cbid = CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000;
  a.start = 5;
  a.end = 9;
  a.threadId = 777;
  a.correlationId = 42;
  e = translate_cupti_record(&a);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->kind, GpuEventKind::runtime_api);
  EXPECT_EQ(e->thread_id, 777u);
  EXPECT_EQ(e->correlation_id, 42u);
  EXPECT_FALSE(e->name.empty());

  CUpti_ActivityAPI other{};
  other.kind = CUPTI_ACTIVITY_KIND_OVERHEAD;  // a kind we do not use
  EXPECT_FALSE(translate_cupti_record(&other).has_value());
}
#else
TEST(CuptiAdapter, NothingWithoutCuda) {
  int dummy = 0;
  EXPECT_FALSE(translate_cupti_record(&dummy).has_value());
}
#endif

TEST(CuptiCollector, ReportsUnavailableCleanlyOrCollects) {
  CuptiCollector c;
  if (!c.enable()) {
    EXPECT_FALSE(c.enabled());
    EXPECT_FALSE(c.unavailable_reason().empty());
    c.flush();  // harmless when not enabled
    c.disable();
    EXPECT_TRUE(c.take_events().empty());
    EXPECT_EQ(c.dropped_records(), 0);
    GTEST_SKIP() << "CUPTI not available: " << c.unavailable_reason();
  }
#ifdef MOEBENCH_HAVE_CUDA
  // On a GPU: copies and a memset must come back as events on our clock, each
  // linked to its runtime call by correlation id.
  CuptiCollector second;
  EXPECT_FALSE(second.enable());
  EXPECT_NE(second.unavailable_reason().find("already"), std::string::npos);

  const size_t bytes = 1 << 20;
  std::vector<char> host(bytes, 1);
  void* dev = nullptr;
  const int64_t t0 = now_ns();
  ASSERT_EQ(cudaMalloc(&dev, bytes), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dev, host.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(dev, 0, bytes), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(host.data(), dev, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const int64_t t1 = now_ns();
  c.flush();
  const auto used = query_device_used_bytes();
  ASSERT_TRUE(used.has_value());
  EXPECT_GT(*used, static_cast<int64_t>(bytes));
  ASSERT_EQ(cudaFree(dev), cudaSuccess);
  c.disable();

  const auto ev = c.take_events();
  EXPECT_EQ(c.dropped_records(), 0);
  const GpuEvent* h2d = nullptr;
  const GpuEvent* d2h = nullptr;
  const GpuEvent* set = nullptr;
  for (const auto& e : ev) {
    if (e.kind == GpuEventKind::memcpy && e.copy_kind == CopyKind::h2d) h2d = &e;
    if (e.kind == GpuEventKind::memcpy && e.copy_kind == CopyKind::d2h) d2h = &e;
    if (e.kind == GpuEventKind::memset) set = &e;
  }
  ASSERT_TRUE(h2d && d2h && set) << ev.size() << " events";
  EXPECT_EQ(h2d->bytes, static_cast<int64_t>(bytes));
  EXPECT_EQ(set->bytes, static_cast<int64_t>(bytes));
  for (const GpuEvent* e : {h2d, d2h, set}) {
    EXPECT_GE(e->start_ns, t0) << e->name;  // on the profiler clock, inside the window
    EXPECT_LE(e->end_ns, t1) << e->name;
    EXPECT_LE(e->start_ns, e->end_ns) << e->name;
    bool linked = false;
    for (const auto& a : ev)
      if (a.kind == GpuEventKind::runtime_api && a.correlation_id == e->correlation_id) linked = true;
    EXPECT_TRUE(linked) << e->name << " has no runtime record with correlation id " << e->correlation_id;
  }
  const auto by_cat = aggregate_gpu_time(ev);
  EXPECT_GT(by_cat.of(GpuCategory::copy_h2d), 0);
  EXPECT_GT(by_cat.of(GpuCategory::memset), 0);
  // And the trace made from them is valid.
  TraceInput in;
  in.gpu_events = ev;
  const auto errs = validate_chrome_trace(chrome_trace_json(in));
  EXPECT_TRUE(errs.empty()) << errs.front();
#endif
}

}  // namespace profiler_test
