// kernels_bench.cpp: Google Benchmark microbenchmarks of every CUDA kernel at
// Mixtral-8x7B shapes and batch sizes 1..64, variants side by side (own GEMV vs cuBLAS,
// the GEMVs' launch shapes).
// Manual time from CUDA events around the launch only; L2 flushed before every
// repetition (a 64 MiB memset, larger than the H100's 50 MB L2); bytes and flops as
// rate counters, so bytes/s (= GB/s) and flop/s print and land in --benchmark_out JSON.
// Kernels are the registry's: engine/cuda/ops.cuh. Without a GPU it prints why and exits 0.
// The read stream a kernel is held against: the read-only stream of bandwidth.h over
// exactly the kernel's byte count (rounded up to 16 bytes), timed under this same
// harness (L2 flushed, one launch, mean of >= 30 and >= 50 ms; the best of three grid
// sizes, each as a grid-wide stride and as a contiguous span a warp), once per byte count
// and kept. Every
// benchmark's counter "of_same_size_stream" is its bytes/s as a fraction of that
// stream's ("same_size_stream_gbps"): a small read cannot reach a large one's rate
// here (launch, ramp-up, the flush's dirty lines), so this is the fraction that says how
// close a kernel is to the read limit at its size. "of_read_stream" holds it against the
// 1 GiB stream's best of 20 (context "read_stream_gbps", measured once the arena is
// set up, so that every buffer lies where it did before that measurement existed), and
// read_stream/MiB:<n> shows the stream's rate against size. MOEBENCH_BENCH_STREAM_FIRST=1
// measures that 1 GiB stream before the arena instead, as builds up to this one did (its
// cudaMalloc/cudaFree then moves the arena): for telling placement from code in a
// before/after pair.
#include <benchmark/benchmark.h>

#if MOEBENCH_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/env.h"
#include "engine/cuda/arena.h"
#include "engine/cuda/bandwidth.h"
#include "engine/cuda/blas.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/decode_attention.h"
#include "engine/cuda/device.h"
#include "engine/cuda/gemv_chain.h"
#include "engine/cuda/handoff_probe.h"
#include "engine/cuda/gemv_staged.h"
#include "engine/cuda/moe_small_experts.h"
#include "engine/cuda/norm_router.h"
#include "engine/cuda/norm_router_cluster.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/quant_dequant.h"
#include "engine/cuda/quant_gemv.h"
#include "engine/quant.h"
#include "engine/synth_rng.h"

using namespace moebench;
using cuda::bf16;

namespace {

struct Ctx {
  std::unique_ptr<cuda::DeviceArena> arena;
  std::unique_ptr<cuda::Blas> blas;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  void* flush = nullptr;
  static constexpr size_t kFlushBytes = 64ull << 20;
  double read_stream_bps = 0;  // the read-only stream's best, bytes/s
  std::map<size_t, double> same_size_stream_bps;  // by byte count (+ 1: L2 warm), bytes/s under this harness
  // The l2_warm/ benchmarks: no flush between repetitions, so that data smaller than L2
  // is read from it (the rate a launch reaches on weights an L2 prefetch brought in).
  bool l2_warm = false;
};
Ctx* g = nullptr;

// Device buffer from the arena, filled with small synthetic values (never NaN/Inf).
struct Buf {
  void* p = nullptr;
  Buf(size_t bytes, bool bf16_fill = true) {
    p = g->arena->alloc(bytes, "bench buffer");
    if (bf16_fill)
      cuda::synth_fill_bf16(static_cast<bf16*>(p), 77 + bytes, 0, static_cast<int64_t>(bytes / 2), 0.02f, 0.0f,
                            g->stream);
    else
      CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, g->stream));
  }
  ~Buf() { g->arena->free(p); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// One repetition: L2 flushed (memset of `flush_value`), then fn between two events; ms.
float time_once(const std::function<void()>& fn, int flush_value) {
  if (!g->l2_warm) CUDA_CHECK(cudaMemsetAsync(g->flush, flush_value & 0xff, Ctx::kFlushBytes, g->stream));
  CUDA_CHECK(cudaEventRecord(g->start, g->stream));
  fn();
  CUDA_CHECK(cudaEventRecord(g->stop, g->stream));
  CUDA_CHECK(cudaEventSynchronize(g->stop));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, g->start, g->stop));
  return ms;
}

// The read-only stream over `bytes` (rounded up to 16), timed as the kernels are (a
// warm-up, then the mean of at least 30 repetitions and 50 ms), the best of 2, 4 and 8
// blocks of 512 threads per SM (no one grid is the fastest stream at every size); bytes/s.
// Its buffer comes after the kernel's in the arena and goes before the next benchmark, so
// kernels' buffers lie where they would without it.
double same_size_stream_bps(double bytes) {
  const size_t b = (static_cast<size_t>(bytes) + 15) / 16 * 16, key = b + (g->l2_warm ? 1 : 0);
  if (auto it = g->same_size_stream_bps.find(key); it != g->same_size_stream_bps.end()) return it->second;
  Buf src(b), sink(16, false);
  double best = 0;
  for (int shape = 0; shape < 6; ++shape) {
    const int blocks_per_sm = 2 << (shape % 3);
    const bool spans = shape >= 3;
    const std::function<void()> stream = [&] {
      cuda::launch_read_stream(src.p, b, sink.p, g->stream, blocks_per_sm, spans);
    };
    stream();
    CUDA_CHECK(cudaStreamSynchronize(g->stream));
    double total_ms = 0;
    int reps = 0;
    while (reps < 30 || total_ms < 50) total_ms += time_once(stream, reps++);
    best = std::max(best, static_cast<double>(b) / (total_ms / reps * 1e-3));
  }
  g->same_size_stream_bps[key] = best;
  return best;
}

// Times fn with CUDA events, L2 flushed before each repetition; then the same-size stream.
void timed(benchmark::State& state, const std::function<void()>& fn, double bytes, double flops) {
  fn();  // warm-up (and first-call setup such as cuBLAS heuristics)
  CUDA_CHECK(cudaStreamSynchronize(g->stream));
  for (auto _ : state) state.SetIterationTime(time_once(fn, static_cast<int>(state.iterations())) * 1e-3);
  state.counters["bytes"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
  state.counters["flops"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
  state.counters["of_read_stream"] =
      benchmark::Counter(bytes / g->read_stream_bps, benchmark::Counter::kIsIterationInvariantRate);
  if (bytes >= 16) {
    const double stream_bps = same_size_stream_bps(bytes);
    state.counters["of_same_size_stream"] =
        benchmark::Counter(bytes / stream_bps, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["same_size_stream_gbps"] = stream_bps / 1e9;
  }
}

// The read-only stream over `mib` MiB, timed like the kernels (the limit a GEMV of that
// many bytes is held against).
void bm_read_stream(benchmark::State& state, int mib) {
  const size_t bytes = static_cast<size_t>(mib) << 20;
  Buf src(bytes), sink(16, false);
  timed(state, [&] { cuda::launch_read_stream(src.p, bytes, sink.p, g->stream); }, static_cast<double>(bytes), 0);
}

// Mixtral-8x7B linear shapes: (out, in).
struct Shape {
  const char* name;
  int out, in;
};
const Shape kShapes[] = {{"w1_w3", 14336, 4096}, {"w2", 4096, 14336}, {"lm_head", 32000, 4096},
                         {"k_v_proj", 1024, 4096}, {"q_o_proj", 4096, 4096}};

void bm_linear(benchmark::State& state, Shape s, int m, cuda::LinearAlgo algo) {
  Buf w(2ull * s.out * s.in), x(2ull * m * s.in), y(4ull * m * s.out, false);
  timed(
      state,
      [&] {
        cuda::linear(x.as<bf16>(), w.as<bf16>(), y.as<float>(), m, s.in, s.out, false, g->blas->get(), g->stream,
                     algo);
      },
      2.0 * s.out * s.in + 2.0 * m * s.in + 4.0 * m * s.out, 2.0 * m * s.out * s.in);
}

// The one-row GEMV with its launch shape given (ops.cuh gemv_shaped): the shapes side by side.
void bm_gemv_shape(benchmark::State& state, Shape s, cuda::GemvShape shape) {
  Buf w(2ull * s.out * s.in), x(2ull * s.in), y(4ull * s.out, false);
  timed(
      state,
      [&] { cuda::gemv_shaped(x.as<bf16>(), w.as<bf16>(), y.as<float>(), s.in, s.out, false, shape, g->stream); },
      2.0 * s.out * s.in + 2.0 * s.in + 4.0 * s.out, 2.0 * s.out * s.in);
}

// The one-row GEMV with its weights staged in shared memory (gemv_staged.h: y += x W^T).
// Alone, no launch before it to overlap: its bulk copies and the rows after its wait in one
// stream, beside the GEMV of the same shape; what it buys in the decode step is the copies
// started during attention, which only the model A/B measures.
void bm_gemv_staged(benchmark::State& state, Shape s) {
  Buf w(2ull * s.out * s.in), x(2ull * s.in), y(4ull * s.out, false);
  timed(
      state, [&] { cuda::gemv_staged(x.as<bf16>(), w.as<bf16>(), y.as<float>(), s.in, s.out, g->stream); },
      2.0 * s.out * s.in + 2.0 * s.in + 8.0 * s.out, 2.0 * s.out * s.in);
}

// A decode step's GEMVs as one chain of dependent ops (gemv_chain.h), layer after layer:
// q/k/v, o_proj (its input the first q_dim of q/k/v's rows), the selected experts' gate/up
// rows as one matrix, and their down projections as one matrix over the concatenated
// activations (the same bytes as the experts' own matrices). No attention, norm or routing:
// what the chain of dependencies costs a stream, in one persistent launch against one launch
// an op (programmatic launch, the same kernel), and the persistent launch with no op
// waiting for another ("independent": every op reads the chain's input) as the kernel's own
// streaming rate; "/warps:W/slot_kib:K": the kernel's other compiled shapes (gemv_chain.h).
// Layers: as many as the bench arena holds twice (the same-size stream).
struct ChainModel {
  const char* name;
  int hidden, qkv_rows, q_dim, expert_rows, experts, layers;  // expert_rows: an expert's intermediate size
};
const ChainModel kChainModels[] = {{"qwen3-30b-a3b", 2048, 5120, 4096, 768, 8, 24},
                                   {"mixtral-8x7b", 4096, 6144, 4096, 14336, 2, 4}};

void bm_gemv_chain(benchmark::State& state, ChainModel m, cuda::GemvChainMode mode, bool independent,
                   cuda::GemvChainShape shape = {}) {
  struct Op {
    int rows, cols;
  };
  std::vector<Op> shapes;
  for (int l = 0; l < m.layers; ++l)
    for (const Op o : {Op{m.qkv_rows, m.hidden}, Op{m.hidden, m.q_dim}, Op{2 * m.experts * m.expert_rows, m.hidden},
                       Op{m.hidden, m.experts * m.expert_rows}})
      shapes.push_back(o);
  int max_cols = 0;
  double bytes = 0;
  for (const Op o : shapes) {
    max_cols = std::max(max_cols, o.cols);
    bytes += 2.0 * o.rows * o.cols;
  }
  std::vector<std::unique_ptr<Buf>> w, y;
  std::vector<cuda::GemvChainOp> ops;
  for (size_t i = 0; i < shapes.size(); ++i) {
    w.push_back(std::make_unique<Buf>(2ull * shapes[i].rows * shapes[i].cols));
    y.push_back(std::make_unique<Buf>(4ull * shapes[i].rows, false));
    cuda::GemvChainOp op;
    op.w = w.back()->as<bf16>();
    op.y = y.back()->as<float>();
    op.rows = shapes[i].rows;
    op.cols = shapes[i].cols;
    op.dep = independent ? -1 : static_cast<int>(i) - 1;
    ops.push_back(op);
  }
  const int n = static_cast<int>(ops.size());
  std::string why;
  if (!cuda::gemv_chain_supported(ops.data(), n, &why, shape)) {
    state.SkipWithError(why.c_str());
    return;
  }
  Buf x0(4ull * max_cols, false), ops_dev(sizeof(cuda::GemvChainOp) * ops.size(), false),
      counters(4 * cuda::gemv_chain_counter_words(n), false);
  CUDA_CHECK(cudaStreamSynchronize(g->stream));
  cuda::gemv_chain_upload(ops.data(), n, ops_dev.as<cuda::GemvChainOp>());
  timed(
      state,
      [&] {
        cuda::gemv_chain_run(ops.data(), n, x0.as<float>(), ops_dev.as<cuda::GemvChainOp>(), counters.as<uint32_t>(),
                             mode, g->stream, shape);
      },
      bytes, 0);
  state.counters["ops"] = n;
}

// What one dependency between launches costs (handoff_probe.h): a chain of 64 hops over a
// 16 KiB vector, each hop reading all of it back from L2 and writing its slice, waiting for
// the hop before by stream order, the programmatic launch's wait, a counter between
// launches, or a counter inside one persistent launch. s_per_hop: the chain's time over its
// hops. "/fills_sm:1": each block takes 200 / blocks_per_sm KiB of shared memory, so a hop's
// blocks fill their SMs and the next launch's stay out until they leave (as beside the
// decode step's expert launches); 0: the next launch's blocks fit beside them.
void bm_handoff(benchmark::State& state, cuda::HandoffMode mode, cuda::HandoffShape shape) {
  std::string why;
  if (!cuda::handoff_probe_supported(mode, shape, &why)) {
    state.SkipWithError(why.c_str());
    return;
  }
  Buf a(4ull * shape.n, false), b(4ull * shape.n, false), counters(4 * cuda::handoff_probe_counter_words(shape), false);
  timed(
      state, [&] { cuda::handoff_probe_run(mode, shape, a.as<float>(), b.as<float>(), counters.as<uint32_t>(), g->stream); },
      0, 0);
  state.counters["hops"] = shape.hops;
  state.counters["s_per_hop"] = benchmark::Counter(shape.hops, benchmark::Counter::kIsIterationInvariantRate |
                                                                   benchmark::Counter::kInvert);
}

// "/PF:<n>" for a shape that prefetches n iterations ahead (none for the others).
std::string prefetch_suffix(const cuda::GemvShape& gs) {
  return gs.prefetch > 0 ? "/PF:" + std::to_string(gs.prefetch) : std::string();
}

// q, k and v of one layer against one activation row in one launch (ops.cuh
// linear_multi; shape null: its default shape). Mixtral-8x7B's by default; qwen3:
// Qwen3-30B-A3B's (32 + 4 + 4 heads of 128 over hidden 2048).
void bm_linear_multi_qkv(benchmark::State& state, const cuda::GemvShape* shape, bool qwen3 = false) {
  const int kIn = qwen3 ? 2048 : 4096;
  const int kRows[3] = {4096, qwen3 ? 512 : 1024, qwen3 ? 512 : 1024};
  Buf wq(2ull * kRows[0] * kIn), wk(2ull * kRows[1] * kIn), wv(2ull * kRows[2] * kIn), x(2ull * kIn),
      y(4ull * (kRows[0] + kRows[1] + kRows[2]), false);
  const bf16* w[3] = {wq.as<bf16>(), wk.as<bf16>(), wv.as<bf16>()};
  float* ys[3] = {y.as<float>(), y.as<float>() + kRows[0], y.as<float>() + kRows[0] + kRows[1]};
  const int rows = kRows[0] + kRows[1] + kRows[2];
  timed(
      state,
      [&] {
        if (shape)
          cuda::linear_multi_shaped(x.as<bf16>(), w, ys, kRows, 3, kIn, *shape, g->stream);
        else
          cuda::linear_multi(x.as<bf16>(), w, ys, kRows, 3, 1, kIn, nullptr, g->stream);
      },
      2.0 * rows * kIn + 2.0 * kIn + 4.0 * rows, 2.0 * rows * kIn);
}

constexpr int kHidden = 4096, kInter = 14336, kExperts = 8, kTopK = 2, kHeads = 32, kKv = 8, kHd = 128,
              kVocab = 32000;

// Decode's attention entry: h = rmsnorm(x) then q, k, v of h; fused: in one launch
// (ops.cuh rmsnorm_linear_multi), else rmsnorm() and linear_multi() one after the other.
void bm_rmsnorm_qkv(benchmark::State& state, bool fused) {
  constexpr int kRows[3] = {kHeads * kHd, kKv * kHd, kKv * kHd};
  const int rows = kRows[0] + kRows[1] + kRows[2];
  Buf wq(2ull * kRows[0] * kHidden), wk(2ull * kRows[1] * kHidden), wv(2ull * kRows[2] * kHidden),
      x(4ull * kHidden, false), nw(2ull * kHidden), h(2ull * kHidden, false), y(4ull * rows, false);
  const bf16* w[3] = {wq.as<bf16>(), wk.as<bf16>(), wv.as<bf16>()};
  float* ys[3] = {y.as<float>(), y.as<float>() + kRows[0], y.as<float>() + kRows[0] + kRows[1]};
  timed(
      state,
      [&] {
        if (fused) {
          cuda::rmsnorm_linear_multi(x.as<float>(), nw.as<bf16>(), 1e-5f, h.as<bf16>(), w, ys, kRows, 3, kHidden,
                                     g->stream);
        } else {
          cuda::rmsnorm(x.as<float>(), nw.as<bf16>(), h.as<bf16>(), 1, kHidden, 1e-5f, g->stream);
          cuda::linear_multi(h.as<bf16>(), w, ys, kRows, 3, 1, kHidden, nullptr, g->stream);
        }
      },
      2.0 * rows * kHidden + 4.0 * kHidden + 2.0 * kHidden + 2.0 * kHidden + 4.0 * rows, 2.0 * rows * kHidden);
}

// The MoE block's entry of decode (norm_router.h): norm, router logits and top-2 of 8, one token.
void bm_norm_router(benchmark::State& state) {
  Buf x(4ull * kHidden, false), nw(2ull * kHidden), gate(2ull * kExperts * kHidden), h(2ull * kHidden, false),
      logits(4ull * kExperts, false), ids(4ull * kTopK, false), wts(4ull * kTopK, false);
  timed(
      state,
      [&] {
        cuda::norm_router(x.as<float>(), nw.as<bf16>(), 1e-5f, gate.as<bf16>(), h.as<bf16>(), logits.as<float>(),
                          ids.as<int32_t>(), wts.as<float>(), 1, kHidden, kExperts, kTopK, g->stream);
      },
      2.0 * kExperts * kHidden + 4.0 * kHidden + 2.0 * kHidden + 2.0 * kHidden + 4.0 * kExperts + 8.0 * kTopK,
      2.0 * kExperts * kHidden);
}

void bm_swiglu_gate_up(benchmark::State& state, int m) {
  Buf w1(2ull * kInter * kHidden), w3(2ull * kInter * kHidden), x(2ull * m * kHidden), h(2ull * m * kInter, false);
  timed(
      state, [&] { cuda::swiglu_gate_up(x.as<bf16>(), w1.as<bf16>(), w3.as<bf16>(), h.as<bf16>(), m, kHidden, kInter, g->stream); },
      4.0 * kInter * kHidden, 4.0 * m * kInter * kHidden);
}

void bm_swiglu_expert(benchmark::State& state, int m) {
  Buf w1(2ull * kInter * kHidden), w3(2ull * kInter * kHidden), w2(2ull * kInter * kHidden), x(2ull * m * kHidden),
      out(4ull * m * kHidden, false), sc(cuda::swiglu_scratch_bytes(m, kInter), false);
  timed(
      state,
      [&] {
        cuda::swiglu_expert(x.as<bf16>(), w1.as<bf16>(), w3.as<bf16>(), w2.as<bf16>(), out.as<float>(), sc.p, m,
                            kHidden, kInter, false, g->blas->get(), g->stream);
      },
      6.0 * kInter * kHidden, 6.0 * m * kInter * kHidden);
}

// n tokens, token i routed to experts (2i, 2i+1) mod 8: n = 1 reads 2 experts, n >= 4 all 8.
void bm_moe_fused(benchmark::State& state, int n) {
  std::vector<std::unique_ptr<Buf>> ws;
  std::vector<const bf16*> p1, p3, p2;
  for (int e = 0; e < kExperts; ++e) {
    ws.push_back(std::make_unique<Buf>(2ull * kInter * kHidden));
    p1.push_back(ws.back()->as<bf16>());
    ws.push_back(std::make_unique<Buf>(2ull * kInter * kHidden));
    p3.push_back(ws.back()->as<bf16>());
    ws.push_back(std::make_unique<Buf>(2ull * kInter * kHidden));
    p2.push_back(ws.back()->as<bf16>());
  }
  std::vector<int32_t> ids(n * kTopK);
  std::vector<float> wts(n * kTopK, 0.5f);
  bool used[kExperts] = {};
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < kTopK; ++j) used[ids[i * kTopK + j] = (2 * i + j) % kExperts] = true;
  int n_used = 0;
  for (bool u : used) n_used += u;
  Buf tables(3 * kExperts * sizeof(void*), false), dids(ids.size() * 4, false), dw(wts.size() * 4, false),
      x(2ull * n * kHidden), h(2ull * n * kTopK * kInter, false), out(4ull * n * kHidden, false);
  const bf16** t = tables.as<const bf16*>();
  CUDA_CHECK(cudaMemcpy(t, p1.data(), kExperts * sizeof(void*), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(t + kExperts, p3.data(), kExperts * sizeof(void*), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(t + 2 * kExperts, p2.data(), kExperts * sizeof(void*), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dids.p, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dw.p, wts.data(), wts.size() * 4, cudaMemcpyHostToDevice));
  timed(
      state,
      [&] {
        cuda::moe_decode_fused(x.as<bf16>(), dids.as<int32_t>(), dw.as<float>(), t, t + kExperts, t + 2 * kExperts,
                               h.as<bf16>(), out.as<float>(), n, kTopK, kExperts, kHidden, kInter, g->stream);
      },
      6.0 * kInter * kHidden * n_used, 6.0 * n * kTopK * kInter * kHidden);
  state.counters["experts_read"] = n_used;
}

// The MoE decode of one token at Qwen3-30B-A3B's expert shape (128 experts of 768 x 2048,
// top-8, 8 distinct experts read): the fused kernels (shape null) or moe_decode_small at
// one of its shapes (moe_small_experts.h); the same bits either way.
constexpr int kQwenHidden = 2048, kQwenInter = 768, kQwenExperts = 128, kQwenTopK = 8;
void bm_moe_small(benchmark::State& state, const cuda::SmallExpertShape* shape) {
  std::vector<std::unique_ptr<Buf>> ws;
  std::vector<const bf16*> p1(kQwenExperts), p3(kQwenExperts), p2(kQwenExperts);
  std::vector<int32_t> ids(kQwenTopK);
  for (int j = 0; j < kQwenTopK; ++j) {
    ids[j] = 5 + 15 * j;
    for (auto* p : {&p1, &p3, &p2}) {
      ws.push_back(std::make_unique<Buf>(2ull * kQwenInter * kQwenHidden));
      (*p)[ids[j]] = ws.back()->as<bf16>();
    }
  }
  for (int e = 0; e < kQwenExperts; ++e)
    if (!p1[e]) p1[e] = p1[ids[0]], p3[e] = p3[ids[0]], p2[e] = p2[ids[0]];
  std::vector<float> wts(kQwenTopK, 0.125f);
  Buf tables(3 * kQwenExperts * sizeof(void*), false), dids(ids.size() * 4, false), dw(wts.size() * 4, false),
      x(2ull * kQwenHidden), h(2ull * kQwenTopK * kQwenInter, false), out(4ull * kQwenHidden, false);
  const bf16** t = tables.as<const bf16*>();
  CUDA_CHECK(cudaMemcpy(t, p1.data(), kQwenExperts * sizeof(void*), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(t + kQwenExperts, p3.data(), kQwenExperts * sizeof(void*), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(t + 2 * kQwenExperts, p2.data(), kQwenExperts * sizeof(void*), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dids.p, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dw.p, wts.data(), wts.size() * 4, cudaMemcpyHostToDevice));
  const double bytes = 6.0 * kQwenInter * kQwenHidden * kQwenTopK;
  timed(
      state,
      [&] {
        if (shape)
          cuda::moe_decode_small(x.as<bf16>(), dids.as<int32_t>(), dw.as<float>(), t, t + kQwenExperts,
                                 t + 2 * kQwenExperts, h.as<bf16>(), out.as<float>(), kQwenTopK, kQwenExperts,
                                 kQwenHidden, kQwenInter, g->stream, *shape);
        else
          cuda::moe_decode_fused(x.as<bf16>(), dids.as<int32_t>(), dw.as<float>(), t, t + kQwenExperts,
                                 t + 2 * kQwenExperts, h.as<bf16>(), out.as<float>(), 1, kQwenTopK, kQwenExperts,
                                 kQwenHidden, kQwenInter, g->stream);
      },
      bytes, bytes);
}

// The MoE entry of a Qwen3-30B-A3B decode step: norm, the 128 x 2048 gate, top-8 (the wide
// kernel; cluster: the cluster launch, norm_router_cluster.h, norm_router's default).
void bm_norm_router_wide(benchmark::State& state, bool cluster = false) {
  const bool was = cuda::norm_router_cluster_enabled();
  cuda::set_norm_router_cluster(false);  // norm_router below: the wide launch
  Buf x(4ull * kQwenHidden, false), nw(2ull * kQwenHidden), gate(2ull * kQwenExperts * kQwenHidden),
      h(2ull * kQwenHidden, false), logits(4ull * kQwenExperts, false), ids(4ull * kQwenTopK, false),
      wts(4ull * kQwenTopK, false);
  timed(
      state,
      [&] {
        if (cluster)
          cuda::norm_router_cluster(x.as<float>(), nw.as<bf16>(), 1e-6f, gate.as<bf16>(), h.as<bf16>(),
                                    logits.as<float>(), ids.as<int32_t>(), wts.as<float>(), 1, kQwenHidden,
                                    kQwenExperts, kQwenTopK, g->stream);
        else
          cuda::norm_router(x.as<float>(), nw.as<bf16>(), 1e-6f, gate.as<bf16>(), h.as<bf16>(), logits.as<float>(),
                            ids.as<int32_t>(), wts.as<float>(), 1, kQwenHidden, kQwenExperts, kQwenTopK, g->stream);
      },
      2.0 * kQwenExperts * kQwenHidden + 4.0 * kQwenHidden + 2.0 * kQwenHidden * 2, 2.0 * kQwenExperts * kQwenHidden);
  cuda::set_norm_router_cluster(was);
}

// The dequantising decode GEMV over the selected experts (quant_gemv.h) at a Mixtral-8x7B
// expert matrix (w1/w3: 14336 x 4096; w2: 4096 x 14336; gate_up: [w1; w3] as one 28672 x
// 4096 matrix, as the unfused model runs it, or with the pipelined shape the pipelined
// fused form writing silu(g) * u itself; gate_up_silu: the plain kernel's fused gate/up,
// what the model runs; down_combine: w2 with the combine into a residual, what the model
// runs with the fused combine), n tokens routed as in bm_moe_fused. Weight bytes are
// arbitrary (synthetic bf16 reinterpreted), scales zero: the time depends on the bytes
// read, not on the values. bytes = the used experts' values + scales + the activations +
// the outputs (the residual read and written, and the routing weights, for down_combine).
// shape.pf: the L2 prefetch window (-1: the default); shape.seq: tiles a block takes in turn.
// int4_paired: int4 codes read in the paired word order (the values are arbitrary either way).
enum class QuantMat { w1, w2, gate_up, gate_up_silu, down_combine };
void bm_quant_moe_gemv(benchmark::State& state, QuantFormat f, QuantMat mat, int n, cuda::QuantGemvShape shape = {},
                       bool int4_paired = false) {
  const bool down = mat == QuantMat::w2 || mat == QuantMat::down_combine;
  const bool gate_up = mat == QuantMat::gate_up || mat == QuantMat::gate_up_silu;
  const bool writes_h = mat == QuantMat::gate_up_silu || (mat == QuantMat::gate_up && shape.pipe);
  const int N = down ? kHidden : gate_up ? 2 * kInter : kInter, K = down ? kInter : kHidden;
  const auto parts = quant_parts(f, N, K);
  std::vector<std::unique_ptr<Buf>> ws;
  std::vector<const uint8_t*> q, sc;
  for (int e = 0; e < kExperts; ++e) {
    ws.push_back(std::make_unique<Buf>(parts[0].nbytes()));
    q.push_back(ws.back()->as<uint8_t>());
    ws.push_back(std::make_unique<Buf>(parts[1].nbytes(), false));
    sc.push_back(ws.back()->as<uint8_t>());
  }
  std::vector<int32_t> ids(n * kTopK);
  bool used[kExperts] = {};
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < kTopK; ++j) used[ids[i * kTopK + j] = (2 * i + j) % kExperts] = true;
  int n_used = 0;
  for (bool u : used) n_used += u;
  const int pairs = n * kTopK, n_x = down ? pairs : n;
  Buf tables(2 * kExperts * sizeof(void*), false), dids(ids.size() * 4, false), x(2ull * n_x * K),
      out(4ull * pairs * N, false), wts(4ull * pairs, false);
  const uint8_t** t = tables.as<const uint8_t*>();
  CUDA_CHECK(cudaMemcpy(t, q.data(), kExperts * sizeof(void*), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(t + kExperts, sc.data(), kExperts * sizeof(void*), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dids.p, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
  cuda::QuantExperts qe;
  qe.format = f;
  qe.q = t;
  qe.scale = t + kExperts;
  qe.int4_paired = int4_paired;
  const double out_bytes = writes_h                         ? 2.0 * pairs * kInter
                           : mat == QuantMat::down_combine ? 8.0 * n * N + 4.0 * pairs
                                                            : 4.0 * pairs * N;
  timed(
      state,
      [&] {
        if (writes_h)
          cuda::quant_moe_gemv_gate_up_shaped(qe, x.as<bf16>(), dids.as<int32_t>(), pairs, kTopK, kInter, K, kExperts,
                                              out.as<bf16>(), shape, g->stream);
        else if (mat == QuantMat::down_combine)
          cuda::quant_moe_down_combine(qe, x.as<bf16>(), dids.as<int32_t>(), wts.as<float>(), pairs, kTopK, N, K,
                                       kExperts, out.as<float>(), false, g->stream, shape.pf, shape.var, shape.tiles);
        else
          cuda::quant_moe_gemv_shaped(qe, x.as<bf16>(), down, dids.as<int32_t>(), pairs, kTopK, N, K, kExperts,
                                      out.as<float>(), shape, g->stream);
      },
      static_cast<double>(quant_matrix_bytes(f, N, K)) * n_used + 2.0 * n_x * K + out_bytes, 2.0 * pairs * N * K);
  state.counters["experts_read"] = n_used;
}

// One Mixtral-8x7B w1 (14336 x 4096) dequantised to bf16, as the quantised prefill does
// for each expert it runs: the codes and scales read, the bf16 matrix written
// (MOEBENCH_DEQUANT8=0 measures the one-element-a-thread kernel). The codes are whatever
// bytes the buffer holds: the work does not depend on them.
void bm_dequant(benchmark::State& state, QuantFormat f) {
  const int64_t rows = 14336, cols = 4096, n = rows * cols;
  const size_t code_bytes = f == QuantFormat::int4 ? n / 2 : n;
  const size_t scale_bytes = f == QuantFormat::fp8    ? 4 * (rows / 128) * (cols / 128)
                             : f == QuantFormat::int8 ? 4 * rows
                                                      : 2 * rows * (cols / 128);
  Buf q(code_bytes), scale(scale_bytes), out(2 * n, false);
  timed(
      state,
      [&] {
        cuda::dequantize_bf16(f, rows, cols, q.as<uint8_t>(), scale.as<uint8_t>(), nullptr, out.as<bf16>(),
                              g->stream, f == QuantFormat::int4);
      },
      static_cast<double>(code_bytes + scale_bytes + 2 * n), 0);
}

void bm_attention(benchmark::State& state, int n, int pos0) {
  const int len = pos0 + n;
  Buf q(4ull * n * kHeads * kHd, false), kc(2ull * len * kKv * kHd), vc(2ull * len * kKv * kHd),
      out(2ull * n * kHeads * kHd, false);
  const size_t ws_n = cuda::attention_workspace_floats(n, pos0, kHeads, kKv, kHd);
  Buf ws(4 * std::max<size_t>(ws_n, 1), false);
  const double pairs = static_cast<double>(n) * pos0 + 0.5 * n * (n + 1);  // causal (query, key) pairs
  timed(
      state,
      [&] {
        cuda::attention(q.as<float>(), kc.as<bf16>(), vc.as<bf16>(), out.as<bf16>(), n, pos0, kHeads, kKv, kHd,
                        ws.as<float>(), g->stream);
      },
      4.0 * len * kKv * kHd + 4.0 * n * kHeads * kHd + 2.0 * n * kHeads * kHd, 4.0 * pairs * kHeads * kHd);
}

// b decode tokens of b sequences at position len - 1, paged pool of 16-token blocks
// (identity tables, max_len 4608); split = whether the keys may be split over blocks.
void bm_paged_attention(benchmark::State& state, int b, int len, bool split) {
  constexpr int kBlock = 16, kMaxLen = 4608, kWidth = kMaxLen / kBlock;
  const size_t pool = static_cast<size_t>(b) * kWidth * kBlock * kKv * kHd;
  Buf q(4ull * b * kHeads * kHd, false), kp(2 * pool), vp(2 * pool), out(2ull * b * kHeads * kHd, false),
      tables(4ull * b * kWidth, false), seq_row(4ull * b, false), pos(4ull * b, false);
  std::vector<int32_t> t(static_cast<size_t>(b) * kWidth), sr(b), ps(b, len - 1);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>(i);
  for (int i = 0; i < b; ++i) sr[i] = i;
  CUDA_CHECK(cudaMemcpy(tables.p, t.data(), t.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(seq_row.p, sr.data(), sr.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(pos.p, ps.data(), ps.size() * 4, cudaMemcpyHostToDevice));
  const size_t ws_n = split ? cuda::paged_attention_workspace_floats(b, kHeads, kKv, kHd, kMaxLen) : 0;
  Buf ws(4 * std::max<size_t>(ws_n, 1), false);
  timed(
      state,
      [&] {
        cuda::paged_attention(q.as<float>(), kp.as<bf16>(), vp.as<bf16>(), tables.as<int32_t>(), kWidth,
                              seq_row.as<int32_t>(), pos.as<int32_t>(), out.as<bf16>(), b, kHeads, kKv, kHd, kBlock,
                              ws_n ? ws.as<float>() : nullptr, g->stream);
      },
      4.0 * b * len * kKv * kHd + 4.0 * b * kHeads * kHd + 2.0 * b * kHeads * kHd, 4.0 * b * len * kHeads * kHd);
  state.counters["splits"] = split ? cuda::paged_attention_splits(b, kKv, kMaxLen) : 1;
}

// One decode token's RoPE + KV store and attention at position len - 1 of the contiguous
// cache (one block of kMaxLen keys, split over keys as the decode step does): the two
// launches and the merge kernel (fold 0), or decode_attention_folded with RoPE and the store
// in the attention launch (fold & 1) and/or the splits merged by the last split (fold & 2).
void bm_decode_attention_fold(benchmark::State& state, int len, int fold) {
  constexpr int kMaxLen = 4608;
  const size_t pool = static_cast<size_t>(kMaxLen) * kKv * kHd;
  Buf q(4ull * kHeads * kHd), k(4ull * kKv * kHd), v(4ull * kKv * kHd), kp(2 * pool), vp(2 * pool),
      out(2ull * kHeads * kHd, false), zero(4, false), pos(4, false);
  const int32_t p = len - 1;
  CUDA_CHECK(cudaMemcpy(pos.p, &p, 4, cudaMemcpyHostToDevice));
  const size_t ws_n = cuda::paged_attention_workspace_floats(1, kHeads, kKv, kHd, kMaxLen);
  Buf ws(4 * std::max<size_t>(ws_n, 1), false);
  float* w = cuda::decode_attention_one_split(len) ? nullptr : ws.as<float>();
  const bool rope = fold & 1, merge = fold & 2;
  timed(
      state,
      [&] {
        if (!rope)
          cuda::rope_kv_store_paged(q.as<float>(), k.as<float>(), v.as<float>(), pos.as<int32_t>(), pos.as<int32_t>(),
                                    kp.as<bf16>(), vp.as<bf16>(), 1, kHeads, kKv, kHd, 1e6f, g->stream);
        cuda::decode_attention_folded(q.as<float>(), k.as<float>(), v.as<float>(), 1e6f, kp.as<bf16>(), vp.as<bf16>(),
                                      zero.as<int32_t>(), 1, zero.as<int32_t>(), pos.as<int32_t>(), out.as<bf16>(), 1,
                                      kHeads, kKv, kHd, kMaxLen, w, rope, merge, g->stream);
      },
      4.0 * len * kKv * kHd + 4.0 * kHeads * kHd + 8.0 * kKv * kHd + 2.0 * kHeads * kHd, 4.0 * len * kHeads * kHd);
}

void bm_rope_kv_store_paged(benchmark::State& state, int n) {
  Buf q(4ull * n * kHeads * kHd, false), k(4ull * n * kKv * kHd, false), v(4ull * n * kKv * kHd, false),
      pos(4ull * n, false), kp(2ull * n * kKv * kHd, false), vp(2ull * n * kKv * kHd, false);
  std::vector<int32_t> slots(n);
  for (int i = 0; i < n; ++i) slots[i] = i;
  Buf slot(4ull * n, false);
  CUDA_CHECK(cudaMemcpy(slot.p, slots.data(), slots.size() * 4, cudaMemcpyHostToDevice));
  timed(
      state,
      [&] {
        cuda::rope_kv_store_paged(q.as<float>(), k.as<float>(), v.as<float>(), pos.as<int32_t>(), slot.as<int32_t>(),
                                  kp.as<bf16>(), vp.as<bf16>(), n, kHeads, kKv, kHd, 1e6f, g->stream);
      },
      8.0 * n * kHeads * kHd + 8.0 * n * kKv * kHd + 4.0 * n * kKv * kHd, 6.0 * n * (kHeads + kKv) * kHd);
}

void bm_rmsnorm(benchmark::State& state, int n) {
  Buf x(4ull * n * kHidden, false), w(2ull * kHidden), out(2ull * n * kHidden, false);
  timed(state, [&] { cuda::rmsnorm(x.as<float>(), w.as<bf16>(), out.as<bf16>(), n, kHidden, 1e-5f, g->stream); },
        4.0 * n * kHidden + 2.0 * kHidden + 2.0 * n * kHidden, 4.0 * n * kHidden);
}

void bm_rope(benchmark::State& state, int n) {
  Buf x(4ull * n * kHeads * kHd, false), pos(4ull * n, false);
  timed(state, [&] { cuda::rope(x.as<float>(), pos.as<int32_t>(), n, kHeads, kHd, 1e6f, g->stream); },
        8.0 * n * kHeads * kHd, 6.0 * n * kHeads * kHd);
}

void bm_embedding(benchmark::State& state, int n) {
  Buf table(2ull * kVocab * kHidden), ids(4ull * n, false), out(4ull * n * kHidden, false);
  timed(state, [&] { cuda::embedding(table.as<bf16>(), ids.as<int32_t>(), out.as<float>(), n, kHidden, g->stream); },
        6.0 * n * kHidden, 0);
}

void bm_router(benchmark::State& state, int n) {
  Buf logits(4ull * n * kExperts, false), ids(4ull * n * kTopK, false), w(4ull * n * kTopK, false);
  timed(state, [&] { cuda::router_topk(logits.as<float>(), ids.as<int32_t>(), w.as<float>(), n, kExperts, kTopK, g->stream); },
        4.0 * n * kExperts + 8.0 * n * kTopK, 0);
}

void bm_argmax(benchmark::State& state, int n) {
  Buf logits(4ull * n * kVocab, false), ids(4ull * n, false);
  timed(state, [&] { cuda::argmax(logits.as<float>(), ids.as<int32_t>(), n, kVocab, g->stream); }, 4.0 * n * kVocab, 0);
}

void bm_synth_fill(benchmark::State& state) {
  const int64_t count = static_cast<int64_t>(kInter) * kHidden;  // one w1: 117 MB
  Buf dst(2ull * count, false);
  timed(state, [&] { cuda::synth_fill_bf16(dst.as<bf16>(), 12345, 0, count, 0.02f, 0.0f, g->stream); }, 2.0 * count, 0);
}

void register_all() {
  const int batches[] = {1, 2, 4, 8, 16, 32, 64};
  auto reg = [](const std::string& name, auto fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(0.05);
  };
  for (int mib : {8, 32, 64, 128, 256, 1024})
    reg("read_stream/MiB:" + std::to_string(mib), [mib](benchmark::State& st) { bm_read_stream(st, mib); });
  for (const Shape& s : kShapes)
    for (int m : batches) {
      if (m <= cuda::kGemvMaxRows)
        reg(std::string("linear/gemv/") + s.name + "/M:" + std::to_string(m),
            [s, m](benchmark::State& st) { bm_linear(st, s, m, cuda::LinearAlgo::gemv); });
      reg(std::string("linear/cublas/") + s.name + "/M:" + std::to_string(m),
          [s, m](benchmark::State& st) { bm_linear(st, s, m, cuda::LinearAlgo::cublas); });
    }
  for (const Shape& s : kShapes)
    for (int m : {3, 5, 6, 7})  // the batch sizes between those above, so n = 1..8 are all measured
      reg(std::string("linear/gemv/") + s.name + "/M:" + std::to_string(m),
          [s, m](benchmark::State& st) { bm_linear(st, s, m, cuda::LinearAlgo::gemv); });
  for (const Shape& s : kShapes)
    for (int m = 1; m <= cuda::kGemvMaxRows; ++m)
      reg(std::string("linear/gemv_tc/") + s.name + "/M:" + std::to_string(m),
          [s, m](benchmark::State& st) { bm_linear(st, s, m, cuda::LinearAlgo::gemv_tc); });
  for (const Shape& s : kShapes)
    for (const cuda::GemvShape& gs : cuda::gemv_shapes())
      reg(std::string("linear/gemv_shape/") + s.name + "/M:1/R:" + std::to_string(gs.rows_per_warp) +
              "/U:" + std::to_string(gs.depth) + "/W:" + std::to_string(gs.warps) + prefetch_suffix(gs),
          [s, gs](benchmark::State& st) { bm_gemv_shape(st, s, gs); });
  reg("linear/gemv_multi/qkv/M:1", [](benchmark::State& st) { bm_linear_multi_qkv(st, nullptr); });
  for (const cuda::GemvShape& gs : cuda::gemv_shapes())
    reg("linear/gemv_multi_shape/qkv/M:1/R:" + std::to_string(gs.rows_per_warp) + "/U:" + std::to_string(gs.depth) +
            "/W:" + std::to_string(gs.warps) + prefetch_suffix(gs),
        [gs](benchmark::State& st) { bm_linear_multi_qkv(st, &gs); });
  // Qwen3-30B-A3B's dense GEMVs at every compiled shape (o_proj 2048 x 4096, lm_head 151936 x 2048, q/k/v).
  for (const Shape& s : {Shape{"qwen3_o_proj", 2048, 4096}, Shape{"qwen3_lm_head", 151936, 2048}})
    for (const cuda::GemvShape& gs : cuda::gemv_shapes())
      reg(std::string("linear/gemv_shape/") + s.name + "/M:1/R:" + std::to_string(gs.rows_per_warp) +
              "/U:" + std::to_string(gs.depth) + "/W:" + std::to_string(gs.warps) + prefetch_suffix(gs),
          [s, gs](benchmark::State& st) { bm_gemv_shape(st, s, gs); });
  for (const Shape& s : {Shape{"q_o_proj", 4096, 4096}, Shape{"qwen3_o_proj", 2048, 4096}})
    reg(std::string("linear/gemv_staged/") + s.name + "/M:1", [s](benchmark::State& st) { bm_gemv_staged(st, s); });
  reg("linear/gemv_multi/qwen3_qkv/M:1", [](benchmark::State& st) { bm_linear_multi_qkv(st, nullptr, true); });
  for (const cuda::GemvShape& gs : cuda::gemv_shapes())
    reg("linear/gemv_multi_shape/qwen3_qkv/M:1/R:" + std::to_string(gs.rows_per_warp) + "/U:" +
            std::to_string(gs.depth) + "/W:" + std::to_string(gs.warps) + prefetch_suffix(gs),
        [gs](benchmark::State& st) { bm_linear_multi_qkv(st, &gs, true); });
  // The same launches with L2 left warm between repetitions (Ctx::l2_warm): o_proj's 33.6 MB
  // and a 32 MiB stream fit the H200's L2, the k/v projections' 8.4 MB too, q/k/v's 50 MB not.
  auto warm = [](auto fn) {
    return [fn](benchmark::State& st) {
      g->l2_warm = true;
      fn(st);
      g->l2_warm = false;
    };
  };
  for (const ChainModel& m : kChainModels) {
    const std::string base = std::string("gemv_chain/") + m.name + "/layers:" + std::to_string(m.layers);
    reg(base + "/persistent",
        [m](benchmark::State& st) { bm_gemv_chain(st, m, cuda::GemvChainMode::persistent, false); });
    reg(base + "/per_op", [m](benchmark::State& st) { bm_gemv_chain(st, m, cuda::GemvChainMode::per_op, false); });
    reg(base + "/independent",
        [m](benchmark::State& st) { bm_gemv_chain(st, m, cuda::GemvChainMode::persistent, true); });
    for (const cuda::GemvChainShape sh : {cuda::GemvChainShape{8, 16}, cuda::GemvChainShape{4, 16},
                                          cuda::GemvChainShape{4, 32}}) {
      const std::string tag = "/warps:" + std::to_string(sh.warps) + "/slot_kib:" + std::to_string(sh.chunk_kib);
      reg(base + "/persistent" + tag,
          [m, sh](benchmark::State& st) { bm_gemv_chain(st, m, cuda::GemvChainMode::persistent, false, sh); });
      reg(base + "/independent" + tag,
          [m, sh](benchmark::State& st) { bm_gemv_chain(st, m, cuda::GemvChainMode::persistent, true, sh); });
    }
  }
  for (const cuda::HandoffMode mode : cuda::kHandoffModes)
    for (const int per_sm : {1, 2, 4})
      for (const int fill : {0, 1}) {
        const cuda::HandoffShape sh{per_sm, fill ? 200 / per_sm : 0, 64, 4096};
        reg(std::string("handoff/") + cuda::handoff_mode_name(mode) + "/blocks_per_sm:" + std::to_string(per_sm) +
                "/fills_sm:" + std::to_string(fill),
            [mode, sh](benchmark::State& st) { bm_handoff(st, mode, sh); });
      }
  reg("l2_warm/read_stream/MiB:8", warm([](benchmark::State& st) { bm_read_stream(st, 8); }));
  reg("l2_warm/read_stream/MiB:32", warm([](benchmark::State& st) { bm_read_stream(st, 32); }));
  for (const Shape& s : kShapes)
    if (std::string(s.name) == "q_o_proj" || std::string(s.name) == "k_v_proj")
      reg(std::string("l2_warm/linear/gemv/") + s.name + "/M:1",
          warm([s](benchmark::State& st) { bm_linear(st, s, 1, cuda::LinearAlgo::gemv); }));
  reg("l2_warm/rmsnorm_gemv_multi/qkv/fused/M:1", warm([](benchmark::State& st) { bm_rmsnorm_qkv(st, true); }));
  reg("rmsnorm_gemv_multi/qkv/fused/M:1", [](benchmark::State& st) { bm_rmsnorm_qkv(st, true); });
  reg("rmsnorm_gemv_multi/qkv/two_launches/M:1", [](benchmark::State& st) { bm_rmsnorm_qkv(st, false); });
  reg("norm_router/mixtral/M:1", [](benchmark::State& st) { bm_norm_router(st); });
  for (int m : {1, 2, 4, 8})
    reg("swiglu_gate_up/fused/M:" + std::to_string(m), [m](benchmark::State& st) { bm_swiglu_gate_up(st, m); });
  for (int m : batches)
    reg("swiglu_expert/M:" + std::to_string(m), [m](benchmark::State& st) { bm_swiglu_expert(st, m); });
  for (int n : {1, 2, 4, 8}) reg("moe_decode_fused/n:" + std::to_string(n), [n](benchmark::State& st) { bm_moe_fused(st, n); });
  reg("norm_router/qwen3/M:1", [](benchmark::State& st) { bm_norm_router_wide(st); });
  reg("norm_router/qwen3/cluster/M:1", [](benchmark::State& st) { bm_norm_router_wide(st, true); });
  reg("moe_small/qwen3/fused", [](benchmark::State& st) { bm_moe_small(st, nullptr); });
  for (const cuda::SmallExpertShape& ss : cuda::small_expert_shapes())
    reg("moe_small/qwen3/gate_up:R" + std::to_string(ss.gu_rows) + "U" + std::to_string(ss.gu_depth) + "W" +
            std::to_string(ss.gu_warps) + "/down:G" + std::to_string(ss.down_slots) + "W" +
            std::to_string(ss.down_warps),
        [ss](benchmark::State& st) { bm_moe_small(st, &ss); });
  for (QuantFormat f : {QuantFormat::fp8, QuantFormat::int8, QuantFormat::int4})
    reg(std::string("dequant/") + quant_format_name(f) + "/14336x4096",
        [f](benchmark::State& st) { bm_dequant(st, f); });
  const std::pair<QuantMat, const char*> mats[] = {{QuantMat::w1, "/w1"}, {QuantMat::w2, "/w2"}};
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (auto [mat, mname] : mats)
      for (int n : {1, 2, 4, 8})  // n = 4: 8 pairs, one on each expert
        reg(std::string("quant_moe_gemv/") + quant_format_name(f) + mname + "/n:" + std::to_string(n),
            [f, mat, n](benchmark::State& st) { bm_quant_moe_gemv(st, f, mat, n, cuda::kDefaultQuantGemvShape); });
  // A batched decode step's gate/up + SiLU and down + combine launches with one and two row tiles a block
  // (MOEBENCH_QUANT_BATCH_TILES).
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (auto [mat, mname] : {std::pair<QuantMat, const char*>{QuantMat::gate_up_silu, "/gate_up_silu"},
                              {QuantMat::down_combine, "/down_combine"}})
      for (int n : {8, 16, 32})
        for (int tiles : {1, 2})
          reg(std::string("quant_moe_gemv_tiles/") + quant_format_name(f) + mname + "/n:" + std::to_string(n) +
                  "/tiles:" + std::to_string(tiles),
              [f, mat, n, tiles](benchmark::State& st) {
                cuda::QuantGemvShape shape;
                shape.tiles = tiles;
                bm_quant_moe_gemv(st, f, mat, n, shape, f == QuantFormat::int4);
              });
  // The model's launches (the plain kernel: gate_up_silu and down_combine fused, as the
  // model runs them; [w1; w3] as one matrix, as the unfused path does) and the pipelined
  // kernel's shapes beside them (gate_up: the fused form); the L2 prefetch window side by
  // side (pf:0 none).
  const std::pair<QuantMat, const char*> fmats[] = {
      {QuantMat::gate_up, "/gate_up"}, {QuantMat::gate_up_silu, "/gate_up_silu"}, {QuantMat::down_combine, "/down_combine"}};
  // n = 16 and 32: a batched decode step of 16 / 32 sequences (4 and 8 pairs on every expert).
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (auto [mat, mname] : fmats)
      for (int n : {1, 2, 4, 8, 16, 32})
        reg(std::string("quant_moe_gemv/") + quant_format_name(f) + mname + "/n:" + std::to_string(n),
            [f, mat, n](benchmark::State& st) { bm_quant_moe_gemv(st, f, mat, n, cuda::kDefaultQuantGemvShape); });
  const std::pair<QuantMat, const char*> pfmats[] = {{QuantMat::w1, "/w1"},
                                                     {QuantMat::w2, "/w2"},
                                                     {QuantMat::gate_up_silu, "/gate_up_silu"},
                                                     {QuantMat::down_combine, "/down_combine"}};
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (auto [mat, mname] : pfmats)
      for (int pf : {0, 1, 2, 4})
        reg(std::string("quant_moe_gemv_pf/") + quant_format_name(f) + mname + "/n:1/pf:" + std::to_string(pf),
            [f, mat, pf](benchmark::State& st) {
              cuda::QuantGemvShape shape;
              shape.pf = pf;
              bm_quant_moe_gemv(st, f, mat, 1, shape);
            });
  // The inner-loop variants side by side (var:0 the plain loop; bits 1 early scales, 2 the
  // super-steps' mma chains interleaved, 4 double-buffered batches, 8 the batches staged
  // through a ring in shared memory; 32 .. 38 the warp-row kernels' launch shapes, 40 .. 42
  // the exact warp kernels', quant_gemv_rows.h), batch 1 and 8 tokens.
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (auto [mat, mname] : pfmats)
      for (int n : {1, 8})
        for (int var : {0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 32, 33, 34, 35, 36, 37, 38, 40, 41, 42, 43, 44, 45})
          reg(std::string("quant_moe_gemv_var/") + quant_format_name(f) + mname + "/n:" + std::to_string(n) +
                  "/var:" + std::to_string(var),
              [f, mat, n, var](benchmark::State& st) {
                cuda::QuantGemvShape shape;
                shape.var = var;
                bm_quant_moe_gemv(st, f, mat, n, shape);
              });
  // int4 in the paired word order (the resident model's with MOEBENCH_INT4_PAIRED=1): the
  // plain and the staged loop and the warp-row kernels.
  for (auto [mat, mname] : pfmats)
    for (int n : {1, 8})
      for (int var : {0, 8, 32, 33, 34, 35, 36, 37, 38, 40, 41, 42, 43, 44, 45})
        reg(std::string("quant_moe_gemv_var/int4p") + mname + "/n:" + std::to_string(n) + "/var:" + std::to_string(var),
            [mat, n, var](benchmark::State& st) {
              cuda::QuantGemvShape shape;
              shape.var = var;
              bm_quant_moe_gemv(st, QuantFormat::int4, mat, n, shape, true);
            });
  // The plain kernel with a block taking seq tiles in turn (one start per seq tiles).
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (auto [mat, mname] : pfmats)
      for (int seq : {2, 4}) {
        if (mat == QuantMat::down_combine) continue;
        reg(std::string("quant_moe_gemv_seq/") + quant_format_name(f) + mname + "/n:1/seq:" + std::to_string(seq),
            [f, mat, seq](benchmark::State& st) {
              cuda::QuantGemvShape shape;
              shape.seq = seq;
              bm_quant_moe_gemv(st, f, mat, 1, shape);
            });
      }
  const std::pair<QuantMat, const char*> pmats[] = {
      {QuantMat::w1, "/w1"}, {QuantMat::w2, "/w2"}, {QuantMat::gate_up, "/gate_up"}};
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (auto [mat, mname] : pmats)
      for (int n : {1, 2})
        for (int warps : {4, 8})
          for (int depth : {2, 4}) {
            if (mat == QuantMat::gate_up && depth != 2) continue;
            reg(std::string("quant_moe_gemv_pipe/") + quant_format_name(f) + mname + "/n:" + std::to_string(n) +
                    "/warps:" + std::to_string(warps) + "/depth:" + std::to_string(depth),
                [f, mat, n, warps, depth](benchmark::State& st) {
                  bm_quant_moe_gemv(st, f, mat, n, cuda::QuantGemvShape{warps, depth, 0, 1});
                });
          }
  for (QuantFormat f : {QuantFormat::int4, QuantFormat::int8, QuantFormat::fp8})
    for (bool down : {false, true})
      for (int n : {1, 2})
        for (int warps : {2, 4, 8, 16})
          for (std::pair<int, int> dt : {std::pair<int, int>{4, 1}, {8, 1}, {4, 2}, {2, 1}}) {
            const int depth = dt.first, tiles = dt.second;
            reg(std::string("quant_moe_gemv_shape/") + quant_format_name(f) + (down ? "/w2" : "/w1") + "/n:" +
                    std::to_string(n) + "/warps:" + std::to_string(warps) + "/depth:" + std::to_string(depth) +
                    (tiles > 1 ? "/tiles:" + std::to_string(tiles) : std::string()),
                [f, down, n, warps, depth, tiles](benchmark::State& st) {
                  bm_quant_moe_gemv(st, f, down ? QuantMat::w2 : QuantMat::w1, n,
                                    cuda::QuantGemvShape{warps, depth, tiles});
                });
          }
  for (int pos0 : {128, 1024, 4096, 16384})
    reg("attention/decode/len:" + std::to_string(pos0 + 1), [pos0](benchmark::State& st) { bm_attention(st, 1, pos0); });
  for (int n : {8, 64})
    reg("attention/decode_batch_rows/n:" + std::to_string(n) + "/pos0:1024",
        [n](benchmark::State& st) { bm_attention(st, n, 1024); });
  for (int n : {50, 200, 512})
    reg("attention/prefill/n:" + std::to_string(n), [n](benchmark::State& st) { bm_attention(st, n, 0); });
  for (int b : {1, 8, 16})
    for (int len : {178, 1025, 4097})
      for (bool split : {false, true})
        reg("paged_attention/" + std::string(split ? "split" : "unsplit") + "/B:" + std::to_string(b) +
                "/len:" + std::to_string(len),
            [b, len, split](benchmark::State& st) { bm_paged_attention(st, b, len, split); });
  for (int len : {50, 178, 1025})
    for (int fold : {0, 1, 2, 3})
      reg("decode_attention_fold/" + std::string(fold == 0 ? "launches" : fold == 1 ? "rope_in" : fold == 2 ? "merge_in" : "both") +
              "/len:" + std::to_string(len),
          [len, fold](benchmark::State& st) { bm_decode_attention_fold(st, len, fold); });
  for (int n : {1, 64}) {
    const std::string sn = std::to_string(n);
    reg("rope_kv_store_paged/n:" + sn, [n](benchmark::State& st) { bm_rope_kv_store_paged(st, n); });
    reg("rmsnorm/n:" + sn, [n](benchmark::State& st) { bm_rmsnorm(st, n); });
    reg("rope/n:" + sn, [n](benchmark::State& st) { bm_rope(st, n); });
    reg("embedding/n:" + sn, [n](benchmark::State& st) { bm_embedding(st, n); });
    reg("router_topk/n:" + sn, [n](benchmark::State& st) { bm_router(st, n); });
    reg("argmax/n:" + sn, [n](benchmark::State& st) { bm_argmax(st, n); });
  }
  reg("synth_fill/w1", [](benchmark::State& st) { bm_synth_fill(st); });
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (!cuda::gpu_available()) {
    std::printf("moebench_bench: no GPU present; kernel benchmarks skipped\n");
    return 0;
  }
  Ctx ctx;
  g = &ctx;
  const cuda::DeviceInfo dev = cuda::device_info();
  benchmark::AddCustomContext("device", dev.name);
  benchmark::AddCustomContext("sm_count", std::to_string(dev.sm_count));
  const bool stream_first = env_str("MOEBENCH_BENCH_STREAM_FIRST") == "1";
  if (stream_first) ctx.read_stream_bps = cuda::measure_hbm_read(1ull << 30, 20).gbps * 1e9;
  ctx.arena = std::make_unique<cuda::DeviceArena>(8ull << 30, "bench arena");
  ctx.blas = std::make_unique<cuda::Blas>(ctx.arena.get());
  CUDA_CHECK(cudaStreamCreate(&ctx.stream));
  CUDA_CHECK(cudaEventCreate(&ctx.start));
  CUDA_CHECK(cudaEventCreate(&ctx.stop));
  ctx.flush = ctx.arena->alloc(Ctx::kFlushBytes, "L2 flush");
  // After the arena: its own 1 GiB cudaMalloc/cudaFree, made before, would move the arena
  // in device memory and every benchmark buffer with it, so that a before/after pair of
  // builds would also compare two memory placements.
  if (!stream_first) ctx.read_stream_bps = cuda::measure_hbm_read(1ull << 30, 20).gbps * 1e9;
  benchmark::AddCustomContext("stream_measured", stream_first ? "before the arena" : "after the arena");
  benchmark::AddCustomContext("read_stream_gbps", std::to_string(ctx.read_stream_bps / 1e9));
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  CUDA_CHECK(cudaEventDestroy(ctx.start));
  CUDA_CHECK(cudaEventDestroy(ctx.stop));
  CUDA_CHECK(cudaStreamDestroy(ctx.stream));
  ctx.blas.reset();
  ctx.arena.reset();
  return 0;
}

#else  // built without CUDA: nothing to measure here

#include <cstdio>
int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  std::printf("moebench_bench: built without CUDA (MOEBENCH_CUDA=OFF); kernel benchmarks skipped\n");
  return 0;
}

#endif  // MOEBENCH_HAVE_CUDA
