// cpu_expert_int4_avx512.cpp: the CPU expert's int4 "stripe" kernel for AVX-512 and the
// MOEBENCH_CPU_INT4 switch that picks it or the per-block table kernel of
// cpu_expert_avx512.cpp (see cpu_expert_impl.h, Int4Kernel).
//
// The arithmetic is the table kernel's: per row and 128-column group a 16-lane table of
// the group's dequantised values (q - z) * scale (each weight the float dequantize()
// gives), one 16-byte load of packed nibbles per 32 columns widened to 16 lanes, the low
// nibbles (vpermps reads an index's low 4 bits) and the high ones (after a shift) looking
// the weights up, each FMAed against its half of the chunk's x (int4_chunk_order). What
// differs is how the weights stream in, which is what limits a core at decode (an int4
// cache line carries 128 weights, so the out-of-order window covers few lines in flight):
//   - a thread's unit of work is a block of Int4Kernel::rows rows (default 32), read as
//     stripes of R rows side by side (R = 4 for 1-2 tokens, 2 above: R x tokens
//     accumulators, two per row at 1 token so the FMA chains stay short);
//   - while a stripe runs, the stripe `prefetch` stripes further down the same block is
//     prefetched (one cache line per row and group, its scales and zero points at the
//     stripe's start), so each row's next lines are requested long before they are read;
//     nothing beyond the block is prefetched (another thread may own it).
// Row strides follow CpuMatrix::ld: values ld / 2 bytes, scales and zero points
// ceil(ld / 128) entries (ld 0: cols). The last cols % 32 columns are summed in scalar.
#include <immintrin.h>
#include <omp.h>

#include <atomic>
#include <charconv>
#include <string>
#include <vector>

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as a masked builtin's unused
// source, which -W(maybe-)uninitialized reports at every inlined use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "common/env.h"
#include "common/error.h"
#include "engine/ops/cpu_expert_impl.h"

namespace moebench::cpu::expert_detail {
namespace {

#define MB_INT4S_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

// One cache line asked for: into L1 (prefetcht0), or only into L2 (prefetcht1).
inline void prefetch_line(const uint8_t* p, bool l2) {
  if (l2)
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1);
  else
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
}

// Rows r0..r0+R of int4 weights against NT fp32 token rows in int4_chunk_order;
// pf: the values of the stripe to prefetch meanwhile (row i at pf + i * qstride), or null;
// lead: lines of the stripe's own rows to prefetch ahead of the reads (a block's first
// stripe, which no stripe before it prefetched), or 0; l2: the next stripe into L2 only.
// Z: the matrix has zero points (else every group's is 8 and the table only scales).
template <int R, int NT, bool Z>
MB_INT4S_TARGET void stripe_int4(const CpuMatrix& w, int64_t r0, const float* x, float* y, const uint8_t* pf,
                                 int lead, bool l2) {
  const int64_t cols = w.cols, rows = w.rows, chunks = cols / 32;
  const int64_t ld = row_stride(w), qstride = ld / 2, ng = scale_stride(w);
  constexpr int A = NT == 1 ? 2 : 1;  // accumulators per row and token: low / high nibbles apart at 1 token
  constexpr int64_t kChunksPerGroup = kInt4Group / 32;
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512 codes8 = _mm512_cvtepi32_ps(_mm512_sub_epi32(iota, _mm512_set1_epi32(8)));  // u - 8
  const uint8_t* q = w.q + r0 * qstride;
  const uint8_t* sc = w.scale + 2 * r0 * ng;
  const uint8_t* zp = Z ? w.zero + r0 * ng : nullptr;
  if (pf) {  // the prefetched stripe's scales and zero points: a few lines per row
    const int64_t off = (pf - q) / qstride * ng;  // its first row's group index, relative to r0's
    for (int i = 0; i < R; ++i) {
      for (int64_t b = 0; b < 2 * ng; b += 64) prefetch_line(sc + 2 * (off + i * ng) + b, l2);
      if constexpr (Z)
        for (int64_t b = 0; b < ng; b += 64) prefetch_line(zp + off + i * ng + b, l2);
    }
  }
  __m512 acc[A][R][NT];
  for (int a = 0; a < A; ++a)
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < NT; ++t) acc[a][i][t] = _mm512_setzero_ps();
  for (int64_t g = 0; g * kChunksPerGroup < chunks; ++g) {
    __m512 lut[R];
    for (int i = 0; i < R; ++i) {
      const int64_t gi = i * ng + g;
      const __m512 codes = Z ? _mm512_cvtepi32_ps(_mm512_sub_epi32(iota, _mm512_set1_epi32(zp[gi]))) : codes8;
      lut[i] = _mm512_mul_ps(codes, _mm512_set1_ps(load_bf16_f32(sc, gi)));
    }
    if (pf)
      for (int i = 0; i < R; ++i) prefetch_line(pf + i * qstride + g * 64, l2);
    if (lead > 0 && (g + lead) * 64 < qstride)
      for (int i = 0; i < R; ++i)
        _mm_prefetch(reinterpret_cast<const char*>(q + i * qstride + (g + lead) * 64), _MM_HINT_T0);
    const int64_t k0 = g * kChunksPerGroup;
    const int64_t kn = chunks - k0 < kChunksPerGroup ? chunks - k0 : kChunksPerGroup;
#pragma GCC unroll 4
    for (int64_t k = k0; k < k0 + kn; ++k) {
      __m512 lo[R], hi[R];
      for (int i = 0; i < R; ++i) {
        const __m512i b =
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i * qstride + k * 16)));
        lo[i] = _mm512_permutexvar_ps(b, lut[i]);
        hi[i] = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), lut[i]);
      }
      for (int t = 0; t < NT; ++t) {
        const __m512 xe = _mm512_loadu_ps(x + t * cols + k * 32), xo = _mm512_loadu_ps(x + t * cols + k * 32 + 16);
        for (int i = 0; i < R; ++i) {
          acc[0][i][t] = _mm512_fmadd_ps(lo[i], xe, acc[0][i][t]);
          acc[A - 1][i][t] = _mm512_fmadd_ps(hi[i], xo, acc[A - 1][i][t]);
        }
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) {
      float tail = 0.0f;
      for (int64_t c = chunks * 32; c < cols; ++c) {  // u - z, times the scale: dequantize()'s float
        const int64_t gi = i * ng + c / kInt4Group;
        const uint8_t b = q[i * qstride + c / 2];
        const int u = (c & 1) ? b >> 4 : b & 0xf;
        tail += static_cast<float>(u - (Z ? zp[gi] : 8)) * load_bf16_f32(sc, gi) * x[t * cols + c];
      }
      __m512 s = acc[0][i][t];
      if constexpr (A == 2) s = _mm512_add_ps(s, acc[1][i][t]);
      y[t * rows + r0 + i] = _mm512_reduce_add_ps(s) + tail;
    }
}

// Rows r0..r1 (one block) for NT tokens: stripes of R rows, each prefetching the one
// `prefetch` stripes further down (rows before pf_end: the block's end, or further where
// the same thread goes on there), then single rows. lead: the first stripe's.
template <int NT, bool Z>
MB_INT4S_TARGET void block_int4(const CpuMatrix& w, int64_t r0, int64_t r1, const float* x, float* y,
                                const Int4Kernel& k, int64_t pf_end, int lead) {
  constexpr int R = NT <= 2 ? 4 : 2;
  const int64_t qstride = row_stride(w) / 2;
  int64_t r = r0;
  for (; r + R <= r1; r += R) {
    const int64_t p = r + static_cast<int64_t>(k.prefetch) * R;
    const uint8_t* pf = k.prefetch > 0 && p + R <= pf_end ? w.q + p * qstride : nullptr;
    stripe_int4<R, NT, Z>(w, r, x, y, pf, r == r0 ? lead : 0, k.l2);
  }
  for (; r < r1; ++r) stripe_int4<1, NT, Z>(w, r, x, y, nullptr, 0, false);
}

MB_INT4S_TARGET void block_int4_impl(const CpuMatrix& w, int64_t r0, int64_t r1, const float* x, int n, float* y,
                                     const Int4Kernel& k4, int64_t pf_end, int lead) {
  for_token_groups(w, x, n, y, [&](auto k, const float* xt, float* yt) {
    if (w.zero)
      block_int4<decltype(k)::value, true>(w, r0, r1, xt, yt, k4, pf_end, lead);
    else
      block_int4<decltype(k)::value, false>(w, r0, r1, xt, yt, k4, pf_end, lead);
  });
}

// int4_chunk_order (cpu_expert_impl.h) with two permutes per 32 columns.
MB_INT4S_TARGET void chunk_order_avx512(const float* x, int n, int64_t cols, float* out) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  const int64_t full = cols / 32 * 32;
  for (int t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    float* ot = out + t * cols;
    for (int64_t c = 0; c < full; c += 32) {
      const __m512 a = _mm512_loadu_ps(xt + c), b = _mm512_loadu_ps(xt + c + 16);
      _mm512_storeu_ps(ot + c, _mm512_permutex2var_ps(a, even, b));
      _mm512_storeu_ps(ot + c + 16, _mm512_permutex2var_ps(a, odd, b));
    }
    for (int64_t c = full; c < cols; ++c) ot[c] = xt[c];
  }
}

#undef MB_INT4S_TARGET

// A non-negative integer field of MOEBENCH_CPU_INT4; Error naming the value otherwise.
int64_t int4_field(const std::string& spec, const std::string& v, int64_t lo, int64_t hi) {
  int64_t out = -1;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || end != v.data() + v.size() || out < lo || out > hi)
    fail("MOEBENCH_CPU_INT4={}: {} is not an integer in [{}, {}]", spec, v, lo, hi);
  return out;
}

}  // namespace

Int4Kernel parse_int4_kernel(const std::string& spec) {
  Int4Kernel k;
  if (spec.empty()) return k;
  size_t pos = spec.find(':');
  const std::string name = spec.substr(0, pos);
  if (name == "old" || name == "new") {
    k.stripes = name == "new";
  } else {
    fail("MOEBENCH_CPU_INT4={}: expected old, or new[:rows=N][:prefetch=N][:lead=N][:l2=0|1][:steal=0|1]", spec);
  }
  while (pos != std::string::npos) {
    const size_t next = spec.find(':', pos + 1);
    const std::string field = spec.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
    const size_t eq = field.find('=');
    const std::string key = field.substr(0, eq), value = eq == std::string::npos ? "" : field.substr(eq + 1);
    if (!k.stripes || eq == std::string::npos ||
        (key != "rows" && key != "prefetch" && key != "lead" && key != "l2" && key != "steal"))
      fail("MOEBENCH_CPU_INT4={}: unexpected field '{}' (expected old, or "
           "new[:rows=N][:prefetch=N][:lead=N][:l2=0|1][:steal=0|1])",
           spec, field);
    if (key == "rows") {
      k.rows = int4_field(spec, value, 0, 4096);
      if (k.rows % 4 != 0) fail("MOEBENCH_CPU_INT4={}: rows={} is not a multiple of 4", spec, k.rows);
    } else if (key == "prefetch") {
      k.prefetch = static_cast<int>(int4_field(spec, value, 0, 64));
    } else if (key == "lead") {
      k.lead = static_cast<int>(int4_field(spec, value, 0, 256));
    } else if (key == "l2") {
      k.l2 = int4_field(spec, value, 0, 1) == 1;
    } else {
      k.steal = int4_field(spec, value, 0, 1) == 1;
    }
    pos = next;
  }
  return k;
}

Int4Kernel int4_kernel_from_env() {
  // Parsed again only when the value changed (every expert product asks; tests set the
  // variable between calls). Per thread, so no lock; "" (unset) is the default kernel.
  thread_local std::string last;
  thread_local Int4Kernel parsed;
  const std::string spec = env_str("MOEBENCH_CPU_INT4");
  if (spec != last) {
    parsed = parse_int4_kernel(spec);  // throws on a bad value: nothing cached
    last = spec;
  }
  return parsed;
}

int64_t int4_block_rows(const Int4Kernel& k, int64_t rows, int threads) {
  if (k.rows > 0) return k.rows;
  const int64_t per_thread = (rows + threads - 1) / (threads > 0 ? threads : 1);
  return (per_thread + 3) / 4 * 4;
}

namespace {

// A thread's range of blocks [front, back) in one word: the owner takes from the front,
// the others, once their own range is done, from the back.
struct alignas(64) BlockRange {
  std::atomic<uint64_t> v{0};
  void set(uint32_t front, uint32_t back) { v.store(uint64_t{front} << 32 | back, std::memory_order_relaxed); }
  bool take(bool front, uint32_t& out) {
    uint64_t cur = v.load(std::memory_order_relaxed);
    for (;;) {
      const uint32_t f = static_cast<uint32_t>(cur >> 32), b = static_cast<uint32_t>(cur);
      if (f >= b) return false;
      const uint64_t next = front ? (uint64_t{f + 1} << 32 | b) : (uint64_t{f} << 32 | (b - 1));
      if (v.compare_exchange_weak(cur, next, std::memory_order_relaxed)) {
        out = front ? f : b - 1;
        return true;
      }
    }
  }
};

}  // namespace

void int4_stripes_linear(const CpuMatrix& w, const float* x_in, int n, float* y, const Int4Kernel& k, bool parallel) {
  std::vector<float> xo(static_cast<size_t>(n) * static_cast<size_t>(w.cols));
  chunk_order_avx512(x_in, n, w.cols, xo.data());
  const float* x = xo.data();
  const int threads = parallel ? omp_get_max_threads() : 1;
  const int64_t block = int4_block_rows(k, w.rows, threads), blocks = (w.rows + block - 1) / block;
  auto run = [&](int64_t b, int64_t pf_end_block, bool first) {
    const int64_t r0 = b * block, r1 = r0 + block < w.rows ? r0 + block : w.rows;
    const int64_t pf_end = pf_end_block * block < w.rows ? pf_end_block * block : w.rows;
    block_int4_impl(w, r0, r1, x, n, y, k, pf_end > r1 ? pf_end : r1, first ? k.lead : 0);
  };
  if (!k.steal) {
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
    for (int64_t b = 0; b < blocks; ++b) run(b, b + 1, true);
    return;
  }
  std::vector<BlockRange> ranges(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads) if (parallel)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
#pragma omp single
    for (int i = 0; i < nt; ++i)
      ranges[i].set(static_cast<uint32_t>(blocks * i / nt), static_cast<uint32_t>(blocks * (i + 1) / nt));
    // (the single's barrier: every range is set before any is taken from)
    const int64_t own_end = blocks * (t + 1) / nt;
    uint32_t b = 0;
    bool first = true;
    while (ranges[t].take(true, b)) {  // its own range, in order: prefetch runs on into the next block
      run(b, own_end, first);
      first = false;
    }
    for (int d = 1; d < nt; ++d)  // then the others' last blocks
      while (ranges[(t + d) % nt].take(false, b)) run(b, b + 1, true);
  }
}

}  // namespace moebench::cpu::expert_detail
