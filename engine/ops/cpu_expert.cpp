// cpu_expert.cpp: see cpu_expert.h. The driver (checks, thread split, bf16 activations
// for vdpbf16ps, the SwiGLU between the matrices) and the generic kernel: portable C++
// on 4-lane vectors, what an x86-64 without AVX2 runs.
#include "engine/ops/cpu_expert.h"

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/ops/cpu_expert_impl.h"

namespace moebench::cpu {

using expert_detail::row_stride;

namespace expert_detail {
namespace {

#define MB_CPU_TARGET

struct V {
  static constexpr int kRows = 1;
  static constexpr int kLanes = 4;
  using vec = float __attribute__((vector_size(16)));
  static vec zero() { return vec{0, 0, 0, 0}; }
  static vec set1(float f) { return vec{f, f, f, f}; }
  static vec loadu(const float* p) {
    vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static vec mul(vec a, vec b) { return a * b; }
  static vec fmadd(vec a, vec b, vec c) { return a * b + c; }
  static float hsum(vec v) { return (v[0] + v[1]) + (v[2] + v[3]); }
  static vec bf16(const uint8_t* p) {
    return vec{load_bf16_f32(p, 0), load_bf16_f32(p, 1), load_bf16_f32(p, 2), load_bf16_f32(p, 3)};
  }
  static vec i8(const uint8_t* p) {
    return vec{static_cast<float>(static_cast<int8_t>(p[0])), static_cast<float>(static_cast<int8_t>(p[1])),
               static_cast<float>(static_cast<int8_t>(p[2])), static_cast<float>(static_cast<int8_t>(p[3]))};
  }
  static vec i4(const uint8_t* p, int z) {
    return vec{static_cast<float>((p[0] & 0xf) - z), static_cast<float>((p[0] >> 4) - z),
               static_cast<float>((p[1] & 0xf) - z), static_cast<float>((p[1] >> 4) - z)};
  }
  static vec e4m3(const uint8_t* p) {
    // Every code times 2^-8 (the scale carries 2^8, as the vector kernels do); 0x7f and
    // 0xff (NaN) read as +-480 like theirs.
    static const auto table = [] {
      std::array<float, 256> t{};
      for (int i = 0; i < 256; ++i) t[i] = weight_e4m3(static_cast<uint8_t>(i)) / 256.0f;
      return t;
    }();
    return vec{table[p[0]], table[p[1]], table[p[2]], table[p[3]]};
  }
};

#include "engine/ops/cpu_expert_rows.h"

#undef MB_CPU_TARGET
}  // namespace

void row_block_generic(const CpuMatrix& w, int64_t r0, int64_t r1, const void* x, int n, float* y) {
  row_block_impl(w, r0, r1, x, n, y);
}

}  // namespace expert_detail

namespace {

void check_matrix(const CpuMatrix& w, const char* name) {
  if (w.rows <= 0 || w.cols <= 0 || !w.q) fail("cpu expert {}: {}x{} matrix without values", name, w.rows, w.cols);
  if (w.format != QuantFormat::bf16 && !w.scale)
    fail("cpu expert {}: {} matrix without scales", name, quant_format_name(w.format));
  if (w.format == QuantFormat::int4 && w.cols % 8 != 0)
    fail("cpu expert {}: int4 packs 8 inputs per int32: {} inputs is not a multiple of 8", name, w.cols);
  if (w.ld != 0 && (w.ld < w.cols || (w.format == QuantFormat::int4 && w.ld % 2 != 0)))
    fail("cpu expert {}: row stride {} on a {} matrix of {} columns: expected 0, or >= the columns{}", name, w.ld,
         quant_format_name(w.format), w.cols, w.format == QuantFormat::int4 ? " and even (two int4 codes a byte)" : "");
}

}  // namespace

CpuMatrix cpu_matrix(const QuantMatrix& m) {
  CpuMatrix w;
  w.format = m.format;
  w.rows = m.rows;
  w.cols = m.cols;
  w.q = m.q.data();
  w.scale = m.scale.empty() ? nullptr : m.scale.data();
  w.zero = m.zero_points && !m.zero.empty() ? m.zero.data() : nullptr;
  return w;
}

bool cpu_expert_rounds_activations(CpuIsa isa, QuantFormat f) {
  return isa == CpuIsa::avx512_bf16 && f == QuantFormat::bf16;
}

void cpu_expert_linear(const CpuMatrix& w, const float* x, float* y, int n, CpuIsa isa) {
  using namespace expert_detail;
  check_matrix(w, "matrix");
  static const CpuFeatures have = host_cpu_features();
  const std::string missing = cpu_isa_missing(isa, have);
  if (!missing.empty()) fail("cpu expert: ISA {} needs {}, which this CPU lacks", cpu_isa_name(isa), missing);
  if (n <= 0) return;
  RowBlockFn fn = row_block_generic;
  switch (isa) {
    case CpuIsa::generic: fn = row_block_generic; break;
    case CpuIsa::avx2: fn = row_block_avx2; break;
    case CpuIsa::avx512: fn = row_block_avx512; break;
    case CpuIsa::avx512_bf16: fn = w.format == QuantFormat::bf16 ? row_block_avx512_bf16dp : row_block_avx512; break;
  }
  std::vector<uint16_t> xb;
  std::vector<float> xo;
  const void* xin = x;
  const int64_t count = static_cast<int64_t>(n) * w.cols;
  if (cpu_expert_rounds_activations(isa, w.format)) {
    xb.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) xb[i] = f32_to_bf16(x[i]);
    xin = xb.data();
  }
  const double work = static_cast<double>(n) * static_cast<double>(w.rows) * static_cast<double>(w.cols);
  if (w.format == QuantFormat::int4 && (isa == CpuIsa::avx512 || isa == CpuIsa::avx512_bf16)) {
    const Int4Kernel int4 = int4_kernel_from_env();
    if (int4.stripes) return int4_stripes_linear(w, x, n, y, int4, work > (1 << 18));
    fn = row_block_avx512_int4;
    xo.resize(static_cast<size_t>(count));
    int4_chunk_order(x, n, w.cols, xo.data());
    xin = xo.data();
  }
  const int64_t blocks = (w.rows + kCpuExpertRowBlock - 1) / kCpuExpertRowBlock;
  // Dynamic chunks of a few blocks: a thread the scheduler delays (the CUDA driver's,
  // the caller's own) leaves its blocks to the others instead of holding the team.
#pragma omp parallel for schedule(dynamic, 4) if (work > (1 << 18))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = b * kCpuExpertRowBlock;
    fn(w, r0, r0 + kCpuExpertRowBlock < w.rows ? r0 + kCpuExpertRowBlock : w.rows, xin, n, y);
  }
}

namespace {

// w's rows [r0, r1): every part moves down by r0 rows (fp8 scales by r0 / 128 block rows).
CpuMatrix matrix_rows(const CpuMatrix& w, int64_t r0, int64_t r1) {
  const int64_t ld = row_stride(w), ng = expert_detail::scale_stride(w);
  CpuMatrix p = w;
  p.rows = r1 - r0;
  switch (w.format) {
    case QuantFormat::bf16: p.q += 2 * r0 * ld; break;
    case QuantFormat::int8: p.q += r0 * ld, p.scale += 4 * r0; break;
    case QuantFormat::fp8: p.q += r0 * ld, p.scale += 4 * (r0 / kFp8Block) * ng; break;
    case QuantFormat::int4:
      p.q += r0 * (ld / 2), p.scale += 2 * r0 * ng;
      if (p.zero) p.zero += r0 * ng;
      break;
  }
  return p;
}

// w's columns [c0, c1), read in place: ld keeps the whole row's stride, every part moves
// right to c0 (int4 and fp8 scales by c0 / 128 groups; int8's row scales stay).
CpuMatrix matrix_cols(const CpuMatrix& w, int64_t c0, int64_t c1) {
  CpuMatrix p = w;
  p.ld = row_stride(w);
  p.cols = c1 - c0;
  switch (w.format) {
    case QuantFormat::bf16: p.q += 2 * c0; break;
    case QuantFormat::int8: p.q += c0; break;
    case QuantFormat::fp8: p.q += c0, p.scale += 4 * (c0 / kFp8Block); break;
    case QuantFormat::int4:
      p.q += c0 / 2, p.scale += 2 * (c0 / kInt4Group);
      if (p.zero) p.zero += c0 / kInt4Group;
      break;
  }
  return p;
}

}  // namespace

CpuExpert cpu_expert_rows(const CpuExpert& e, int64_t r0, int64_t r1) {
  const QuantFormat f = e.w1.format;
  if (e.w3.format != f || e.w2.format != f)
    fail("cpu expert: a part of an expert's rows: formats w1 {}, w3 {}, w2 {}: expected one format",
         quant_format_name(f), quant_format_name(e.w3.format), quant_format_name(e.w2.format));
  const int64_t inter = e.w1.rows;
  if (r0 < 0 || r1 <= r0 || r1 > inter || e.w3.rows != inter || e.w2.cols != inter)
    fail("cpu expert: rows [{}, {}) of an expert of {} intermediate rows", r0, r1, inter);
  if ((f == QuantFormat::int4 || f == QuantFormat::fp8) && (r0 % 128 != 0 || (r1 != inter && r1 % 128 != 0)))
    fail("cpu expert: rows [{}, {}) of a {} expert of {} rows: {} cuts only at multiples of 128 rows (its scale "
         "groups) or at the end",
         r0, r1, quant_format_name(f), inter, quant_format_name(f));
  return CpuExpert{matrix_rows(e.w1, r0, r1), matrix_rows(e.w3, r0, r1), matrix_cols(e.w2, r0, r1)};
}

size_t cpu_expert_scratch_floats(int n, int64_t inter) { return 2 * static_cast<size_t>(n) * static_cast<size_t>(inter); }

void cpu_expert_forward(const CpuExpert& e, const float* x, float* out, float* scratch, int n, CpuIsa isa) {
  check_matrix(e.w1, "w1");
  check_matrix(e.w3, "w3");
  check_matrix(e.w2, "w2");
  const int64_t hidden = e.w1.cols, inter = e.w1.rows;
  if (e.w3.rows != inter || e.w3.cols != hidden || e.w2.rows != hidden || e.w2.cols != inter)
    fail("cpu expert: w1 {}x{}, w3 {}x{}, w2 {}x{}: expected w1 = w3 = inter x hidden and w2 = hidden x inter",
         e.w1.rows, e.w1.cols, e.w3.rows, e.w3.cols, e.w2.rows, e.w2.cols);
  if (e.w3.format != e.w1.format || e.w2.format != e.w1.format)
    fail("cpu expert: formats w1 {}, w3 {}, w2 {}: expected one format", quant_format_name(e.w1.format),
         quant_format_name(e.w3.format), quant_format_name(e.w2.format));
  float* g = scratch;
  float* u = scratch + static_cast<size_t>(n) * static_cast<size_t>(inter);
  cpu_expert_linear(e.w1, x, g, n, isa);
  cpu_expert_linear(e.w3, x, u, n, isa);
  const int64_t total = static_cast<int64_t>(n) * inter;
#pragma omp parallel for schedule(static) if (total > (1 << 14))
  for (int64_t i = 0; i < total; ++i) {
    const float a = g[i];
    g[i] = (a / (1.0f + std::exp(-a))) * u[i];  // the reference's SiLU, term for term
  }
  cpu_expert_linear(e.w2, g, out, n, isa);
}

}  // namespace moebench::cpu
