// cpu_expert_kernel_test.cpp: the CPU expert kernels (engine/ops/cpu_expert.h) on every
// ISA this CPU runs equal the fp32 reference expert (cpu::swiglu_expert on dequantised
// weights) within a bound derived per output element, for bf16, int8, int4 (with and
// without zero points) and fp8, decode and prefill token counts, shapes with column and
// row tails; and the ISA knob refuses what the CPU lacks in one line.
//
// The bound (all in double, from the exact expert on the same dequantised weights):
//   a dot product of K fp32 terms in any order is within gamma(K) = K u / (1 - K u),
//   u = 2^-24, of exact, times sum |w| |x| (K + 2 covers the int8 row scale applied to
//   the finished sum). The avx512_bf16 path rounds x (and the activation before w2) to
//   bf16 first: relative 2^-9 each (e_act). So for g = w1 x and v = w3 x:
//     dg <= (e_act + gamma(H+2) (1 + e_act)) |w1| |x|   (likewise dv)
//   silu has |silu'| <= 1.1 and the float SiLU adds a few roundings (8 u relative):
//     da <= 1.1 dg (|v| + dv) + |silu(g)| dv + 8 u (|silu(g)| + 1.1 dg)(|v| + dv),
//     then da += e_act (|a| + da) for the rounding before w2;
//     dout <= |w2| da + gamma(I+2) |w2| (|a| + da).
// The kernel's and the reference's bounds add (the reference with e_act = 0). Weights
// are dequantised bit for bit alike, so they add nothing.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "common/error.h"
#include "engine/device_plan.h"
#include "engine/expert_part.h"
#include "engine/ops/cpu_expert.h"
#include "engine/ops/cpu_expert_impl.h"
#include "engine/ops/cpu_isa.h"
#include "engine/ops/ops.h"
#include "engine/quant.h"

namespace cpu_expert_kernel_test {

using namespace moebench;
using namespace moebench::cpu;

namespace {

double gamma_k(double k) {
  const double u = std::ldexp(1.0, -24);
  return k * u / (1.0 - k * u);
}

struct Weights {
  QuantMatrix w1, w3, w2;
  std::vector<float> d1, d3, d2;  // dequantised
};

std::vector<float> random_floats(size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

Weights make_weights(QuantFormat f, bool zp, int hidden, int inter, uint32_t seed) {
  Weights w;
  const float s1 = 1.0f / std::sqrt(static_cast<float>(hidden)), s2 = 1.0f / std::sqrt(static_cast<float>(inter));
  auto f1 = random_floats(static_cast<size_t>(inter) * hidden, s1, seed);
  auto f3 = random_floats(static_cast<size_t>(inter) * hidden, s1, seed + 1);
  auto f2 = random_floats(static_cast<size_t>(hidden) * inter, s2, seed + 2);
  w.w1 = quantize(f, f1.data(), inter, hidden, zp);
  w.w3 = quantize(f, f3.data(), inter, hidden, zp);
  w.w2 = quantize(f, f2.data(), hidden, inter, zp);
  w.d1.resize(f1.size());
  w.d3.resize(f3.size());
  w.d2.resize(f2.size());
  dequantize(w.w1, w.d1.data());
  dequantize(w.w3, w.d3.data());
  dequantize(w.w2, w.d2.data());
  return w;
}

// The bound above for one path (e_act = 0 or 2^-9), (n, hidden) doubles.
std::vector<double> error_bound(const Weights& w, const std::vector<float>& x, int n, int hidden, int inter,
                                double e_act) {
  const double u = std::ldexp(1.0, -24), gh = gamma_k(hidden + 2), gi = gamma_k(inter + 2);
  std::vector<double> a(static_cast<size_t>(inter)), da(static_cast<size_t>(inter)), out(static_cast<size_t>(n) * hidden);
  for (int t = 0; t < n; ++t) {
    const float* xt = x.data() + static_cast<size_t>(t) * hidden;
    for (int j = 0; j < inter; ++j) {
      double g = 0, v = 0, mg = 0, mv = 0;
      for (int k = 0; k < hidden; ++k) {
        const double w1 = w.d1[static_cast<size_t>(j) * hidden + k], w3 = w.d3[static_cast<size_t>(j) * hidden + k];
        g += w1 * xt[k];
        v += w3 * xt[k];
        mg += std::fabs(w1 * xt[k]);
        mv += std::fabs(w3 * xt[k]);
      }
      const double dg = (e_act + gh * (1 + e_act)) * mg, dv = (e_act + gh * (1 + e_act)) * mv;
      const double sg = g / (1 + std::exp(-g));
      double d = 1.1 * dg * (std::fabs(v) + dv) + std::fabs(sg) * dv + 8 * u * (std::fabs(sg) + 1.1 * dg) * (std::fabs(v) + dv);
      a[j] = sg * v;
      d += e_act * (std::fabs(a[j]) + d);
      da[j] = d;
    }
    for (int i = 0; i < hidden; ++i) {
      double b = 0;
      for (int j = 0; j < inter; ++j) {
        const double w2 = std::fabs(w.d2[static_cast<size_t>(i) * inter + j]);
        b += w2 * da[j] + gi * w2 * (std::fabs(a[j]) + da[j]);
      }
      out[static_cast<size_t>(t) * hidden + i] = b;
    }
  }
  return out;
}

std::vector<CpuIsa> runnable_isas() {
  std::vector<CpuIsa> v;
  const CpuFeatures have = host_cpu_features();
  for (CpuIsa isa : kCpuIsas)
    if (cpu_isa_missing(isa, have).empty()) v.push_back(isa);
  return v;
}

struct Case {
  QuantFormat format;
  bool zero_points;
  int hidden, inter;
};

void check_case(const Case& c) {
  const Weights w = make_weights(c.format, c.zero_points, c.hidden, c.inter, 1234 + c.hidden);
  CpuExpert e{cpu_matrix(w.w1), cpu_matrix(w.w3), cpu_matrix(w.w2)};
  for (int n : {1, 3, 8, 37}) {
    const auto x = random_floats(static_cast<size_t>(n) * c.hidden, 1.0f, 99 + n);
    std::vector<float> ref(static_cast<size_t>(n) * c.hidden), scratch(2 * static_cast<size_t>(n) * c.inter);
    swiglu_expert(x.data(), w.d1.data(), w.d3.data(), w.d2.data(), ref.data(), scratch.data(), n, c.hidden, c.inter);
    const auto b32 = error_bound(w, x, n, c.hidden, c.inter, 0.0);
    const auto b16 = error_bound(w, x, n, c.hidden, c.inter, std::ldexp(1.0, -9));
    double mean_abs = 0;
    for (float v : ref) mean_abs += std::fabs(v) / static_cast<double>(ref.size());
    for (CpuIsa isa : runnable_isas()) {
      std::vector<float> out(ref.size(), NAN), s(cpu_expert_scratch_floats(n, c.inter));
      cpu_expert_forward(e, x.data(), out.data(), s.data(), n, isa);
      const bool bf16_act = cpu_expert_rounds_activations(isa, c.format);
      const auto& kb = bf16_act ? b16 : b32;
      int bad = 0;
      double worst = 0, worst_bound = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        const double bound = kb[i] + b32[i] + 1e-30;  // kernel's + reference's
        const double err = std::fabs(static_cast<double>(out[i]) - ref[i]);
        if (!(err <= bound)) ++bad;
        if (!(err <= worst)) worst = err, worst_bound = bound;
      }
      EXPECT_EQ(bad, 0) << quant_format_name(c.format) << (c.zero_points ? "+zp" : "") << " " << cpu_isa_name(isa)
                        << " n=" << n << " hidden=" << c.hidden << " inter=" << c.inter << ": worst error " << worst
                        << " vs bound " << worst_bound << " (mean |out| " << mean_abs << ")";
      // On the fp32 paths the bound is under 1% of the output: a wrong value (a scale, a
      // nibble, a lane out of place) cannot hide inside it. On the bf16-activation path
      // the worst case is of the order of the output itself (sums of |w| |x| with 2^-9
      // each); LinearMatchesExactSums holds that path to fp32 sums of its bf16 inputs.
      double mean_bound = 0;
      for (double v : kb) mean_bound += v / static_cast<double>(kb.size());
      if (!bf16_act) {
        EXPECT_LT(mean_bound, 1e-2 * mean_abs) << cpu_isa_name(isa);
      }
    }
  }
}

// One matrix: y = x W^T against sums in double of the kernel's own inputs (x, or x
// rounded to bf16 where the path takes bf16 activations) with the weights dequantised:
// fp32 products (exact for bf16 x bf16) summed in fp32 are within gamma(K + 2) sum |w x|.
void check_linear(QuantFormat f, bool zp, int rows, int cols, const std::vector<int>& ns = {1, 3, 8, 37}) {
  auto src = random_floats(static_cast<size_t>(rows) * cols, 0.1f, 31 + cols);
  const QuantMatrix m = quantize(f, src.data(), rows, cols, zp);
  std::vector<float> d(src.size());
  dequantize(m, d.data());
  for (int n : ns) {
    const auto x = random_floats(static_cast<size_t>(n) * cols, 1.0f, 5 + n);
    for (CpuIsa isa : runnable_isas()) {
      const bool bf16_act = cpu_expert_rounds_activations(isa, f);
      std::vector<float> y(static_cast<size_t>(n) * rows, NAN);
      cpu_expert_linear(cpu_matrix(m), x.data(), y.data(), n, isa);
      int bad = 0;
      double mean_bound = 0, mean_abs = 0;
      for (int t = 0; t < n; ++t)
        for (int r = 0; r < rows; ++r) {
          double want = 0, mag = 0;
          for (int c = 0; c < cols; ++c) {
            const float xv = x[static_cast<size_t>(t) * cols + c];
            const double xk = bf16_act ? bf16_to_f32(f32_to_bf16(xv)) : xv;
            want += d[static_cast<size_t>(r) * cols + c] * xk;
            mag += std::fabs(d[static_cast<size_t>(r) * cols + c] * xk);
          }
          const double bound = gamma_k(cols + 2) * mag * 1.000001 + 1e-30;
          const double got = y[static_cast<size_t>(t) * rows + r];
          if (!(std::fabs(got - want) <= bound)) ++bad;
          mean_bound += bound / (n * rows);
          mean_abs += std::fabs(want) / (n * rows);
        }
      EXPECT_EQ(bad, 0) << quant_format_name(f) << (zp ? "+zp" : "") << " " << cpu_isa_name(isa) << " n=" << n
                        << " " << rows << "x" << cols;
      EXPECT_LT(mean_bound, 1e-3 * mean_abs);
    }
  }
}

TEST(CpuExpertKernel, LinearMatchesExactSums) {
  for (QuantFormat f : {QuantFormat::bf16, QuantFormat::int8, QuantFormat::fp8}) {
    check_linear(f, false, 37, 203);
    check_linear(f, false, 130, 300);
  }
  check_linear(QuantFormat::int4, false, 37, 264);
  check_linear(QuantFormat::int4, true, 130, 200);
}

TEST(CpuExpertKernel, RunsOnEveryIsaThisCpuHas) {
  const auto isas = runnable_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), CpuIsa::generic);
  std::string names;
  for (CpuIsa isa : isas) names += std::string(cpu_isa_name(isa)) + " ";
  RecordProperty("isas", names);
  std::printf("CPU expert kernels tested on: %s\n", names.c_str());
}

// Columns not a multiple of any vector width (hidden 203, inter 77); rows past a
// 128-row fp8 block.
TEST(CpuExpertKernel, Bf16MatchesReference) {
  check_case({QuantFormat::bf16, false, 200, 328});
  check_case({QuantFormat::bf16, false, 203, 77});
}
TEST(CpuExpertKernel, Int8MatchesReference) {
  check_case({QuantFormat::int8, false, 200, 328});
  check_case({QuantFormat::int8, false, 203, 77});
}
TEST(CpuExpertKernel, Int4MatchesReference) {  // int4 needs columns % 8 == 0
  check_case({QuantFormat::int4, false, 200, 328});
  check_case({QuantFormat::int4, true, 200, 328});
  check_case({QuantFormat::int4, true, 264, 136});
}
// MOEBENCH_CPU_INT4 for one scope (the kernels read it at every call; a new value is parsed).
struct Int4KernelEnv {
  explicit Int4KernelEnv(const char* spec) { setenv("MOEBENCH_CPU_INT4", spec, 1); }
  ~Int4KernelEnv() { unsetenv("MOEBENCH_CPU_INT4"); }
};

// The stripe kernel's settings the tests run: the default (ranges of blocks with
// stealing, a first stripe's lead), blocks that end in a partial stripe and single rows
// (rows 12: three stripes of 4, six of 2; 37 and 130 rows leave tails), prefetch 2
// stripes ahead and none, into L2, blocks one at a time, one block per thread; and the
// table kernel.
constexpr const char* kInt4Kernels[] = {"old",
                                        "new",
                                        "new:rows=12:prefetch=2:lead=2:steal=0",
                                        "new:rows=4:prefetch=1:l2=1",
                                        "new:prefetch=0:lead=0:steal=0",
                                        "new:rows=0:steal=0",
                                        "new:rows=8:lead=2"};

// Both int4 kernels of the AVX-512 ISAs (the others ignore the switch) against exact sums
// for every token count 1..9 (each stripe width, a second token group), with and without
// zero points, a partial last group (200, 264 columns) and a column tail (264 % 32 = 8);
// and the whole expert against the reference.
TEST(CpuExpertKernel, Int4KernelsMatchReference) {
  for (const char* k : kInt4Kernels) {
    SCOPED_TRACE(k);
    const Int4KernelEnv env(k);
    check_linear(QuantFormat::int4, false, 37, 264, {1, 2, 3, 4, 5, 6, 7, 8, 9});
    check_linear(QuantFormat::int4, true, 130, 200, {1, 2, 3, 4, 5, 6, 7, 8, 9});
    check_case({QuantFormat::int4, true, 264, 136});
  }
}

// Every nibble against every zero point, through stripes of 4 rows: a one-hot x reads
// back each weight exactly.
TEST(CpuExpertKernel, Int4KernelsDequantiseEveryCodeExactly) {
  const int cols = 256, rows = 12;
  auto src = random_floats(static_cast<size_t>(rows) * cols, 3.0f, 8);
  QuantMatrix m = quantize(QuantFormat::int4, src.data(), rows, cols, true);
  for (size_t i = 0; i < m.zero.size(); ++i) m.zero[i] = static_cast<uint8_t>(i * 5 % 16);
  for (size_t i = 0; i < m.q.size(); ++i) m.q[i] = static_cast<uint8_t>(i * 7 % 256);
  std::vector<float> want(static_cast<size_t>(rows) * cols);
  dequantize(m, want.data());
  for (const char* k : kInt4Kernels) {
    const Int4KernelEnv env(k);
    for (CpuIsa isa : runnable_isas())
      for (int c = 0; c < cols; ++c) {
        std::vector<float> x(cols, 0.0f), y(rows, NAN);
        x[c] = 1.0f;
        cpu_expert_linear(cpu_matrix(m), x.data(), y.data(), 1, isa);
        for (int r = 0; r < rows; ++r)
          ASSERT_EQ(y[r], want[static_cast<size_t>(r) * cols + c]) << k << " " << cpu_isa_name(isa) << " row " << r
                                                                    << " col " << c;
      }
  }
}

// The stripe kernel takes its row strides from ld (values ld / 2 bytes, scales and zero
// points ceil(ld / 128) per row): a block of columns of a wider matrix, read in place,
// gives bit for bit what a dense copy of those columns gives.
TEST(CpuExpertKernel, Int4StripeKernelReadsColumnBlocksThroughLd) {
  if (!cpu_isa_missing(CpuIsa::avx512, host_cpu_features()).empty()) GTEST_SKIP() << "no AVX-512 here";
  const int rows = 40, wide = 520, c0 = 128, cols = 264;  // columns [128, 392) of 520 (5 groups a row)
  auto src = random_floats(static_cast<size_t>(rows) * wide, 0.1f, 3);
  const QuantMatrix m = quantize(QuantFormat::int4, src.data(), rows, wide, true);
  const int64_t ng = (wide + 127) / 128;
  std::vector<uint8_t> q(static_cast<size_t>(rows) * cols / 2), sc(2 * static_cast<size_t>(rows) * 3), z(rows * 3);
  for (int r = 0; r < rows; ++r) {
    std::memcpy(q.data() + r * cols / 2, m.q.data() + r * wide / 2 + c0 / 2, cols / 2);
    std::memcpy(sc.data() + 2 * r * 3, m.scale.data() + 2 * (r * ng + c0 / 128), 2 * 3);
    std::memcpy(z.data() + r * 3, m.zero.data() + r * ng + c0 / 128, 3);
  }
  CpuMatrix view = cpu_matrix(m), dense = view;
  view.cols = cols, view.ld = wide;
  view.q += c0 / 2, view.scale += 2 * (c0 / 128), view.zero += c0 / 128;
  dense.cols = cols, dense.q = q.data(), dense.scale = sc.data(), dense.zero = z.data();
  for (int n : {1, 2, 5}) {
    const auto x = random_floats(static_cast<size_t>(n) * cols, 1.0f, 40 + n);
    std::vector<float> a(static_cast<size_t>(n) * rows, NAN), b(a.size(), NAN);
    const expert_detail::Int4Kernel k{true, 16, 1, 2, true, false};
    expert_detail::int4_stripes_linear(view, x.data(), n, a.data(), k, false);
    expert_detail::int4_stripes_linear(dense, x.data(), n, b.data(), k, false);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "n=" << n;
    double mean_abs = 0;
    for (float v : b) mean_abs += std::fabs(v);
    EXPECT_GT(mean_abs, 0.0);
  }
}

// However the threads share the blocks (one at a time, or ranges with stealing, more
// threads than cores so that some start late), every row is computed once and the same
// way: the threaded result equals the single-threaded one bit for bit.
TEST(CpuExpertKernel, Int4StripeKernelThreadsGiveTheSerialResult) {
  if (!cpu_isa_missing(CpuIsa::avx512, host_cpu_features()).empty()) GTEST_SKIP() << "no AVX-512 here";
  const int rows = 522, cols = 1024;  // 522 = 130 blocks of 4 and 2 rows
  auto src = random_floats(static_cast<size_t>(rows) * cols, 0.1f, 9);
  const QuantMatrix m = quantize(QuantFormat::int4, src.data(), rows, cols, true);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(8);
  for (const char* spec : {"new:rows=4", "new:rows=8:prefetch=2:lead=0", "new:rows=4:steal=0", "new:rows=0:steal=0"})
    for (int n : {1, 4}) {
      const auto k = expert_detail::parse_int4_kernel(spec);
      const auto x = random_floats(static_cast<size_t>(n) * cols, 1.0f, 60 + n);
      std::vector<float> a(static_cast<size_t>(n) * rows, NAN), b(a.size(), NAN);
      expert_detail::int4_stripes_linear(cpu_matrix(m), x.data(), n, a.data(), k, true);
      expert_detail::int4_stripes_linear(cpu_matrix(m), x.data(), n, b.data(), k, false);
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << spec << " n=" << n;
      int nan = 0;
      for (float v : a) nan += std::isnan(v) ? 1 : 0;
      EXPECT_EQ(nan, 0) << spec << " n=" << n;
    }
  omp_set_num_threads(threads);
}

TEST(CpuExpertKernel, Int4KernelSwitchRefusesBadValuesInOneLine) {
  EXPECT_TRUE(expert_detail::parse_int4_kernel("new").stripes);
  EXPECT_TRUE(expert_detail::parse_int4_kernel("").stripes);  // unset: the stripe kernel
  EXPECT_FALSE(expert_detail::parse_int4_kernel("new:steal=0").steal);
  EXPECT_FALSE(expert_detail::parse_int4_kernel("old").stripes);
  const auto k = expert_detail::parse_int4_kernel("new:rows=64:prefetch=3:lead=8:l2=1:steal=1");
  EXPECT_EQ(k.rows, 64);
  EXPECT_EQ(k.prefetch, 3);
  EXPECT_EQ(k.lead, 8);
  EXPECT_TRUE(k.l2);
  EXPECT_TRUE(k.steal);
  EXPECT_EQ(expert_detail::int4_block_rows(k, 1000, 16), 64);
  EXPECT_EQ(expert_detail::int4_block_rows(expert_detail::parse_int4_kernel("new:rows=0"), 1000, 16), 64);  // 62.5 up
  EXPECT_EQ(expert_detail::int4_block_rows(expert_detail::parse_int4_kernel("new:rows=0"), 14336, 16), 896);
  for (const char* bad : {"fast", "new:rows=6", "new:rows=x", "new:prefetch=-1", "old:rows=8", "new:depth=2", "new:", "new:l2=2"}) {
    try {
      expert_detail::parse_int4_kernel(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
      EXPECT_EQ(m.rfind(std::string("MOEBENCH_CPU_INT4=") + bad + ":", 0), 0u) << m;
    }
  }
  const Int4KernelEnv env("nope");
  std::vector<float> x(256, 1.0f), y(2);
  auto src = random_floats(512, 1.0f, 2);
  const QuantMatrix m = quantize(QuantFormat::int4, src.data(), 2, 256, false);
  for (CpuIsa isa : runnable_isas()) {
    if (isa == CpuIsa::avx512 || isa == CpuIsa::avx512_bf16) {
      EXPECT_THROW(cpu_expert_linear(cpu_matrix(m), x.data(), y.data(), 1, isa), Error);
    }
  }
}

TEST(CpuExpertKernel, Fp8MatchesReference) {
  check_case({QuantFormat::fp8, false, 200, 328});
  check_case({QuantFormat::fp8, false, 203, 77});
}

// Every e4m3 code (NaN excepted) and every int4 nibble/zero point go through the vector
// dequantisation: a matrix times a one-hot x reads back each weight exactly (1 and 0
// are exact in bf16 too, and sums of one value and zeros are exact).
TEST(CpuExpertKernel, DequantisesEveryCodeExactly) {
  for (QuantFormat f : {QuantFormat::fp8, QuantFormat::int4, QuantFormat::int8, QuantFormat::bf16}) {
    const int cols = 256, rows = 2;
    auto src = random_floats(static_cast<size_t>(rows) * cols, 3.0f, 7);
    QuantMatrix m = quantize(f, src.data(), rows, cols, f == QuantFormat::int4);
    if (f == QuantFormat::fp8)
      for (int i = 0; i < rows * cols; ++i) m.q[i] = static_cast<uint8_t>((i % 255) == 0x7f ? 0 : i % 255);
    if (f == QuantFormat::int4)
      for (size_t i = 0; i < m.zero.size(); ++i) m.zero[i] = static_cast<uint8_t>(i * 5 % 16);
    std::vector<float> want(static_cast<size_t>(rows) * cols);
    dequantize(m, want.data());
    const CpuMatrix w = cpu_matrix(m);
    for (CpuIsa isa : runnable_isas()) {
      for (int c = 0; c < cols; c += 1) {
        std::vector<float> x(cols, 0.0f), y(rows, NAN);
        x[c] = 1.0f;
        cpu_expert_linear(w, x.data(), y.data(), 1, isa);
        for (int r = 0; r < rows; ++r)
          ASSERT_EQ(y[r], want[static_cast<size_t>(r) * cols + c])
              << quant_format_name(f) << " " << cpu_isa_name(isa) << " row " << r << " col " << c;
      }
    }
  }
}

TEST(CpuExpertKernel, BadShapesNameTheMatrix) {
  Weights w = make_weights(QuantFormat::int8, false, 64, 32, 5);
  CpuExpert e{cpu_matrix(w.w1), cpu_matrix(w.w3), cpu_matrix(w.w1)};  // w2 in w1's shape
  std::vector<float> x(64), out(64), s(cpu_expert_scratch_floats(1, 32));
  try {
    cpu_expert_forward(e, x.data(), out.data(), s.data(), 1, CpuIsa::generic);
    FAIL() << "no error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("w2 32x64"), std::string::npos) << err.what();
  }
  // An ISA this CPU lacks is refused, not run into an illegal instruction (only where
  // the CPU lacks one).
  const CpuFeatures have = host_cpu_features();
  for (CpuIsa isa : kCpuIsas) {
    if (!cpu_isa_missing(isa, have).empty()) {
      EXPECT_THROW(cpu_expert_linear(cpu_matrix(w.w1), x.data(), out.data(), 1, isa), Error) << cpu_isa_name(isa);
    }
  }
  CpuMatrix odd = cpu_matrix(w.w1);
  odd.format = QuantFormat::int4;
  odd.cols = 60;
  EXPECT_THROW(cpu_expert_linear(odd, x.data(), out.data(), 1, CpuIsa::generic), Error);
}

// A split expert (the host's part of a miss split between the links): the forward of
// rows [r0, r1) reads w2's columns in place (row stride inter) and equals, bit for bit on
// every ISA, the forward of a dense expert holding copies of those rows and columns; the
// parts of a partition sum to the whole expert within the whole expert's bound.
TEST(CpuExpertKernel, RowPartsReadW2InPlaceAndSumToTheExpert) {
  const int hidden = 203, inter = 328;
  const Weights w = make_weights(QuantFormat::bf16, false, hidden, inter, 77);
  const CpuExpert e{cpu_matrix(w.w1), cpu_matrix(w.w3), cpu_matrix(w.w2)};
  const int n = 3;
  const auto x = random_floats(static_cast<size_t>(n) * hidden, 1.0f, 11);
  std::vector<float> ref(static_cast<size_t>(n) * hidden), rs(2 * static_cast<size_t>(n) * inter);
  swiglu_expert(x.data(), w.d1.data(), w.d3.data(), w.d2.data(), ref.data(), rs.data(), n, hidden, inter);
  const auto b32 = error_bound(w, x, n, hidden, inter, 0.0);
  const auto b16 = error_bound(w, x, n, hidden, inter, std::ldexp(1.0, -9));
  const int cut = 120;  // rows [0, 120) and [120, 328): 120 is no multiple of 32
  for (CpuIsa isa : runnable_isas()) {
    std::vector<float> sum(ref.size(), 0.0f);
    for (auto [r0, r1] : {std::pair{0, cut}, std::pair{cut, inter}}) {
      const int rows = r1 - r0;
      // the dense copy of the part
      std::vector<uint8_t> q1(2 * static_cast<size_t>(rows) * hidden), q3(q1.size()), q2(2 * static_cast<size_t>(hidden) * rows);
      std::memcpy(q1.data(), w.w1.q.data() + 2 * static_cast<size_t>(r0) * hidden, q1.size());
      std::memcpy(q3.data(), w.w3.q.data() + 2 * static_cast<size_t>(r0) * hidden, q3.size());
      for (int h = 0; h < hidden; ++h)
        std::memcpy(q2.data() + 2 * static_cast<size_t>(h) * rows, w.w2.q.data() + 2 * (static_cast<size_t>(h) * inter + r0),
                    2 * static_cast<size_t>(rows));
      CpuExpert dense = e;
      dense.w1.q = q1.data(), dense.w1.rows = rows;
      dense.w3.q = q3.data(), dense.w3.rows = rows;
      dense.w2.q = q2.data(), dense.w2.cols = rows;
      std::vector<float> a(ref.size(), NAN), b(ref.size(), NAN), s(cpu_expert_scratch_floats(n, rows));
      cpu_expert_forward(cpu_expert_rows(e, r0, r1), x.data(), a.data(), s.data(), n, isa);
      cpu_expert_forward(dense, x.data(), b.data(), s.data(), n, isa);
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << cpu_isa_name(isa) << " rows " << r0;
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += a[i];
    }
    const auto& kb = cpu_expert_rounds_activations(isa, QuantFormat::bf16) ? b16 : b32;
    int bad = 0;
    for (size_t i = 0; i < sum.size(); ++i)
      if (!(std::fabs(static_cast<double>(sum[i]) - ref[i]) <= kb[i] + b32[i] + 1e-30)) ++bad;
    EXPECT_EQ(bad, 0) << cpu_isa_name(isa);
  }
  EXPECT_THROW(cpu_expert_rows(e, 0, inter + 1), Error);
  EXPECT_THROW(cpu_expert_rows(e, 5, 5), Error);
  const Weights q = make_weights(QuantFormat::int8, false, 64, 32, 5);
  CpuMatrix strided = cpu_matrix(q.w1);
  strided.ld = 63;
  std::vector<float> xx(64), yy(32);
  EXPECT_THROW(cpu_expert_linear(strided, xx.data(), yy.data(), 1, CpuIsa::generic), Error);  // ld < cols
}

// The quantised formats' split: the expert as the host store lays it out (ExpertLayout);
// for each part of a partition of its rows, the host's forward of cpu_expert_rows (w2's
// columns read in place through the row strides) equals, bit for bit on every ISA, the
// forward of the part the link copies (expert_part_plan's copies gathered into a buffer:
// a dense expert of that many rows), and the parts sum to the whole expert within its
// bound. The last part ends in a partial scale group; hidden has column tails too.
TEST(CpuExpertKernel, QuantisedRowPartsEqualTheirPackedCopiesAndSumToTheExpert) {
  const int hidden = 264, inter = 424;  // int4 w2 groups: 128, 128, 128, 40
  const std::vector<std::pair<int, int>> parts = {{0, 128}, {128, 256}, {256, inter}};
  struct Fmt {
    QuantFormat f;
    bool zp;
  };
  for (const Fmt fm : {Fmt{QuantFormat::int4, false}, Fmt{QuantFormat::int4, true}, Fmt{QuantFormat::int8, false},
                       Fmt{QuantFormat::fp8, false}}) {
    const std::string name = std::string(quant_format_name(fm.f)) + (fm.zp ? "+zp" : "");
    const Weights w = make_weights(fm.f, fm.zp, hidden, inter, 41);
    ModelConfig cfg;
    cfg.hidden_size = hidden;
    cfg.intermediate_size = inter;
    const ExpertLayout L = expert_layout(cfg, fm.f, fm.zp);
    std::vector<uint8_t> whole(L.total_bytes, 0);
    const QuantMatrix* mats[3] = {&w.w1, &w.w3, &w.w2};
    for (int m = 0; m < 3; ++m) {
      const std::vector<uint8_t>* src[3] = {&mats[m]->q, &mats[m]->scale, &mats[m]->zero};
      for (int p = 0; p < L.n_parts; ++p) {
        ASSERT_EQ(src[p]->size(), L.bytes[m][p]) << name;
        std::memcpy(whole.data() + L.offset[m][p], src[p]->data(), src[p]->size());
      }
    }
    auto expert_at = [&](const uint8_t* base, const uint64_t (&off)[3][3], int64_t rows) {
      auto mat = [&](int m, int64_t r, int64_t c) {
        CpuMatrix x;
        x.format = fm.f;
        x.rows = r, x.cols = c;
        x.q = base + off[m][0];
        x.scale = L.n_parts > 1 ? base + off[m][1] : nullptr;
        x.zero = L.n_parts > 2 ? base + off[m][2] : nullptr;
        return x;
      };
      return CpuExpert{mat(0, rows, hidden), mat(1, rows, hidden), mat(2, hidden, rows)};
    };
    const CpuExpert e = expert_at(whole.data(), L.offset, inter);
    const int n = 3;
    const auto x = random_floats(static_cast<size_t>(n) * hidden, 1.0f, 12);
    std::vector<float> ref(static_cast<size_t>(n) * hidden), rs(2 * static_cast<size_t>(n) * inter);
    swiglu_expert(x.data(), w.d1.data(), w.d3.data(), w.d2.data(), ref.data(), rs.data(), n, hidden, inter);
    const auto b32 = error_bound(w, x, n, hidden, inter, 0.0);
    uint64_t part_bytes = 0;
    for (auto [r0, r1] : parts) part_bytes += expert_part_plan(L, hidden, inter, r0, r1).bytes;
    // every byte once, but int8's row scales of w2, which every part needs whole
    const uint64_t expected = w.w1.nbytes() + w.w3.nbytes() + w.w2.nbytes() +
                              (fm.f == QuantFormat::int8 ? (parts.size() - 1) * w.w2.scale.size() : 0);
    EXPECT_EQ(part_bytes, expected) << name;
    for (CpuIsa isa : runnable_isas()) {
      std::vector<float> sum(ref.size(), 0.0f);
      for (auto [r0, r1] : parts) {
        const ExpertPartPlan plan = expert_part_plan(L, hidden, inter, r0, r1);
        std::vector<uint8_t> packed(L.total_bytes, 0xff);
        for (const PartCopy& c : plan.copies)
          for (uint64_t h = 0; h < c.height; ++h)
            std::memcpy(packed.data() + c.dst + h * c.width, whole.data() + c.src + h * c.src_pitch, c.width);
        std::vector<float> a(ref.size(), NAN), b(ref.size(), NAN), s(cpu_expert_scratch_floats(n, r1 - r0));
        cpu_expert_forward(cpu_expert_rows(e, r0, r1), x.data(), a.data(), s.data(), n, isa);
        cpu_expert_forward(expert_at(packed.data(), plan.dst, r1 - r0), x.data(), b.data(), s.data(), n, isa);
        EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
            << name << " " << cpu_isa_name(isa) << " rows " << r0;
        for (size_t i = 0; i < sum.size(); ++i) sum[i] += a[i];
      }
      int bad = 0;
      for (size_t i = 0; i < sum.size(); ++i)
        if (!(std::fabs(static_cast<double>(sum[i]) - ref[i]) <= 2 * b32[i] + 1e-30)) ++bad;
      EXPECT_EQ(bad, 0) << name << " " << cpu_isa_name(isa);
    }
    // int4 and fp8 cut only at their 128-row scale groups; int8 anywhere
    if (fm.f == QuantFormat::int8) {
      EXPECT_NO_THROW(cpu_expert_rows(e, 0, 64));
      EXPECT_NO_THROW(expert_part_plan(L, hidden, inter, 64, inter));
    } else {
      EXPECT_THROW(cpu_expert_rows(e, 0, 64), Error) << name;
      EXPECT_THROW(cpu_expert_rows(e, 64, inter), Error) << name;
      EXPECT_THROW(expert_part_plan(L, hidden, inter, 64, inter), Error) << name;
      EXPECT_THROW(expert_part_plan(L, hidden, inter, 0, 200), Error) << name;
    }
    EXPECT_THROW(cpu_expert_rows(e, 128, inter + 128), Error) << name;
    EXPECT_THROW(expert_part_plan(L, hidden, inter, 256, 256), Error) << name;
  }
  EXPECT_TRUE(expert_part_cuts_at(QuantFormat::int4, 256));
  EXPECT_FALSE(expert_part_cuts_at(QuantFormat::int4, 32));
  EXPECT_FALSE(expert_part_cuts_at(QuantFormat::fp8, 64));
  EXPECT_TRUE(expert_part_cuts_at(QuantFormat::int8, 32));
  EXPECT_TRUE(expert_part_cuts_at(QuantFormat::bf16, 32));
}

TEST(CpuIsa, ForcedIsaTheCpuLacksIsRefusedInOneLine) {
  CpuFeatures avx2_only;
  avx2_only.avx2 = avx2_only.fma = avx2_only.f16c = true;
  try {
    select_cpu_isa("avx512_bf16", avx2_only, "MOEBENCH_CPU_ISA");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "MOEBENCH_CPU_ISA=avx512_bf16: this CPU lacks avx512f,avx512bw,avx512vl,avx512bf16 (the best it runs "
                 "is avx2)");
  }
  CpuFeatures none;
  EXPECT_EQ(best_cpu_isa(none), CpuIsa::generic);
  EXPECT_EQ(select_cpu_isa("auto", avx2_only, "k"), CpuIsa::avx2);
  EXPECT_EQ(select_cpu_isa("", none, "k"), CpuIsa::generic);
  EXPECT_THROW(select_cpu_isa("avx2", none, "k"), Error);
  try {
    select_cpu_isa("sse9", avx2_only, "MOEBENCH_CPU_ISA");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "MOEBENCH_CPU_ISA=sse9: expected one of auto|generic|avx2|avx512|avx512_bf16");
  }
  // This CPU: what it has is taken, what it lacks is refused, through the variable.
  const CpuFeatures have = host_cpu_features();
  for (CpuIsa isa : kCpuIsas) {
    ASSERT_EQ(setenv("MOEBENCH_CPU_ISA", cpu_isa_name(isa), 1), 0);
    if (cpu_isa_missing(isa, have).empty()) {
      EXPECT_EQ(cpu_isa_from_env(), isa);
    } else {
      try {
        cpu_isa_from_env();
        ADD_FAILURE() << cpu_isa_name(isa) << " accepted on a CPU that lacks " << cpu_isa_missing(isa, have);
      } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_EQ(m.find('\n'), std::string::npos);
        EXPECT_NE(m.find("this CPU lacks"), std::string::npos) << m;
      }
    }
  }
  unsetenv("MOEBENCH_CPU_ISA");
  EXPECT_EQ(cpu_isa_from_env(), best_cpu_isa(have));
}

}  // namespace

}  // namespace cpu_expert_kernel_test
