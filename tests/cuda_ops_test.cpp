// cuda_ops_test.cpp: every CUDA op (engine/cuda/ops.cuh) against its CPU reference
// (engine/ops/ops.h) on randomised shapes including odd sizes; synth_fill bit-identity
// with the host generator; the device arena's cap, peak and error. Skipped, with a
// message, when no GPU is present. Tolerance: |got - ref| <= atol + rtol * |ref|, with
// rtol = eps(bf16) = 2^-7 where the GPU rounds an output or an intermediate to bf16,
// and atol scaled by sqrt(K) (or K) for reductions over K terms; the first mismatches print.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/blas.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/ep_ops.h"
#include "engine/cuda/ops.cuh"
#include "engine/dtype.h"
#include "common/error.h"
#include "engine/ops/ops.h"
#include "engine/synth_rng.h"
#include "engine/weight_source.h"
#include "engine/weights.h"

namespace cuda_ops_test {

using namespace moebench;
using cuda::bf16;

namespace {

constexpr float kEpsBf16 = 1.0f / 128;  // torch.finfo(torch.bfloat16).eps

std::vector<float> rnd(size_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
// Rounds to bf16-representable values (so CPU and GPU see the same inputs).
std::vector<float> round_bf16(std::vector<float> v) {
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}
std::vector<uint16_t> bits_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = f32_to_bf16(v[i]);
  return b;
}

// Checks got against ref; prints the first few mismatches; returns the mismatch count.
size_t check_close(const char* what, const std::vector<float>& got, const std::vector<float>& ref, float atol,
                   float rtol) {
  EXPECT_EQ(got.size(), ref.size());
  size_t bad = 0;
  for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
    const float tol = atol + rtol * std::fabs(ref[i]);
    if (!(std::fabs(got[i] - ref[i]) <= tol)) {
      if (bad < 5)
        ADD_FAILURE() << what << ": mismatch at " << i << ": got " << got[i] << ", ref " << ref[i] << ", tol "
                      << tol;
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << ref.size() << " elements out of tolerance";
  return bad;
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA op tests skipped";
    arena_ = std::make_unique<cuda::DeviceArena>(3ull << 30, "test arena");
    blas_ = std::make_unique<cuda::Blas>(arena_.get());
    CUDA_CHECK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
    blas_.reset();
    arena_.reset();
  }
  template <typename T>
  T* up(const std::vector<T>& v) {
    T* d = arena_->alloc_n<T>(std::max<size_t>(v.size(), 1), "test buffer");
    CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
  }
  bf16* up_bf16(const std::vector<float>& v) { return reinterpret_cast<bf16*>(up(bits_bf16(v))); }
  template <typename T>
  T* zeros(size_t n) {
    T* d = arena_->alloc_n<T>(std::max<size_t>(n, 1), "test buffer");
    CUDA_CHECK(cudaMemset(d, 0, n * sizeof(T)));
    return d;
  }
  template <typename T>
  std::vector<T> down(const T* d, size_t n) {
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<T> v(n);
    CUDA_CHECK(cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  std::vector<float> down_bf16(const bf16* d, size_t n) {
    auto b = down(reinterpret_cast<const uint16_t*>(d), n);
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = bf16_to_f32(b[i]);
    return f;
  }
  std::unique_ptr<cuda::DeviceArena> arena_;
  std::unique_ptr<cuda::Blas> blas_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

TEST_F(CudaOps, SynthFillBitIdenticalToHost) {
  for (auto [scale, offset] : {std::pair{0.02f, 0.0f}, std::pair{0.1f, 1.0f}}) {
    TensorSpec s{"model.layers.1.block_sparse_moe.experts.3.w1.weight", {1001, 1003}, scale, offset};
    const uint64_t seed = 1234567;
    const int64_t begin = 4099, count = s.numel() - begin;
    std::vector<uint16_t> host(count);
    synth_fill(s, seed, DType::bf16, host.data(), begin, count);
    bf16* d = arena_->alloc_n<bf16>(count, "synth");
    cuda::synth_fill_bf16(d, synth::tensor_key(seed, synth::name_hash(s.name)), begin, count, s.init_scale,
                          s.init_offset, stream_);
    auto dev = down(reinterpret_cast<const uint16_t*>(d), count);
    size_t diff = 0, first = 0;
    for (int64_t i = 0; i < count; ++i)
      if (dev[i] != host[i] && diff++ == 0) first = i;
    EXPECT_EQ(diff, 0u) << "first difference at " << first << ": device " << dev[first] << " host " << host[first];
  }
}

TEST_F(CudaOps, Embedding) {
  const int vocab = 97, dim = 75, n = 13;
  auto table = round_bf16(rnd(vocab * dim, -1, 1, 1));
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = (i * 37 + 5) % vocab;
  std::vector<float> ref(n * dim);
  cpu::embedding(table.data(), ids.data(), ref.data(), n, dim);
  float* out = zeros<float>(n * dim);
  cuda::embedding(up_bf16(table), up(ids), out, n, dim, stream_);
  check_close("embedding", down(out, n * dim), ref, 0, 0);
}

TEST_F(CudaOps, AddAndToBf16) {
  const int n = 3, dim = 1001;
  auto x = rnd(n * dim, -1, 1, 2), y = rnd(n * dim, -1, 1, 3);
  float* dx = up(x);
  cuda::add_inplace(dx, up(y), n, dim, stream_);
  std::vector<float> ref = x;
  cpu::add_inplace(ref.data(), y.data(), n, dim);
  check_close("add_inplace", down(dx, n * dim), ref, 0, 0);
  bf16* b = zeros<bf16>(n * dim);
  cuda::to_bf16(dx, b, n * dim, stream_);
  check_close("to_bf16", down_bf16(b, n * dim), round_bf16(ref), 0, 0);
}

TEST_F(CudaOps, RmsNorm) {
  for (auto [n, dim] : {std::pair{7, 4096}, std::pair{1, 333}, std::pair{5, 64}}) {
    auto x = rnd(n * dim, -3, 3, 4 + dim);
    auto w = round_bf16(rnd(dim, 0.5f, 1.5f, 5));
    std::vector<float> ref(n * dim);
    cpu::rmsnorm(x.data(), w.data(), ref.data(), n, dim, 1e-5f);
    bf16* out = zeros<bf16>(n * dim);
    cuda::rmsnorm(up(x), up_bf16(w), out, n, dim, 1e-5f, stream_);
    check_close("rmsnorm", down_bf16(out, n * dim), ref, 1e-6f, kEpsBf16);
  }
}

TEST_F(CudaOps, RopeAndKvStore) {
  const int n = 9, heads = 5, hd = 128;
  auto x = rnd(n * heads * hd, -1, 1, 6);
  std::vector<int32_t> pos(n);
  for (int i = 0; i < n; ++i) pos[i] = i * 457 + 3;
  std::vector<float> ref = x;
  cpu::rope(ref.data(), pos.data(), n, heads, hd, 1e6f);
  float* dx = up(x);
  cuda::rope(dx, up(pos), n, heads, hd, 1e6f, stream_);
  check_close("rope", down(dx, x.size()), ref, 2e-3f, 1e-5f);

  const int n_kv = 3, d = 64, pos0 = 11, max_len = 40;
  auto k = rnd(n * n_kv * d, -1, 1, 7), v = rnd(n * n_kv * d, -1, 1, 8);
  bf16* kc = zeros<bf16>(max_len * n_kv * d);
  bf16* vc = zeros<bf16>(max_len * n_kv * d);
  cuda::kv_store(up(k), up(v), kc, vc, n, pos0, n_kv, d, stream_);
  auto kd = down_bf16(kc, max_len * n_kv * d), vd = down_bf16(vc, max_len * n_kv * d);
  std::vector<float> kr(kd.begin() + pos0 * n_kv * d, kd.begin() + (pos0 + n) * n_kv * d);
  std::vector<float> vr(vd.begin() + pos0 * n_kv * d, vd.begin() + (pos0 + n) * n_kv * d);
  check_close("kv_store k", kr, round_bf16(k), 0, 0);
  check_close("kv_store v", vr, round_bf16(v), 0, 0);
  EXPECT_EQ(kd[(pos0 - 1) * n_kv * d], 0.0f);
}

TEST_F(CudaOps, AttentionPrefillAndDecode) {
  struct Case {
    int n, pos0, heads, kv, hd;
  };
  for (Case c : {Case{1, 0, 4, 2, 32}, Case{1, 777, 32, 8, 128}, Case{37, 0, 32, 8, 128}, Case{5, 100, 6, 3, 64},
                 Case{19, 3, 4, 4, 16}, Case{1, 4000, 8, 1, 96}, Case{3, 1500, 32, 8, 128}, Case{70, 33, 2, 1, 128}}) {
    SCOPED_TRACE(testing::Message() << "n " << c.n << " pos0 " << c.pos0 << " heads " << c.heads << " kv " << c.kv
                                    << " hd " << c.hd);
    const int len = c.pos0 + c.n;
    auto q = rnd(static_cast<size_t>(c.n) * c.heads * c.hd, -2, 2, 9 + c.n);
    auto kc = round_bf16(rnd(static_cast<size_t>(len) * c.kv * c.hd, -2, 2, 10 + c.pos0));
    auto vc = round_bf16(rnd(static_cast<size_t>(len) * c.kv * c.hd, -1, 1, 11 + c.hd));
    std::vector<float> ref(static_cast<size_t>(c.n) * c.heads * c.hd);
    cpu::attention(q.data(), kc.data(), vc.data(), ref.data(), c.n, c.pos0, c.heads, c.kv, c.hd);
    const size_t ws_n = cuda::attention_workspace_floats(c.n, c.pos0, c.heads, c.kv, c.hd);
    float* ws = ws_n ? zeros<float>(ws_n) : nullptr;
    bf16* out = zeros<bf16>(ref.size());
    cuda::attention(up(q), up_bf16(kc), up_bf16(vc), out, c.n, c.pos0, c.heads, c.kv, c.hd, ws, stream_);
    check_close("attention", down_bf16(out, ref.size()), ref, 2e-3f, kEpsBf16);
  }
}

TEST_F(CudaOps, RouterTopK) {
  struct Case {
    int n, experts, k;
  };
  for (Case c : {Case{33, 8, 2}, Case{7, 61, 6}, Case{4, 256, 8}, Case{1, 3, 3}}) {
    std::mt19937 g(c.experts);
    std::normal_distribution<float> d(0, 2);
    std::vector<float> logits(c.n * c.experts);
    for (auto& v : logits) v = d(g);
    logits[0] = logits[1];  // a tie: the lower index must come first
    std::vector<int32_t> ids(c.n * c.k);
    std::vector<float> w(c.n * c.k);
    cpu::router_topk(logits.data(), ids.data(), w.data(), c.n, c.experts, c.k);
    int32_t* did = zeros<int32_t>(ids.size());
    float* dw = zeros<float>(w.size());
    cuda::router_topk(up(logits), did, dw, c.n, c.experts, c.k, stream_);
    EXPECT_EQ(down(did, ids.size()), ids) << "experts " << c.experts << " k " << c.k;
    check_close("router weights", down(dw, w.size()), w, 1e-6f, 1e-5f);
  }
}

TEST_F(CudaOps, LinearGemvAndCublas) {
  struct Case {
    int n, in, out;
    cuda::LinearAlgo algo;
    bool acc;
  };
  using A = cuda::LinearAlgo;
  for (Case c : {Case{1, 4096, 1027, A::automatic, false}, Case{2, 72, 33, A::automatic, true},
                 Case{3, 4096, 515, A::gemv, false}, Case{5, 1024, 777, A::automatic, false},
                 Case{8, 4096, 1024, A::automatic, true}, Case{7, 100, 17, A::gemv, false},
                 Case{1, 37, 5, A::automatic, false}, Case{9, 256, 129, A::automatic, false},
                 Case{33, 4096, 1024, A::automatic, true}, Case{1, 4096, 64, A::cublas, false},
                 Case{64, 1000, 65, A::automatic, false},
                 // GEMV tails: 4104 inputs = 513 chunks of 8 (not a multiple of 32 lanes x the
                 // unroll); 2113 and 8449 rows select 2 and 4 rows per warp with a partial last warp.
                 Case{1, 4104, 2113, A::gemv, true}, Case{4, 1032, 8449, A::gemv, false}}) {
    SCOPED_TRACE(testing::Message() << "n " << c.n << " in " << c.in << " out " << c.out << " algo "
                                    << static_cast<int>(c.algo) << " acc " << c.acc);
    auto x = round_bf16(rnd(static_cast<size_t>(c.n) * c.in, -1, 1, c.in + c.n));
    auto w = round_bf16(rnd(static_cast<size_t>(c.out) * c.in, -0.05f, 0.05f, c.out));
    auto y0 = rnd(static_cast<size_t>(c.n) * c.out, -1, 1, 3);
    std::vector<float> ref(y0.size());
    cpu::linear(x.data(), w.data(), ref.data(), c.n, c.in, c.out);
    if (c.acc)
      for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
    float* y = up(y0);
    cuda::linear(up_bf16(x), up_bf16(w), y, c.n, c.in, c.out, c.acc, blas_->get(), stream_, c.algo);
    check_close("linear", down(y, ref.size()), ref, 1e-5f * c.in * 0.05f, 1e-5f);
  }
}

// Every compiled launch shape of the one-row GEMV gives gemv's bits (the same lane order
// per row) and matches the CPU reference: rows not a multiple of any block's rows (1027,
// 2113, 33), rows fewer than one block (5), a row length not a multiple of 32 lanes x
// the depth (4104 = 513 chunks), accumulate on and off; and an uncompiled shape is a
// one-line error.
TEST_F(CudaOps, GemvEveryShapeSameBits) {
  struct Case {
    int in, out;
    bool acc;
  };
  ASSERT_FALSE(cuda::gemv_shapes().empty());
  for (Case c : {Case{4096, 1027, false}, Case{4104, 2113, true}, Case{14336, 33, false}, Case{72, 5, true}}) {
    auto x = round_bf16(rnd(c.in, -1, 1, c.in));
    auto w = round_bf16(rnd(static_cast<size_t>(c.out) * c.in, -0.05f, 0.05f, c.out));
    auto y0 = rnd(c.out, -1, 1, 5);
    std::vector<float> ref(y0.size());
    cpu::linear(x.data(), w.data(), ref.data(), 1, c.in, c.out);
    if (c.acc)
      for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
    const bf16* dx = up_bf16(x);
    const bf16* dw = up_bf16(w);
    float* y = up(y0);
    cuda::gemv(dx, dw, y, 1, c.in, c.out, c.acc, stream_);
    const auto base = down(y, ref.size());
    check_close("gemv", base, ref, 1e-5f * c.in * 0.05f, 1e-5f);
    for (const cuda::GemvShape& gs : cuda::gemv_shapes()) {
      SCOPED_TRACE(testing::Message() << "in " << c.in << " out " << c.out << " R " << gs.rows_per_warp << " U "
                                      << gs.depth << " W " << gs.warps << " PF " << gs.prefetch);
      CUDA_CHECK(cudaMemcpy(y, y0.data(), y0.size() * 4, cudaMemcpyHostToDevice));
      cuda::gemv_shaped(dx, dw, y, c.in, c.out, c.acc, gs, stream_);
      const auto got = down(y, ref.size());
      EXPECT_EQ(0, std::memcmp(got.data(), base.data(), got.size() * 4)) << "not gemv's bits";
    }
  }
  try {
    cuda::gemv_shaped(nullptr, nullptr, nullptr, 8, 1, false, cuda::GemvShape{3, 3, 3}, stream_);
    FAIL() << "an uncompiled shape was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no compiled shape with 3 rows per warp"), std::string::npos) << e.what();
  }
}

// linear_multi's one launch over q/k/v-like matrices of different row counts (none a
// multiple of a block's rows) gives, in every shape, the bits of gemv per matrix.
TEST_F(CudaOps, GemvMultiEveryShapeSameBits) {
  constexpr int kIn = 1032, kMats = 3;
  const int rows[kMats] = {515, 129, 33};
  auto x = round_bf16(rnd(kIn, -1, 1, 17));
  const bf16* dx = up_bf16(x);
  const bf16* dw[kMats];
  float* dy[kMats];
  std::vector<std::vector<float>> base(kMats);
  for (int s = 0; s < kMats; ++s) {
    dw[s] = up_bf16(round_bf16(rnd(static_cast<size_t>(rows[s]) * kIn, -0.05f, 0.05f, 40 + s)));
    dy[s] = zeros<float>(rows[s]);
    cuda::gemv(dx, dw[s], dy[s], 1, kIn, rows[s], false, stream_);
    base[s] = down(dy[s], rows[s]);
  }
  for (const cuda::GemvShape& gs : cuda::gemv_shapes()) {
    SCOPED_TRACE(testing::Message() << "R " << gs.rows_per_warp << " U " << gs.depth << " W " << gs.warps << " PF "
                                    << gs.prefetch);
    for (int s = 0; s < kMats; ++s) CUDA_CHECK(cudaMemset(dy[s], 0xff, rows[s] * 4));
    cuda::linear_multi_shaped(dx, dw, dy, rows, kMats, kIn, gs, stream_);
    for (int s = 0; s < kMats; ++s) {
      const auto got = down(dy[s], rows[s]);
      EXPECT_EQ(0, std::memcmp(got.data(), base[s].data(), got.size() * 4)) << "matrix " << s << ": not gemv's bits";
    }
  }
}

// The tensor-core GEMV: 16-row tiles (partial last tiles), row lengths not a multiple
// of a super-step (4 chunks of 8 inputs), 4 / 8 / 16 warps per block splitting the row
// (the launcher picks them by the number of tiles: 8449, 2113 and 1027 rows), all n.
TEST_F(CudaOps, GemvTensorCores) {
  struct Case {
    int n, in, out;
    bool acc;
  };
  for (Case c : {Case{1, 4096, 1027, false}, Case{3, 4104, 515, true}, Case{8, 1032, 8449, false},
                 Case{5, 4096, 2113, true}, Case{2, 72, 33, false}, Case{7, 14336, 96, false},
                 Case{4, 8, 17, true}, Case{6, 520, 300, false}}) {
    SCOPED_TRACE(testing::Message() << "n " << c.n << " in " << c.in << " out " << c.out << " acc " << c.acc);
    auto x = round_bf16(rnd(static_cast<size_t>(c.n) * c.in, -1, 1, c.in + c.n));
    auto w = round_bf16(rnd(static_cast<size_t>(c.out) * c.in, -0.05f, 0.05f, c.out));
    auto y0 = rnd(static_cast<size_t>(c.n) * c.out, -1, 1, 3);
    std::vector<float> ref(y0.size());
    cpu::linear(x.data(), w.data(), ref.data(), c.n, c.in, c.out);
    if (c.acc)
      for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
    float* y = up(y0);
    cuda::linear(up_bf16(x), up_bf16(w), y, c.n, c.in, c.out, c.acc, nullptr, stream_, cuda::LinearAlgo::gemv_tc);
    check_close("gemv_tc", down(y, ref.size()), ref, 1e-5f * c.in * 0.05f, 1e-5f);
  }
}

TEST_F(CudaOps, SwigluExpert) {
  struct Case {
    int n, hidden, inter;
  };
  for (Case c : {Case{1, 256, 344}, Case{3, 512, 1024}, Case{8, 128, 256}, Case{12, 256, 200}, Case{2, 100, 60},
                 Case{1, 4096, 14336}}) {
    SCOPED_TRACE(testing::Message() << "n " << c.n << " hidden " << c.hidden << " inter " << c.inter);
    auto x = round_bf16(rnd(static_cast<size_t>(c.n) * c.hidden, -1, 1, c.hidden));
    auto w1 = round_bf16(rnd(static_cast<size_t>(c.inter) * c.hidden, -0.1f, 0.1f, 20));
    auto w3 = round_bf16(rnd(static_cast<size_t>(c.inter) * c.hidden, -0.1f, 0.1f, 21));
    auto w2 = round_bf16(rnd(static_cast<size_t>(c.hidden) * c.inter, -0.1f, 0.1f, 22));
    std::vector<float> ref(static_cast<size_t>(c.n) * c.hidden), scratch(2ull * c.n * c.inter);
    cpu::swiglu_expert(x.data(), w1.data(), w3.data(), w2.data(), ref.data(), scratch.data(), c.n, c.hidden,
                       c.inter);
    float rms = 0;
    for (float v : ref) rms += v * v;
    rms = std::sqrt(rms / ref.size());
    void* sc = arena_->alloc(cuda::swiglu_scratch_bytes(c.n, c.inter), "swiglu scratch");
    float* out = zeros<float>(ref.size());
    cuda::swiglu_expert(up_bf16(x), up_bf16(w1), up_bf16(w3), up_bf16(w2), out, sc, c.n, c.hidden, c.inter, false,
                        blas_->get(), stream_);
    // h is rounded to bf16 on the GPU (the matmul-input convention): error ~ eps * rms(out).
    check_close("swiglu", down(out, ref.size()), ref, kEpsBf16 * rms, kEpsBf16);
  }
}

TEST_F(CudaOps, SwigluGateUpFusedAllRowCounts) {
  const int hidden = 512, inter = 264;
  for (int n = 1; n <= cuda::kGemvMaxRows; ++n) {
    SCOPED_TRACE(testing::Message() << "n " << n);
    auto x = round_bf16(rnd(static_cast<size_t>(n) * hidden, -1, 1, 50 + n));
    auto w1 = round_bf16(rnd(static_cast<size_t>(inter) * hidden, -0.1f, 0.1f, 51));
    auto w3 = round_bf16(rnd(static_cast<size_t>(inter) * hidden, -0.1f, 0.1f, 52));
    std::vector<float> g(static_cast<size_t>(n) * inter), u(g.size()), ref(g.size());
    cpu::linear(x.data(), w1.data(), g.data(), n, hidden, inter);
    cpu::linear(x.data(), w3.data(), u.data(), n, hidden, inter);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    bf16* h = zeros<bf16>(ref.size());
    cuda::swiglu_gate_up(up_bf16(x), up_bf16(w1), up_bf16(w3), h, n, hidden, inter, stream_);
    check_close("swiglu_gate_up", down_bf16(h, ref.size()), ref, 1e-5f, kEpsBf16);
  }
}

TEST_F(CudaOps, MoeDecodeFused) {
  // The last case: 48 pairs over 40 experts, so first uses fall in both 32-pair words of
  // the kernels' expert bookkeeping (gemv_core.cuh pair_first_uses).
  for (auto [n, hidden, inter, experts, k] : {std::tuple{1, 256, 512, 8, 2}, std::tuple{3, 128, 344, 8, 2},
                                               std::tuple{8, 256, 128, 8, 2}, std::tuple{8, 128, 64, 40, 6}}) {
    SCOPED_TRACE(testing::Message() << "n " << n << " hidden " << hidden << " inter " << inter << " experts " << experts
                                    << " k " << k);
    auto x = round_bf16(rnd(static_cast<size_t>(n) * hidden, -1, 1, n));
    std::vector<std::vector<float>> w1(experts), w3(experts), w2(experts);
    std::vector<const bf16*> p1(experts), p3(experts), p2(experts);
    for (int e = 0; e < experts; ++e) {
      w1[e] = round_bf16(rnd(static_cast<size_t>(inter) * hidden, -0.1f, 0.1f, 100 + e));
      w3[e] = round_bf16(rnd(static_cast<size_t>(inter) * hidden, -0.1f, 0.1f, 200 + e));
      w2[e] = round_bf16(rnd(static_cast<size_t>(hidden) * inter, -0.1f, 0.1f, 300 + e));
      p1[e] = up_bf16(w1[e]);
      p3[e] = up_bf16(w3[e]);
      p2[e] = up_bf16(w2[e]);
    }
    auto logits = rnd(static_cast<size_t>(n) * experts, -2, 2, 7 + n);
    std::vector<int32_t> ids(n * k);
    std::vector<float> wts(n * k);
    cpu::router_topk(logits.data(), ids.data(), wts.data(), n, experts, k);
    auto out0 = rnd(static_cast<size_t>(n) * hidden, -1, 1, 5);
    std::vector<float> ref = out0, y(hidden), scratch(2ull * inter);
    float rms = 0;
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < k; ++j) {
        const int e = ids[i * k + j];
        cpu::swiglu_expert(x.data() + static_cast<size_t>(i) * hidden, w1[e].data(), w3[e].data(), w2[e].data(),
                           y.data(), scratch.data(), 1, hidden, inter);
        for (int d = 0; d < hidden; ++d) {
          ref[static_cast<size_t>(i) * hidden + d] += wts[i * k + j] * y[d];
          rms += y[d] * y[d];
        }
      }
    }
    rms = std::sqrt(rms / (n * k * hidden));
    bf16* h = zeros<bf16>(static_cast<size_t>(n) * k * inter);
    float* out = up(out0);
    cuda::moe_decode_fused(up_bf16(x), up(ids), up(wts), up(p1), up(p3), up(p2), h, out, n, k, experts, hidden,
                           inter, stream_);
    check_close("moe_decode_fused", down(out, ref.size()), ref, kEpsBf16 * rms, kEpsBf16);
  }
}

// Expert parallelism (engine/cuda/ep_ops.h): the pairs of experts held elsewhere are
// marked -1 (and counted: distinct held experts, kept pairs), moe_decode_fused then
// computes the kept pairs only (the CPU sum over them), both down kernels alike, and the
// sorted path's combine adds the kept pairs' rows only (bit for bit: the same fmaf order).
TEST_F(CudaOps, ExpertParallelSkipsPairsHeldElsewhere) {
  const int n = 4, hidden = 256, inter = 512, experts = 8, k = 2;
  const std::vector<uint8_t> local = {1, 0, 1, 0, 1, 0, 1, 0};  // round-robin rank 0 of 2
  auto x = round_bf16(rnd(static_cast<size_t>(n) * hidden, -1, 1, 11));
  std::vector<std::vector<float>> w1(experts), w3(experts), w2(experts);
  std::vector<const bf16*> p1(experts), p3(experts), p2(experts);
  for (int e = 0; e < experts; ++e) {
    w1[e] = round_bf16(rnd(static_cast<size_t>(inter) * hidden, -0.1f, 0.1f, 400 + e));
    w3[e] = round_bf16(rnd(static_cast<size_t>(inter) * hidden, -0.1f, 0.1f, 500 + e));
    w2[e] = round_bf16(rnd(static_cast<size_t>(hidden) * inter, -0.1f, 0.1f, 600 + e));
    if (!local[e]) continue;  // another GPU's: no weights here (a null table entry)
    p1[e] = up_bf16(w1[e]);
    p3[e] = up_bf16(w3[e]);
    p2[e] = up_bf16(w2[e]);
  }
  const std::vector<int32_t> ids = {0, 1, 3, 5, 2, 4, 7, 6};  // token 1: both elsewhere
  auto wts = rnd(static_cast<size_t>(n) * k, 0.1f, 0.9f, 3);
  int32_t* ids_d = up(ids);
  int64_t* counts_d = zeros<int64_t>(2);
  cuda::ep_mark_foreign(ids_d, n * k, up(local), experts, counts_d, stream_);
  const auto marked = down(ids_d, ids.size());
  EXPECT_EQ(marked, (std::vector<int32_t>{0, -1, -1, -1, 2, 4, -1, 6}));
  EXPECT_EQ(down(counts_d, 2), (std::vector<int64_t>{4, 4}));
  auto out0 = rnd(static_cast<size_t>(n) * hidden, -1, 1, 5);
  std::vector<float> ref = out0, y(hidden), scratch(2ull * inter);
  float rms = 0;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < k; ++j) {
      const int e = marked[i * k + j];
      if (e < 0) continue;
      cpu::swiglu_expert(x.data() + static_cast<size_t>(i) * hidden, w1[e].data(), w3[e].data(), w2[e].data(), y.data(),
                         scratch.data(), 1, hidden, inter);
      for (int d = 0; d < hidden; ++d) {
        ref[static_cast<size_t>(i) * hidden + d] += wts[i * k + j] * y[d];
        rms += y[d] * y[d];
      }
    }
  rms = std::sqrt(rms / (4 * hidden));
  for (auto down_algo : {cuda::MoeDownAlgo::grouped, cuda::MoeDownAlgo::per_pair}) {
    bf16* h = zeros<bf16>(static_cast<size_t>(n) * k * inter);
    float* out = up(out0);
    cuda::moe_decode_fused(up_bf16(x), ids_d, up(wts), up(p1), up(p3), up(p2), h, out, n, k, experts, hidden, inter,
                           stream_, down_algo);
    check_close("moe_decode_fused with pairs held elsewhere", down(out, ref.size()), ref, kEpsBf16 * rms, kEpsBf16);
  }
  // The sorted path's combine: rows of y in a permuted order (inv), marked pairs unread.
  const int pairs = n * k;
  auto ys = rnd(static_cast<size_t>(pairs) * hidden, -1, 1, 8);
  std::vector<int32_t> inv(pairs);
  for (int p = 0; p < pairs; ++p) inv[p] = marked[p] < 0 ? 1 << 28 : pairs - 1 - p;  // a marked pair's row is garbage
  std::vector<float> want = out0;
  for (int i = 0; i < n; ++i)
    for (int d = 0; d < hidden; ++d) {
      float acc = 0;
      for (int j = 0; j < k; ++j) {
        const int p = i * k + j;
        if (marked[p] >= 0) acc = std::fma(wts[p], ys[static_cast<size_t>(inv[p]) * hidden + d], acc);
      }
      want[static_cast<size_t>(i) * hidden + d] += acc;
    }
  float* out = up(out0);
  cuda::moe_combine_held(up(ys), up(inv), ids_d, up(wts), n, k, out, hidden, stream_);
  EXPECT_EQ(down(out, want.size()), want);
}

TEST_F(CudaOps, Argmax) {
  const int n = 5, vocab = 32000;
  auto logits = rnd(static_cast<size_t>(n) * vocab, -5, 5, 42);
  logits[3 * vocab + 100] = 9.0f;  // tie in row 3: index 100 wins over 200
  logits[3 * vocab + 200] = 9.0f;
  logits[4 * vocab + vocab - 1] = 50.0f;
  logits[4 * vocab + 7] = NAN;
  std::vector<int32_t> ref(n);
  for (int i = 0; i < n; ++i) {
    int best = 0;
    for (int v = 1; v < vocab; ++v)
      if (logits[static_cast<size_t>(i) * vocab + v] > logits[static_cast<size_t>(i) * vocab + best]) best = v;
    ref[i] = best;
  }
  ref[3] = 100;
  ref[4] = -1;  // a NaN in the row: marked, no token is made up from it
  int32_t* ids = zeros<int32_t>(n);
  cuda::argmax(up(logits), ids, n, vocab, stream_);
  EXPECT_EQ(down(ids, n), ref);
}

TEST(CudaArena, CapPeakCounterAndErrors) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: device arena tests skipped";
  cuda::DeviceArena a(64ull << 20, "device arena");
  void* w = a.alloc(40ull << 20, "weights");
  void* kv = a.alloc(20ull << 20, "kv cache");
  EXPECT_EQ(reinterpret_cast<char*>(w), reinterpret_cast<char*>(a.base()));
  EXPECT_EQ(a.alloc_count(), 2u);
  try {
    a.alloc(8ull << 20, "workspace");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'workspace'"), std::string::npos) << m;
    EXPECT_NE(m.find("budget 64.0 MiB"), std::string::npos) << m;
    EXPECT_NE(m.find("68.0 MiB"), std::string::npos) << m;  // the minimum that would fit
  }
  CUDA_CHECK(cudaMemset(kv, 0, 20ull << 20));  // the memory is real
  a.free(kv);
  EXPECT_EQ(a.stats().peak_bytes, 60ull << 20);
  EXPECT_EQ(a.stats().used_bytes, 40ull << 20);
  EXPECT_THROW(cuda::DeviceArena(1ull << 50, "huge arena"), Error);
}

}  // namespace cuda_ops_test

#endif  // MOEBENCH_HAVE_CUDA
