// quant_gemv_rows.cu: see quant_gemv_rows.h. The warp-row kernels.
//
// Batch j of a row is its 16-byte chunks 32 j .. 32 j + 31 (512 bytes), lane i reading
// chunk 32 j + i of both rows a and b of the warp. Lane (g, t) = (lane / 4, lane % 4)
// holds chunks 32 j + 4 g + t, t = 0..3: segment g of the batch, the 4 chunks of one
// super-step (ss = 8 j + g: int4 128 inputs = one group; int8 / fp8 64 inputs, inside one
// 128 x 128 fp8 block). Each mma step takes the lane's codes of rows a and b as A rows g
// and g + 8 (quant_codes.cuh, as the tile kernels) and the lane's own activations as B
// column g, so D[g][g] and D[g + 8][g], held by lane (g, g / 2), are segment g's sums for
// rows a and b; that lane scales them by the segment's scale (every lane loads the scale
// words of its own segment, which also hold int4's zero point for its codes). After the
// row, the 8 diagonal lanes' totals are added by shuffles.
#include "engine/cuda/quant_gemv_rows.h"

#include <algorithm>
#include <atomic>
#include <type_traits>

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/norm_router_block.cuh"
#include "engine/cuda/pdl.cuh"
#include "engine/cuda/quant_codes.cuh"

namespace moebench::cuda {

namespace {
using namespace qcodes;
using bf16 = __nv_bfloat16;

constexpr int kWarps = 8;         // warps a block
constexpr int kBatchChunks = 32;  // chunks of one row a batch: one per lane
constexpr int kMaxPairs = detail::kMaxSlotPairs;

// The compiled launch shapes (cfg = variant - kQuantVariantRows): batches of both rows
// whose loads a warp issues together (depth: 32 bytes a lane each), blocks an SM the
// launch bounds ask for (registers a thread: 65536 / (256 x blocks)), and whether a
// warp's next group is issued before the current one is computed (pipe, walk_items).
//   0: depth 4, 2 blocks (16 warps an SM, 128 B a lane in flight)
//   1: depth 4, 3 blocks (24 warps; int4 spills a few registers at 80)
//   2: depth 2, 4 blocks (32 warps, 64 registers, 64 B a lane)
//   3: depth 8, 2 blocks (16 warps, 256 B a lane)
//   4: depth 2, 2 blocks, pipelined (16 warps, 64 - 128 B a lane)
//   5: depth 2, 3 blocks, pipelined (24 warps)
//   6: depth 4, 2 blocks, pipelined (16 warps, 128 - 256 B a lane)
//   7: depth 2, 3 blocks (24 warps; the exact kernels with two row pairs a warp)
//   8: depth 2, 2 blocks (16 warps; the same)
constexpr int kRowsCfgs = kQuantRowsShapes;  // 0 .. 6: the warp-row variants' shapes
constexpr int cfg_depth(int cfg) { return cfg == 2 || cfg == 4 || cfg == 5 || cfg >= 7 ? 2 : cfg == 3 ? 8 : 4; }
constexpr int cfg_blocks(int cfg) { return cfg == 1 || cfg == 5 || cfg == 7 ? 3 : cfg == 2 ? 4 : 2; }
constexpr bool cfg_pipe(int cfg) { return cfg >= 4 && cfg <= 6; }

template <QuantFormat F>
__host__ __device__ __forceinline__ int64_t row_bytes_of(int K) {
  return F == QuantFormat::int4 ? K / 2 : static_cast<int64_t>(K);
}

// One work item's rows: a and b (codes qa, qb; matrix rows ra, rb for the scale words),
// their scales / zero points and the activations x.
struct RowItem {
  const uint8_t *qa, *qb, *scale, *zero;
  const bf16* x;
  int ra, rb;
};

// A work item's running totals, one a row (meaningful in the lanes that hold them).
template <int kN>
struct Totals {
  float v[kN] = {};
};

// A group: kDepth batches of both rows from batch j0 (those below b1), in registers.
// issue() loads the codes and the scale words and uses none of them; compute() adds this
// lane's share of the batches' sums of rows a and b into ta, tb (meaningful on the
// diagonal lanes only; diag_total adds them).
template <QuantFormat F, bool kPaired, int kDepth>
struct RowGroup {
  using C = Codes<F, kPaired>;
  using Tot = Totals<2>;
  uint4 wa[kDepth], wb[kDepth];
  typename C::Raw sa[kDepth], sb[kDepth];

  __device__ __forceinline__ void issue(const RowItem& r, int j0, int b1, int chunks, int K, int lane) {
    const int g = lane >> 2, steps = (chunks + 3) / 4;
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
      const int c = (j0 + u) * kBatchChunks + lane;
      if (j0 + u < b1 && c < chunks) {
        wa[u] = load16_stream(r.qa + 16 * static_cast<int64_t>(c));
        wb[u] = load16_stream(r.qb + 16 * static_cast<int64_t>(c));
      } else {
        wa[u] = wb[u] = make_uint4(0, 0, 0, 0);
      }
      const int ss = min((j0 + u) * 8 + g, steps - 1);  // past the row end: any valid group (its sum is zero)
      sa[u] = C::raw(r.scale, r.zero, r.ra, ss, K);
      sb[u] = C::raw(r.scale, r.zero, r.rb, ss, K);
    }
  }

  __device__ __forceinline__ void compute(const RowItem& r, int j0, int b1, int chunks, int lane, Tot& tot) const {
    constexpr int V = C::kValues;
    const bool odd = ((lane >> 2) & 1) != 0;
    float &ta = tot.v[0], &tb = tot.v[1];
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
      const int j = j0 + u;
      if (j >= b1) break;  // warp-uniform
      const int c = j * kBatchChunks + lane;
      uint32_t xw[V / 2];
#pragma unroll
      for (int i = 0; i < V / 8; ++i) {
        uint4 v = make_uint4(0, 0, 0, 0);  // past the row end: zero activations
        if (c < chunks) v = __ldg(reinterpret_cast<const uint4*>(r.x + static_cast<int64_t>(c) * V) + i);
        xw[4 * i] = v.x;
        xw[4 * i + 1] = v.y;
        xw[4 * i + 2] = v.z;
        xw[4 * i + 3] = v.w;
      }
      const typename C::Row pa = C::row(sa[u]), pb = C::row(sb[u]);
      float d[4] = {0, 0, 0, 0};
#pragma unroll
      for (int s = 0; s < V / 4; ++s) {
        uint32_t a0, a1, a2, a3, x0, x1;
        C::a_regs(wa[u], s, pa, a0, a2);
        C::a_regs(wb[u], s, pb, a1, a3);
        C::b_regs(xw, s, x0, x1);
        detail::mma_bf16_16x8x16(d, a0, a1, a2, a3, x0, x1);
      }
      ta = fmaf(pa.s, odd ? d[1] : d[0], ta);
      tb = fmaf(pb.s, odd ? d[3] : d[2], tb);
    }
  }
};

// The exact warp kernels (variants kQuantVariantExact ..): the tile kernels' sums, bit for
// bit. The tile kernel at its default shape (4 warps a block, 4 super-steps a batch, one
// tile) gives tile warp w the super-steps ss = 16 i + 4 w + u (u = 0..3, i = 0, 1, ...),
// and its total for a row is ((T0 + T1) + T2) + T3, where T_w = fmaf(scale(ss), d(ss), T_w)
// over warp w's super-steps in order, from 0, and d(ss) the super-step's mma chain (from
// 0, its kValues / 4 steps in order). Here a warp computes the four chains of its rows
// itself: lane (g, t) is slot g = (chain c = g & 3, offset e = g >> 2) and batch b
// (i = b / 2, u0 = 2 (b % 2)) gives it super-step ss = 16 i + 4 c + u0 + e, chunk 4 ss + t
// of each of its rows (per row and load instruction: four 128-byte lines, 256 bytes apart).
// Each mma step takes the slot's codes of a row pair (a, b) as A rows g and g + 8 and its
// activations as B column g, exactly as the tile kernel's lane (gr, t) takes its chunk for
// its pair's column (an mma output element depends only on its A row, B column and
// accumulator), so D[g][g] and D[g + 8][g] are d(ss) of rows a and b, bit for bit. The lane
// of chain c (slot c, diagonal lane 4 c + c / 2) adds its own d(ss) and then, fetched by a
// shuffle from slot c + 4, d(ss + 1) into T_c: the chain in the tile warp's order. A warp
// owns kRP row pairs (1 or 2: two pairs share each activation load and run two
// independent mma chains). Blocks walk their items as the warp-row kernels do
// (walk_items); the GEMV and the gate/up need no shared memory and no barrier.
constexpr int kExactChains = 4;                 // the tile kernel's warps: the chains a row has
constexpr int kExactStride = 4 * kExactChains;  // super-steps from one tile batch of a warp to its next
template <bool kContig = false>
__host__ __device__ __forceinline__ int exact_batches(int chunks) {
  const int steps = (chunks + 3) / 4;
  return kContig ? (steps + 7) / 8 : 2 * ((steps + kExactStride - 1) / kExactStride);
}
// Slot g's super-step in batch b.
__device__ __forceinline__ int exact_ss(int b, int g) { return kExactStride * (b >> 1) + 4 * (g & 3) + 2 * (b & 1) + (g >> 2); }
// The same for b = j0 + u with j0 even (the plain loop's groups start at multiples of their
// even depth): exact_ss_first(j0, g) + exact_ss_step(u), so that a group's loads are one
// address a row plus constant offsets.
__device__ __forceinline__ int exact_ss_first(int j0, int g) { return 8 * j0 + 4 * (g & 3) + (g >> 2); }
__host__ __device__ constexpr int exact_ss_step(int u) { return kExactStride * (u >> 1) + 2 * (u & 1); }

// An exact work item: kRP row pairs (rows row[2 h], row[2 h + 1] at q[...]) of one matrix.
template <int kRP>
struct ExactItem {
  const uint8_t* q[2 * kRP];
  int row[2 * kRP];
  const uint8_t *scale, *zero;
  const bf16* x;
  uint32_t xs = 0;  // the fp16 form: the shared-memory address of the staged row (stage_half)
};

// 16 bytes of shared memory at a shared-window address.
__device__ __forceinline__ uint4 lds16(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}

// The fp16 form's activations (ExactGroup kHalf): n rows of K bf16 values at x + r K, each
// scaled by 2^e_r and rounded to fp16 into dst (row r at dst + r K / 8), 2^-e_r into inv[r].
// e_r = 15 - (the exponent of the row's largest magnitude m, m = f 2^ex, 0.5 <= f < 1) puts
// m 2^e_r in [2^14, 2^15): every value is exactly its bf16 value times 2^e_r (a power of
// two: exact in fp32), and that product is an fp16 number exactly when it lies above fp16's
// subnormal grid for its bits: for a bf16 value (8 significant bits) of at least m 2^-31.
// Then the products code x activation are the bf16 form's times 2^e_r, their fp32 sums too
// (scaling by a power of two commutes with rounding in the normal range), and the row's
// total times 2^-e_r is the bf16 form's bit for bit. Smaller values are rounded to fp16's
// grid (an error of at most 2^-39 m each). e_r is 0 for a row whose largest magnitude is 0 or
// not finite, and at most 100 in magnitude (rows whose largest magnitude lies below 2^-85
// or above 2^115 keep fewer exact bits). Every thread of the block calls it; it ends with
// a barrier. kMaxWarps: the block's warps at most; kFresh: x was written by other blocks of
// the running kernel (loads from L2, past this SM's L1).
template <int kMaxWarps = kWarps, bool kFresh = false>
__device__ void stage_half(const bf16* __restrict__ x, int n, int K, uint4* dst, float* inv) {
  __shared__ float s_red[kMaxWarps];
  const int k8 = K / 8, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = 0; r < n; ++r) {
    const uint4* src = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(r) * K);
    float m = 0;
    for (int i = threadIdx.x; i < k8; i += blockDim.x) {
      const uint4 v = kFresh ? __ldcg(src + i) : src[i];
      const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j)
        m = fmaxf(m, fmaxf(fabsf(__uint_as_float(u[j] << 16)), fabsf(__uint_as_float(u[j] & 0xffff0000u))));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) s_red[warp] = m;
    __syncthreads();
    m = s_red[0];
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) m = fmaxf(m, s_red[w]);
    int ex = 0;
    frexpf(m, &ex);
    const int e = m > 0 && m <= 3.0e38f ? min(100, max(-100, 15 - ex)) : 0;
    const float sc = ldexpf(1.0f, e);
    for (int i = threadIdx.x; i < k8; i += blockDim.x) {
      const uint4 v = kFresh ? __ldcg(src + i) : src[i];
      const uint32_t u[4] = {v.x, v.y, v.z, v.w};
      uint32_t h[4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
        h[j] = qcodes::half2_bits(
            __floats2half2_rn(__uint_as_float(u[j] << 16) * sc, __uint_as_float(u[j] & 0xffff0000u) * sc));
      dst[static_cast<int64_t>(r) * k8 + i] = make_uint4(h[0], h[1], h[2], h[3]);
    }
    if (threadIdx.x == 0) inv[r] = ldexpf(1.0f, -e);
    __syncthreads();  // s_red is reused by the next row; dst and inv are read after this
  }
}

// kContig: batch b is chunks 32 b .. 32 b + 31 of a row (lane i: chunk 32 b + i, 512
// contiguous bytes a load instruction, as the warp-row kernels), slot g super-step 8 b + g:
// slots 0 .. 3 are the next four super-steps of chain (2 b) % 4, slots 4 .. 7 of chain
// (2 b + 1) % 4, and each chain's lane gathers its four sums (and their scales) by shuffles.
// kHalf: the fp16 form (Codes16, activations staged by stage_half at r.xs): the same sums
// times the row's 2^e, bit for bit in the range stage_half states.
// kPlain: every batch of a row lies inside it and the groups cover the batches exactly
// (plain_rows), and int4 has no zero points: the row-end conditions and the zero point
// (8) are constants, so the loop asks for none of them (the same sums); and a group's
// super-steps are the lane's first plus constants (exact_ss_step), so each row's codes and
// scale words are loaded at one address plus immediate offsets (C::scale_at, C::raw_at).
// kCg: the bf16 form's activations were written by other blocks of the running kernel (plain
// cached loads, not the read-only path; the grid barrier's acquire makes them current).
template <QuantFormat F, bool kPaired, int kDepth, int kRP, bool kContig = false, bool kHalf = false,
          bool kPlain = false, bool kCg = false>
struct ExactGroup {
  using C = std::conditional_t<kHalf, Codes16<F, kPaired>, Codes<F, kPaired>>;
  using Tot = Totals<2 * kRP>;  // row j's chain c in lane 4 c + c / 2 (c < 4); exact_total adds them
  static_assert(C::kDepth == 4, "the exact kernels follow the tile kernel's 4 super-steps a batch");
  uint4 w[2 * kRP][kDepth];
  typename C::Raw sw[2 * kRP][kDepth];

  __device__ __forceinline__ void issue(const ExactItem<kRP>& r, int j0, int b1, int chunks, int K, int lane) {
    const int g = lane >> 2, t = lane & 3, steps = (chunks + 3) / 4;
    static_assert(!kPlain || (kDepth % 2 == 0 && !kContig), "the plain loop's groups start at even batches");
    if constexpr (kPlain) {  // a row's codes and scale words at one address each, plus constants of u
      const int s0 = exact_ss_first(j0, g);
      const uint8_t *qj[2 * kRP], *sj[2 * kRP];
#pragma unroll
      for (int j = 0; j < 2 * kRP; ++j) {
        qj[j] = r.q[j] + 16 * static_cast<int64_t>(4 * s0 + t);
        sj[j] = C::scale_at(r.scale, r.row[j], s0, K);
      }
#pragma unroll
      for (int u = 0; u < kDepth; ++u)
#pragma unroll
        for (int j = 0; j < 2 * kRP; ++j) {
          w[j][u] = load16_stream(qj[j] + 64 * exact_ss_step(u));
          sw[j][u] = C::raw_at(sj[j], exact_ss_step(u));
        }
    } else {
#pragma unroll
      for (int u = 0; u < kDepth; ++u) {
        const int ss = kContig ? 8 * (j0 + u) + g : exact_ss(j0 + u, g), c = 4 * ss + t;
        const bool ok = j0 + u < b1 && c < chunks;
        const int sc = min(ss, steps - 1);  // past the row end: any valid group (never added)
#pragma unroll
        for (int j = 0; j < 2 * kRP; ++j) {
          w[j][u] = ok ? load16_stream(r.q[j] + 16 * static_cast<int64_t>(c)) : make_uint4(0, 0, 0, 0);
          sw[j][u] = C::raw(r.scale, r.zero, r.row[j], sc, K);
        }
      }
    }
  }

  __device__ __forceinline__ void compute(const ExactItem<kRP>& r, int j0, int b1, int chunks, int lane,
                                          Tot& tot) const {
    constexpr int V = C::kValues;
    const int g = lane >> 2, t = lane & 3, steps = (chunks + 3) / 4;
    const bool odd = (g & 1) != 0, chain_lane = g < 4 && t == (g >> 1);
    const int src = 4 * (g | 4) + ((g | 4) >> 1);  // slot g + 4's diagonal lane (read by slot g < 4)
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
      const int b = j0 + u;
      if (!kPlain && b >= b1) break;  // warp-uniform
      const int ss = kPlain ? exact_ss_first(j0, g) + exact_ss_step(u) : kContig ? 8 * b + g : exact_ss(b, g);
      const int c = 4 * ss + t;
      uint32_t xw[V / 2];
#pragma unroll
      for (int i = 0; i < V / 8; ++i) {
        uint4 v = make_uint4(0, 0, 0, 0);  // past the row end: zero activations, as the tile kernel
        if (kPlain || c < chunks) {
          if constexpr (kHalf) v = lds16(r.xs + static_cast<uint32_t>((c * V + 8 * i) * 2));
          else if constexpr (kCg) v = __ldca(reinterpret_cast<const uint4*>(r.x + static_cast<int64_t>(c) * V) + i);
          else v = __ldg(reinterpret_cast<const uint4*>(r.x + static_cast<int64_t>(c) * V) + i);
        }
        xw[4 * i] = v.x;
        xw[4 * i + 1] = v.y;
        xw[4 * i + 2] = v.z;
        xw[4 * i + 3] = v.w;
      }
      typename C::Row pr[2 * kRP];
      float d[kRP][4];
#pragma unroll
      for (int j = 0; j < 2 * kRP; ++j) pr[j] = C::row(sw[j][u]);
#pragma unroll
      for (int h = 0; h < kRP; ++h)
#pragma unroll
        for (int q = 0; q < 4; ++q) d[h][q] = 0;
#pragma unroll
      for (int s = 0; s < V / 4; ++s)
#pragma unroll
        for (int h = 0; h < kRP; ++h) {  // kRP independent chains, each its steps in order
          uint32_t a0, a1, a2, a3, x0, x1;
          C::a_regs(w[2 * h][u], s, pr[2 * h], a0, a2);
          C::a_regs(w[2 * h + 1][u], s, pr[2 * h + 1], a1, a3);
          C::b_regs(xw, s, x0, x1);
          if constexpr (kHalf) detail::mma_f16_16x8x16(d[h], a0, a1, a2, a3, x0, x1);
          else detail::mma_bf16_16x8x16(d[h], a0, a1, a2, a3, x0, x1);
        }
      if constexpr (kContig) {
        // Chain lane c takes chain (2 b) % 4 from slots 0 .. 3 or (2 b + 1) % 4 from 4 .. 7.
        const int half = g == ((2 * b) & 3) ? 0 : 1;
        const bool active = chain_lane && (g == ((2 * b) & 3) || g == ((2 * b + 1) & 3));
#pragma unroll
        for (int h = 0; h < kRP; ++h)
#pragma unroll
          for (int k2 = 0; k2 < 2; ++k2) {
            const int j = 2 * h + k2;
            const float dv = odd ? d[h][2 * k2 + 1] : d[h][2 * k2];
#pragma unroll
            for (int q = 0; q < 4; ++q) {
              const int sl = 4 * half + q, from = 4 * sl + (sl >> 1);
              const float dq = __shfl_sync(0xffffffffu, dv, from);
              float sq = pr[j].s;  // int8: one scale a row
              if constexpr (F != QuantFormat::int8) sq = __shfl_sync(0xffffffffu, pr[j].s, from);
              if (active && (kPlain || 8 * b + sl < steps)) tot.v[j] = fmaf(sq, dq, tot.v[j]);
            }
          }
      } else {
#pragma unroll
        for (int h = 0; h < kRP; ++h)
#pragma unroll
          for (int k2 = 0; k2 < 2; ++k2) {  // row 2 h + k2: D[g][g] (k2 0) or D[g + 8][g] (k2 1)
            const int j = 2 * h + k2;
            const float dv = odd ? d[h][2 * k2 + 1] : d[h][2 * k2];
            const float dn = __shfl_sync(0xffffffffu, dv, src);
            // The scale of super-step ss + 1: int4 another group's (slot g + 4's, shuffled);
            // int8 and fp8 the same as ss's (one per row; ss even and ss + 1 share a
            // 128-input fp8 block).
            float sn = pr[j].s;
            if constexpr (F == QuantFormat::int4) sn = __shfl_sync(0xffffffffu, pr[j].s, src);
            if (chain_lane) {
              if (kPlain || ss < steps) tot.v[j] = fmaf(pr[j].s, dv, tot.v[j]);
              if (kPlain || ss + 1 < steps) tot.v[j] = fmaf(sn, dn, tot.v[j]);
            }
          }
      }
    }
  }
};

// The tile kernel's total of a row from the four chain lanes: ((T0 + T1) + T2) + T3, in
// lane 0 (chain 0's lane; every lane must call it).
__device__ __forceinline__ float exact_total(float t) {
  const float t1 = __shfl_sync(0xffffffffu, t, 4), t2 = __shfl_sync(0xffffffffu, t, 9);
  const float t3 = __shfl_sync(0xffffffffu, t, 13);
  return ((t + t1) + t2) + t3;
}

// A warp's walk over its items it = first, first + stride, ... < items, batches [b0, b1)
// of each (at least one group an item, empty where b0 == b1): item(it) gives the rows,
// finish(it, tot) takes the item's totals (G::Tot) (called by every lane). Without kPipe a
// group's loads are issued, then used; with kPipe the next group's (of this item or the
// next) are issued before the current one is computed, two groups alternating in
// registers, so a warp's loads stay in flight while it computes, across items. The sums
// are the same either way. wait_pending: 1, pdl_wait() and pdl_trigger() once the first
// loads are issued (the weights may be read before the previous kernel ends, x may not);
// 2, pdl_wait() alone there (the caller triggers later); 0, neither.
// G: the group (RowGroup or ExactGroup), kDepth its batches.
// after_wait() runs right after that pdl_wait() (every warp of the block reaches it, those
// without items too).
// A hook whose type has kSkipPdlWait true replaces the pdl_wait() (its own wait, e.g. on
// other blocks of the same launch: GridWait).
struct NoHook {
  __device__ void operator()() const {}
};
template <typename H, typename = void>
struct SkipsPdlWait : std::false_type {};
template <typename H>
struct SkipsPdlWait<H, std::void_t<decltype(H::kSkipPdlWait)>> : std::bool_constant<H::kSkipPdlWait> {};
template <typename G, int kDepth, bool kPipe, typename ItemFn, typename FinishFn, typename Hook = NoHook>
__device__ __forceinline__ void walk_items(int first, int stride, int items, int b0, int b1, int chunks, int K,
                                           int lane, int wait_pending, ItemFn&& item, FinishFn&& finish,
                                           Hook&& after_wait = Hook{}) {
  auto settle = [&] {
    if (wait_pending) {
      if constexpr (!SkipsPdlWait<std::remove_cvref_t<Hook>>::value) pdl_wait();
      if (wait_pending == 1) pdl_trigger();
      after_wait();
      wait_pending = 0;
    }
  };
  if constexpr (!kPipe) {
    if (first >= items) settle();  // a warp without items still waits and runs the hook
    for (int it = first; it < items; it += stride) {
      const auto r = item(it);
      typename G::Tot tot;
      int j0 = b0;
      do {
        G grp;
        grp.issue(r, j0, b1, chunks, K, lane);
        settle();
        grp.compute(r, j0, b1, chunks, lane, tot);
        j0 += kDepth;
      } while (j0 < b1);
      finish(it, tot);
    }
  } else {
    // A unit: (item it, group from batch j0); the next unit is the item's next group or
    // the next item's first.
    int it = first, j0 = b0;
    if (it >= items) return settle();
    auto r = item(it);
    G ga, gb;
    ga.issue(r, j0, b1, chunks, K, lane);
    typename G::Tot tot;
    // step(cur, nxt): issue the unit after (it, j0) into nxt, compute cur, finish an item;
    // false when (it, j0) was the warp's last unit.
    auto step = [&](G& cur, G& nxt) {
      int it2 = it, j2 = j0 + kDepth;
      if (j2 >= b1) {
        it2 = it + stride;
        j2 = b0;
      }
      const bool more = it2 < items;
      const auto r2 = more ? item(it2) : r;
      if (more) nxt.issue(r2, j2, b1, chunks, K, lane);
      settle();
      cur.compute(r, j0, b1, chunks, lane, tot);
      if (it2 != it) {
        finish(it, tot);
        tot = typename G::Tot{};
      }
      it = it2;
      j0 = j2;
      r = r2;
      return more;
    };
    while (step(ga, gb) && step(gb, ga)) {
    }
  }
}

// The sum of the 8 diagonal lanes' totals (lane 4 g + g / 2 for segment g), in every lane.
__device__ __forceinline__ float diag_total(float t, int lane) {
  const int g = lane & 7;
  float v = __shfl_sync(0xffffffffu, t, 4 * g + (g >> 1));
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  v += __shfl_xor_sync(0xffffffffu, v, 4);
  return v;
}

// Each pair's expert's parts (one lookup a block instead of one a work item).
struct PairParts {
  const uint8_t* q[kMaxPairs];
  const uint8_t* scale[kMaxPairs];
  const uint8_t* zero[kMaxPairs];
};
// kFresh: ids were written by other blocks of the running kernel (loads from L2).
template <bool kFresh = false>
__device__ __forceinline__ void load_pair_parts(const QuantExperts& w, const int32_t* ids, int n_pairs, PairParts& s) {
  for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) {
    const int e = kFresh ? __ldcg(ids + p) : ids[p];
    s.q[p] = w.q[e];
    s.scale[p] = w.scale[e];
    s.zero[p] = w.zero ? w.zero[e] : nullptr;
  }
  __syncthreads();
}

// The GEMV / gate-up kernels' start: after the kernels before (the router's ids, x), each
// pair's expert's parts into s.
__device__ __forceinline__ void start_after_router(const QuantExperts& w, const int32_t* ids, int n_pairs,
                                                   PairParts& s) {
  pdl_wait();
  pdl_trigger();
  load_pair_parts(w, ids, n_pairs, s);
}

// The exact gate/up's start: the expert table (written before the previous kernel began)
// into shared memory before the wait where it has at most kTableExperts experts; after the
// wait each pair's parts from it (or from w's arrays) and its activation row (p, or its
// token p / k) into xr, one barrier.
constexpr int kTableExperts = 64;
struct ExpertTable {
  const uint8_t* q[kTableExperts];
  const uint8_t* scale[kTableExperts];
  const uint8_t* zero[kTableExperts];
};
__device__ __forceinline__ bool expert_table_before_wait(const QuantExperts& w, ExpertTable& t) {
  const bool table = w.n_experts > 0 && w.n_experts <= kTableExperts;
  if (table) {
    for (int e = threadIdx.x; e < w.n_experts; e += blockDim.x) {
      t.q[e] = w.q[e];
      t.scale[e] = w.scale[e];
      t.zero[e] = w.zero ? w.zero[e] : nullptr;
    }
    __syncthreads();
  }
  return table;
}
// After the wait (and the ids): each pair's parts and activation row, one barrier. kFresh:
// as load_pair_parts.
template <bool kFresh = false>
__device__ __forceinline__ void pair_parts_from_table(const QuantExperts& w, const int32_t* ids, int n_pairs,
                                                      bool x_per_pair, int k, bool table, const ExpertTable& t,
                                                      PairParts& s, int* xr) {
  // load_pair_parts's loop with the table read in place: handing it generic pointers to the
  // table instead costs registers (a shape capped at 64 spills), so the loop is spelled out.
  for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) {
    const int e = kFresh ? __ldcg(ids + p) : ids[p];
    s.q[p] = table ? t.q[e] : w.q[e];
    s.scale[p] = table ? t.scale[e] : w.scale[e];
    s.zero[p] = table ? t.zero[e] : w.zero ? w.zero[e] : nullptr;
    xr[p] = x_per_pair ? p : p / k;
  }
  __syncthreads();
}
__device__ __forceinline__ void start_after_router_table(const QuantExperts& w, const int32_t* ids, int n_pairs,
                                                         bool x_per_pair, int k, ExpertTable& t, PairParts& s,
                                                         int* xr) {
  const bool table = expert_table_before_wait(w, t);
  pdl_wait();
  pdl_trigger();
  pair_parts_from_table(w, ids, n_pairs, x_per_pair, k, table, t, s, xr);
}

// Work item it (pair p, row pair i): rows 2 i and 2 i + 1 (clamped; the second written only
// below N), or with gu_inter > 0 rows i of w1 and gu_inter + i of w3, written as h[p, i] =
// bf16(silu(g) * u). Warps take the items it = warp, warp + all warps, ...
template <QuantFormat F, bool kPaired, int kCfg>
__global__ void __launch_bounds__(kWarps * 32, cfg_blocks(kCfg))
    quant_rows_kernel(QuantExperts w, const bf16* __restrict__ x, int x_per_pair, const int32_t* __restrict__ ids,
                      int n_pairs, int k, int N, int K, float* __restrict__ out, int gu_inter,
                      bf16* __restrict__ out_h) {
  __shared__ PairParts s;
  start_after_router(w, ids, n_pairs, s);
  const int lane = threadIdx.x & 31;
  const int per_pair = gu_inter > 0 ? gu_inter : (N + 1) / 2, items = n_pairs * per_pair;
  const int64_t row_bytes = row_bytes_of<F>(K);
  const int chunks = static_cast<int>(row_bytes / 16), nb = (chunks + kBatchChunks - 1) / kBatchChunks;
  walk_items<RowGroup<F, kPaired, cfg_depth(kCfg)>, cfg_depth(kCfg), cfg_pipe(kCfg)>(
      blockIdx.x * kWarps + (threadIdx.x >> 5), gridDim.x * kWarps, items, 0, nb, chunks, K, lane, false,
      [&](int it) {
        const int p = it / per_pair, i = it - p * per_pair;
        const int ra = gu_inter > 0 ? i : 2 * i, rb = gu_inter > 0 ? gu_inter + i : min(2 * i + 1, N - 1);
        return RowItem{s.q[p] + ra * row_bytes, s.q[p] + rb * row_bytes, s.scale[p], s.zero[p],
                       x + static_cast<int64_t>(x_per_pair ? p : p / k) * K, ra, rb};
      },
      [&](int it, const auto& tot) {
        const float ya = diag_total(tot.v[0], lane), yb = diag_total(tot.v[1], lane);
        if (lane != 0) return;
        const int p = it / per_pair, i = it - p * per_pair;
        if (gu_inter > 0) {
          out_h[static_cast<int64_t>(p) * gu_inter + i] = __float2bfloat16_rn(detail::silu(ya) * yb);
        } else {
          out[static_cast<int64_t>(p) * N + 2 * i] = ya;
          if (2 * i + 1 < N) out[static_cast<int64_t>(p) * N + 2 * i + 1] = yb;
        }
      });
}

// The exact GEMV / gate-up's work after its start (s and s_xr filled): x the activation
// rows (global memory, or with kHalf any memory: only stage_half reads them). kSub: the
// block is kSub blocks of kWarps warps (warps kWarps j .. kWarps j + kWarps - 1 the launch's
// block kSub blockIdx.x + j; the items go to the warps as in a launch of kSub gridDim.x
// blocks); kFresh: x was written by other blocks of the running kernel.
template <QuantFormat F, bool kPaired, int kCfg, int kRP, bool kContig, bool kHalf, bool kPlain, int kSub = 1,
          bool kFresh = false>
__device__ __forceinline__ void exact_items(const QuantExperts& w, const bf16* __restrict__ x, bool x_per_pair,
                                            int n_pairs, int k, int N, int K, float* __restrict__ out, int gu_inter,
                                            bf16* __restrict__ out_h, int warp_major, const PairParts& s,
                                            const int* s_xr) {
  __shared__ float s_inv[kMaxPairs];
  extern __shared__ uint4 s_half[];  // kHalf: the activation rows in fp16 (stage_half)
  if constexpr (kHalf)
    stage_half<kSub * kWarps, kFresh>(x, x_per_pair ? n_pairs : (n_pairs - 1) / k + 1, K, s_half, s_inv);
  const uint32_t xs0 = kHalf ? static_cast<uint32_t>(__cvta_generic_to_shared(s_half)) : 0u;
  // (kSub 1: the block's own warp and index, spelled so: the compiler does not know the block
  // has kWarps warps, and the general forms cost the default launches registers.)
  const int lane = threadIdx.x & 31, warp = kSub == 1 ? threadIdx.x >> 5 : (threadIdx.x >> 5) % kWarps;
  const int vb = kSub == 1 ? static_cast<int>(blockIdx.x)
                           : static_cast<int>(blockIdx.x) * kSub + static_cast<int>(threadIdx.x >> 5) / kWarps;
  const int vgrid = static_cast<int>(gridDim.x) * kSub;
  const int rows = gu_inter > 0 ? gu_inter : (N + 1) / 2;  // row pairs of a pair
  const int per_pair = (rows + kRP - 1) / kRP, items = n_pairs * per_pair;
  const int64_t row_bytes = row_bytes_of<F>(K);
  const int chunks = static_cast<int>(row_bytes / 16);
  const int first = warp_major ? warp * vgrid + vb : vb * kWarps + warp;
  walk_items<ExactGroup<F, kPaired, cfg_depth(kCfg), kRP, kContig, kHalf, kPlain>, cfg_depth(kCfg), cfg_pipe(kCfg)>(
      first, vgrid * kWarps, items, 0, exact_batches<kContig>(chunks), chunks, K, lane, false,
      [&](int it) {
        const int p = it / per_pair, i = it - p * per_pair;
        ExactItem<kRP> r;
#pragma unroll
        for (int h = 0; h < kRP; ++h) {
          const int rp = min(kRP * i + h, rows - 1);  // row pair (clamped)
          r.row[2 * h] = gu_inter > 0 ? rp : min(2 * rp, N - 1);
          r.row[2 * h + 1] = gu_inter > 0 ? gu_inter + rp : min(2 * rp + 1, N - 1);
        }
#pragma unroll
        for (int j = 0; j < 2 * kRP; ++j) r.q[j] = s.q[p] + r.row[j] * row_bytes;
        r.scale = s.scale[p];
        r.zero = s.zero[p];
        const int xr = s_xr[p];
        r.x = x + static_cast<int64_t>(xr) * K;
        r.xs = xs0 + static_cast<uint32_t>(xr * K * 2);
        return r;
      },
      [&](int it, const auto& tot) {
        const int p = it / per_pair, i = it - p * per_pair;
        const float inv = kHalf ? s_inv[s_xr[p]] : 1.0f;
        float y[2 * kRP];
#pragma unroll
        for (int j = 0; j < 2 * kRP; ++j) y[j] = exact_total(tot.v[j]) * inv;  // bf16 form: x 1, exactly
        if (lane != 0) return;
#pragma unroll
        for (int h = 0; h < kRP; ++h) {
          const int rp = kRP * i + h;
          if (rp >= rows) break;
          if (gu_inter > 0) {
            out_h[static_cast<int64_t>(p) * gu_inter + rp] = __float2bfloat16_rn(detail::silu(y[2 * h]) * y[2 * h + 1]);
          } else {
            out[static_cast<int64_t>(p) * N + 2 * rp] = y[2 * h];
            if (2 * rp + 1 < N) out[static_cast<int64_t>(p) * N + 2 * rp + 1] = y[2 * h + 1];
          }
        }
      });
}

// The exact GEMV / gate-up: work item it (pair p, group i of kRP row pairs): rows
// 2 kRP i .. 2 kRP i + 2 kRP - 1 (clamped; written only below N), or with gu_inter > 0 rows
// kRP i + h of w1 and of w3 (h < kRP), written as h[p, r] = bf16(silu(g) * u) as the tile
// kernel writes it. Warps take the items it = first, first + all warps, ..., first the
// warp's index block-major (warp_major 0: blockIdx.x kWarps + warp) or warp-major (1: warp
// gridDim.x + blockIdx.x: quant_warp_order).
template <QuantFormat F, bool kPaired, int kCfg, int kRP, bool kContig, bool kHalf, bool kPlain>
__global__ void __launch_bounds__(kWarps * 32, cfg_blocks(kCfg))
    quant_exact_kernel(QuantExperts w, const bf16* __restrict__ x, int x_per_pair, const int32_t* __restrict__ ids,
                       int n_pairs, int k, int N, int K, float* __restrict__ out, int gu_inter,
                       bf16* __restrict__ out_h, int warp_major) {
  __shared__ PairParts s;
  __shared__ int s_xr[kMaxPairs];  // each pair's activation row: p, or its token p / k
  __shared__ ExpertTable s_table;
  start_after_router_table(w, ids, n_pairs, x_per_pair != 0, k, s_table, s, s_xr);
  exact_items<F, kPaired, kCfg, kRP, kContig, kHalf, kPlain>(w, x, x_per_pair != 0, n_pairs, k, N, K, out, gu_inter,
                                                            out_h, warp_major, s, s_xr);
}

// The fused gate/up of one token with the MoE block's norm + router before it
// (quant_rows_gate_up_router): every block runs norm_router_in_block on x (the gate row
// and norm weights asked of L1 before the wait), block 0 also writes h, the logits, the
// ids and the weights; then the exact gate/up on the block's own h (kHalf: staged from
// shared memory) and top-k, k pairs of one token.
template <QuantFormat F, bool kPaired, int kCfg, int kRP, bool kPlain>
__global__ void __launch_bounds__(kWarps * 32, cfg_blocks(kCfg))
    quant_exact_router_kernel(QuantExperts w, GateUpRouter r, int k, int N, int K, bf16* __restrict__ out_h,
                              int warp_major) {
  static_assert(kWarps * 32 == kNormRouterThreads, "norm_router_in_block sums in norm_router's block order");
  __shared__ PairParts s;
  __shared__ int s_xr[kMaxPairs];
  __shared__ ExpertTable s_table;
  __shared__ __align__(16) bf16 s_h[kNormRouterRegsMaxHidden];
  __shared__ float s_logits[kNormRouterWarps];
  __shared__ int32_t s_ids[kNormRouterWarps];
  __shared__ float s_w[kNormRouterWarps];
  const bool table = expert_table_before_wait(w, s_table);
  norm_router_prefetch_l1(r.norm_w, r.gate, K, r.n_experts);
  pdl_wait();
  pdl_trigger();
  // x was written by the launch before (o_proj): read after the wait, as norm_router reads it.
  norm_router_in_block<false>(r.x, r.norm_w, r.eps, r.gate, K, r.n_experts, k, r.renormalise != 0, s_h, s_logits,
                              s_ids, s_w, blockIdx.x == 0, r.h, r.logits, r.ids, r.weights);
  pair_parts_from_table(w, s_ids, k, false, k, table, s_table, s, s_xr);
  exact_items<F, kPaired, kCfg, kRP, false, true, kPlain>(w, s_h, false, k, k, N, K, nullptr, N / 2, out_h, warp_major,
                                                         s, s_xr);
}

// Down + combine: work item it = (token, row pair i); warp w of the block takes slot
// w / (8 / kK) of the token and part w % (8 / kK) of the row's batches; the parts' sums
// meet in s_y (two buffers, alternating items: one barrier an item), and threads 0 and 1
// add each slot's parts in order and the slots as moe_combine_all does (fmaf from 0 in
// slot order, then added to out). flags bit 0 (ids early): the ids were written before the
// previous kernel began, so the first weights are asked for before pdl_wait; bit 1 (late
// trigger, MOEBENCH_QUANT_DOWN_TRIGGER=1): the next kernel's blocks may start only as this
// block's warps finish their items, not right after the wait (down_flags).
template <QuantFormat F, bool kPaired, int kK, int kCfg>
__global__ void __launch_bounds__(kWarps * 32, cfg_blocks(kCfg))
    quant_rows_down_combine_kernel(QuantExperts w, const bf16* __restrict__ h, const int32_t* __restrict__ ids,
                                   const float* __restrict__ weights, int n_pairs, int N, int K,
                                   float* __restrict__ out, int flags) {
  constexpr int kParts = kWarps / kK;
  __shared__ PairParts s;
  __shared__ float s_y[2][kWarps][2];
  const bool ids_early = flags & 1, late = flags & 2;
  if (!ids_early) {
    pdl_wait();
    if (!late) pdl_trigger();
  }
  load_pair_parts(w, ids, n_pairs, s);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, slot = warp / kParts, part = warp % kParts;
  const int per_tok = (N + 1) / 2, items = (n_pairs / kK) * per_tok;
  const int64_t row_bytes = row_bytes_of<F>(K);
  const int chunks = static_cast<int>(row_bytes / 16), nb = (chunks + kBatchChunks - 1) / kBatchChunks;
  const int b0 = part * nb / kParts, b1 = (part + 1) * nb / kParts;
  int buf = 0;
  walk_items<RowGroup<F, kPaired, cfg_depth(kCfg)>, cfg_depth(kCfg), cfg_pipe(kCfg)>(
      blockIdx.x, gridDim.x, items, b0, b1, chunks, K, lane, ids_early ? (late ? 2 : 1) : 0,
      [&](int it) {
        const int tok = it / per_tok, i = it - tok * per_tok, p = tok * kK + slot;
        const int ra = 2 * i, rb = min(2 * i + 1, N - 1);
        return RowItem{s.q[p] + ra * row_bytes, s.q[p] + rb * row_bytes, s.scale[p], s.zero[p],
                       h + static_cast<int64_t>(p) * K, ra, rb};
      },
      [&](int it, const auto& tot) {
        const float ya = diag_total(tot.v[0], lane), yb = diag_total(tot.v[1], lane);
        if (lane == 0) {
          s_y[buf][warp][0] = ya;
          s_y[buf][warp][1] = yb;
        }
        __syncthreads();
        const int tok = it / per_tok, i = it - tok * per_tok, r = threadIdx.x;
        if (r < 2 && 2 * i + r < N) {
          float acc = 0;
#pragma unroll
          for (int j = 0; j < kK; ++j) {
            float y = s_y[buf][j * kParts][r];
#pragma unroll
            for (int q2 = 1; q2 < kParts; ++q2) y += s_y[buf][j * kParts + q2][r];
            acc = fmaf(weights[tok * kK + j], y, acc);
          }
          out[static_cast<int64_t>(tok) * N + 2 * i + r] += acc;
        }
        buf ^= 1;
      });
  if (late) pdl_trigger();  // every warp of a block walks the same items
}

// The barrier of a block's sub-block sub of kWarps warps (exact_items's kSub): the block's
// own where it is one, else named barrier 1 + sub of its kWarps x 32 threads.
template <int kSub>
__device__ __forceinline__ void sub_block_sync(int sub) {
  if constexpr (kSub == 1) __syncthreads();
  else asm volatile("bar.sync %0, %1;" ::"r"(1 + sub), "n"(kWarps * 32) : "memory");
}

// The exact down + combine's walk after its start (s filled; with kHalf the rows staged at
// xs0 with their s_inv): wait_pending and hook as walk_items's. kSub: as exact_items's;
// kCgX: h was written by other blocks of the running kernel (plain cached loads, not the
// read-only path); kFreshW: the weights too (loads from L2).
template <QuantFormat F, bool kPaired, int kCfg, int kRP, bool kContig, bool kHalf, bool kPlain, int kSub = 1,
          bool kCgX = false, bool kFreshW = false, typename Hook = NoHook>
__device__ __forceinline__ void exact_down_items(const QuantExperts& w, const bf16* __restrict__ h,
                                                 const float* __restrict__ weights, int n_pairs, int k, int N, int K,
                                                 float* __restrict__ out, int wait_pending, const PairParts& s,
                                                 uint32_t xs0, const float* s_inv, Hook&& hook = Hook{}) {
  __shared__ float s_y[kSub][2][kWarps][2 * kRP];
  const int sub = kSub == 1 ? 0 : static_cast<int>(threadIdx.x >> 5) / kWarps;  // (as exact_items's)
  const int tid = static_cast<int>(threadIdx.x) - sub * kWarps * 32;
  const int warp = tid >> 5, lane = tid & 31, wps = kWarps / k, slot = warp / wps, q = warp % wps;
  const int rows = (N + 1) / 2, per_item = wps * kRP;  // row pairs of a token, of a block item
  const int per_tok = (rows + per_item - 1) / per_item, items = (n_pairs / k) * per_tok;
  const int64_t row_bytes = row_bytes_of<F>(K);
  const int chunks = static_cast<int>(row_bytes / 16);
  int buf = 0;
  walk_items<ExactGroup<F, kPaired, cfg_depth(kCfg), kRP, kContig, kHalf, kPlain, kCgX>, cfg_depth(kCfg),
             cfg_pipe(kCfg)>(
      static_cast<int>(blockIdx.x) * kSub + sub, static_cast<int>(gridDim.x) * kSub, items, 0,
      exact_batches<kContig>(chunks), chunks, K, lane, wait_pending,
      [&](int it) {
        const int tok = it / per_tok, i0 = (it - tok * per_tok) * per_item + q * kRP, p = tok * k + slot;
        ExactItem<kRP> r;
#pragma unroll
        for (int j = 0; j < 2 * kRP; ++j) {
          r.row[j] = min(2 * i0 + j, N - 1);
          r.q[j] = s.q[p] + r.row[j] * row_bytes;
        }
        r.scale = s.scale[p];
        r.zero = s.zero[p];
        r.x = h + static_cast<int64_t>(p) * K;
        r.xs = xs0 + static_cast<uint32_t>(p * K * 2);
        return r;
      },
      [&](int it, const auto& tot) {
        const float inv = kHalf ? s_inv[(it / per_tok) * k + slot] : 1.0f;
        float y[2 * kRP];
#pragma unroll
        for (int j = 0; j < 2 * kRP; ++j) y[j] = exact_total(tot.v[j]) * inv;  // bf16 form: x 1, exactly
        if (lane == 0)
#pragma unroll
          for (int j = 0; j < 2 * kRP; ++j) s_y[sub][buf][warp][j] = y[j];
        sub_block_sync<kSub>(sub);
        const int tok = it / per_tok, r = tid, qr = r / (2 * kRP), j = r % (2 * kRP);
        const int row = 2 * ((it - tok * per_tok) * per_item + qr * kRP) + j;
        if (r < 2 * per_item && row < N) {
          float acc = 0;
          for (int sl = 0; sl < k; ++sl) {
            const float wt = kFreshW ? __ldcg(weights + tok * k + sl) : weights[tok * k + sl];
            acc = fmaf(wt, s_y[sub][buf][sl * wps + qr][j], acc);
          }
          out[static_cast<int64_t>(tok) * N + row] += acc;
        }
        buf ^= 1;
      },
      hook);
}

// Down + combine, exact: the tile kernel's down + combine (its GEMV sums, then fmaf from 0 in
// slot order, added to out), bit for bit. A block item is (token, 8 kRP / k row pairs);
// warp w takes slot w / (8 / k) of the token and row pairs kRP (w % (8 / k)) .. + kRP - 1,
// the whole rows (the four chains, as ExactGroup); the rows' sums meet in s_y (two
// buffers, alternating items: one barrier an item) and threads 0 .. 2 kRP (8 / k) - 1 add
// the slots. k must divide 8. flags: as the warp-row kernel's above.
template <QuantFormat F, bool kPaired, int kCfg, int kRP, bool kContig, bool kHalf, bool kPlain>
__global__ void __launch_bounds__(kWarps * 32, cfg_blocks(kCfg))
    quant_exact_down_combine_kernel(QuantExperts w, const bf16* __restrict__ h, const int32_t* __restrict__ ids,
                                    const float* __restrict__ weights, int n_pairs, int k, int N, int K,
                                    float* __restrict__ out, int flags) {
  __shared__ PairParts s;
  __shared__ float s_inv[kMaxPairs];
  extern __shared__ uint4 s_half[];  // kHalf: each pair's activation row in fp16 (stage_half)
  const bool ids_early = flags & 1, late = flags & 2;
  if (!ids_early) {
    pdl_wait();
    if (!late) pdl_trigger();
  }
  load_pair_parts(w, ids, n_pairs, s);
  if constexpr (kHalf)
    if (!ids_early) stage_half(h, n_pairs, K, s_half, s_inv);
  const uint32_t xs0 = kHalf ? static_cast<uint32_t>(__cvta_generic_to_shared(s_half)) : 0u;
  exact_down_items<F, kPaired, kCfg, kRP, kContig, kHalf, kPlain>(
      w, h, weights, n_pairs, k, N, K, out, ids_early ? (late ? 2 : 1) : 0, s, xs0, s_inv, [&] {
        if constexpr (kHalf) stage_half(h, n_pairs, K, s_half, s_inv);
      });
  if (late) pdl_trigger();  // every warp of a block walks the same items
}

// The exact variants' launch shapes (variant kQuantVariantExact + i): cfg and row pairs a
// warp. 40: depth 2 at 32 warps an SM (as the warp-row variant 34), 41: depth 4 at 16 (32),
// 42: depth 2 pipelined at 24 (37); two row pairs a warp: 43 depth 2 at 24, 44 depth 2 at 16.
// 45: depth 2 at 32 warps with the contiguous batches (ExactGroup kContig).
struct ExactShape {
  int cfg, rp;
  bool contig;
};
constexpr ExactShape kExactShapes[kQuantExactShapes] = {
    {2, 1, false}, {0, 1, false}, {5, 1, false}, {7, 2, false}, {8, 2, false}, {2, 1, true}};

// The persistent MoE block (quant_rows_moe_persistent): one block an SM of kSub x kWarps
// warps, each kWarps warps taking the items of one block of the launches it replaces
// (persist_threads). The blocks meet at grid barriers on one 64-bit counter (every block adds 1
// after its stores; a barrier's waiters wait, thread 0 polling, for the count of the
// blocks times the barriers so far); after the last, every block adds 1 more and the block
// that completes that round sets the counter back to 0, so each launch starts from 0.
constexpr int persist_threads(int sub) { return sub * kWarps * 32; }

__device__ __forceinline__ unsigned long long load_relaxed_gpu(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
// Every thread of the block: this block's stores before it, then its arrival.
__device__ __forceinline__ void grid_arrive(unsigned long long* c) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(c, 1ull);
  }
}
// A walk_items hook (replacing its pdl_wait) and a barrier: every thread of the block, until
// the counter reaches target.
struct GridWait {
  static constexpr bool kSkipPdlWait = true;
  const unsigned long long* c;
  unsigned long long target;
  __device__ void operator()() const {
    if (threadIdx.x == 0) {
      while (load_relaxed_gpu(c) < target) {
      }
      __threadfence();  // acquire: the other blocks' stores before their arrivals are visible after it
    }
    __syncthreads();
  }
};

// kRouter 0: h (x), ids and weights come from the launches before. 1: block 0's first
// kNormRouterThreads threads run the norm + router (norm_router's sums, as
// quant_exact_router_kernel) and write h, logits, ids and weights; the other blocks wait for
// them at a grid barrier. 2: every block's first kNormRouterThreads threads run it into the
// block's shared memory (block 0 also writes the outputs), with no barrier. Then the exact
// gate/up (exact shape kExactShapes[kGu], fp16 form) of the k pairs into hb, a grid barrier,
// and the exact down + combine (shape kExactShapes[kDn], bf16 form) into out, its first
// weights asked for before that barrier. Both in the plain loop
// (quant_rows_moe_persistent_takes). kSub sub-blocks: 4 (32 warps, 64 registers a thread:
// shape 40's budget) or 2 (16 warps, 128: shape 44's, two row pairs a warp).
template <QuantFormat F, bool kPaired, int kRouter, int kSub, int kGu, int kDn>
__global__ void __launch_bounds__(persist_threads(kSub), 1)
    quant_moe_persistent_kernel(QuantExperts wgu, QuantExperts wdn, GateUpRouter r, const bf16* __restrict__ x,
                                const int32_t* __restrict__ ids, const float* __restrict__ weights, int k, int inter,
                                int H, bf16* __restrict__ hb, float* __restrict__ out, unsigned long long* counter,
                                int warp_major) {
  static_assert(kWarps * 32 == kNormRouterThreads, "one sub-block runs norm_router's block");
  __shared__ PairParts s_gu, s_dn;
  __shared__ int s_xr[kMaxPairs];
  __shared__ ExpertTable s_table;
  __shared__ __align__(16) bf16 s_h[kRouter ? kNormRouterRegsMaxHidden : 8];
  __shared__ float s_logits[kNormRouterWarps];
  __shared__ int32_t s_ids[kNormRouterWarps];
  __shared__ float s_w[kNormRouterWarps];
  const bool table = expert_table_before_wait(wgu, s_table);
  const unsigned long long G = gridDim.x;
  const bool router_here = kRouter == 2 || (kRouter == 1 && blockIdx.x == 0);
  if (kRouter && router_here && threadIdx.x < kNormRouterThreads)
    norm_router_prefetch_l1(r.norm_w, r.gate, H, r.n_experts);
  pdl_wait();
  if constexpr (kRouter) {
    if (router_here && threadIdx.x < kNormRouterThreads)
      norm_router_in_block<false, NamedSync<1, kNormRouterThreads>>(r.x, r.norm_w, r.eps, r.gate, H, r.n_experts, k,
                                                                   r.renormalise != 0, s_h, s_logits, s_ids, s_w,
                                                                   blockIdx.x == 0, r.h, r.logits, r.ids, r.weights);
    if constexpr (kRouter == 1) {
      grid_arrive(counter);
      GridWait{counter, G}();
    } else {
      __syncthreads();
    }
  }
  // The router's outputs: block 0's in global memory (written in this launch), the block's
  // own in shared memory, or the launches' before.
  const bf16* xin = kRouter == 1 ? r.h : kRouter == 2 ? s_h : x;
  const int32_t* idin = kRouter == 1 ? r.ids : kRouter == 2 ? s_ids : ids;
  const float* win = kRouter == 1 ? r.weights : kRouter == 2 ? s_w : weights;
  pair_parts_from_table<kRouter == 1>(wgu, idin, k, false, k, table, s_table, s_gu, s_xr);
  load_pair_parts<kRouter == 1>(wdn, idin, k, s_dn);
  exact_items<F, kPaired, kExactShapes[kGu].cfg, kExactShapes[kGu].rp, false, true, true, kSub, kRouter == 1>(
      wgu, xin, false, k, k, 2 * inter, H, nullptr, inter, hb, warp_major, s_gu, s_xr);
  grid_arrive(counter);
  const unsigned long long last = (kRouter == 1 ? 2 : 1) * G;
  exact_down_items<F, kPaired, kExactShapes[kDn].cfg, kExactShapes[kDn].rp, false, false, true, kSub, true,
                   kRouter == 1>(
      wdn, hb, win, k, k, H, inter, out, 2, s_dn, 0u, nullptr, GridWait{counter, last});
  if (threadIdx.x == 0 && atomicAdd(counter, 1ull) == last + G - 1) atomicExch(counter, 0ull);
  pdl_trigger();
}

// Blocks of a kernel resident on the GPU at once (taken on first use; the GPUs of a run
// are of one kind).
template <auto kKernel>
int resident_blocks() {
  static const int n = [] {
    int dev = 0, sms = 0, per_sm = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kKernel, kWarps * 32, 0));
    return std::max(1, sms * per_sm);
  }();
  return n;
}

template <QuantFormat F, bool kPaired, int kCfg>
void launch_rows(const QuantExperts& w, const bf16* x, bool x_per_pair, const int32_t* ids, int n_pairs, int k, int N,
                 int K, float* out, bf16* out_h, cudaStream_t stream) {
  constexpr auto kernel = quant_rows_kernel<F, kPaired, kCfg>;
  const int gu_inter = out_h ? N / 2 : 0;
  const int64_t items = static_cast<int64_t>(n_pairs) * (out_h ? gu_inter : (N + 1) / 2);
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(items, kWarps), resident_blocks<kernel>()));
  launch_pdl(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kWarps * 32), 0, stream, w, x, x_per_pair ? 1 : 0, ids,
             n_pairs, k, N, K, out, gu_inter, out_h);
}

// The dynamic shared memory an exact kernel may take on the current device (as
// MOEBENCH_GPU_CC sees it): the opt-in limit less room for the kernels' static shared memory.
int dynamic_smem_limit() { return device_info_cached().smem_optin - 4096; }

// The fp16 form of the exact kernels where its staged rows fit in shared memory next to the
// kernel's own (quant_half_form); the bytes to launch it with, or 0 for the bf16 form.
size_t half_smem_bytes(int rows, int K, bool down) {
  if (quant_half_form() < (down ? 2 : 1)) return 0;
  static const int limit = dynamic_smem_limit();
  const size_t bytes = static_cast<size_t>(rows) * static_cast<size_t>(K) * 2;
  return K % 8 == 0 && rows <= kMaxPairs && bytes <= static_cast<size_t>(limit) ? bytes : 0;
}

// The exact kernels' plain loop (ExactGroup kPlain, MOEBENCH_QUANT_PLAIN): rows of `chunks`
// 16-byte chunks whose super-steps fill whole tile batches (a multiple of kExactStride) that
// groups of `depth` batches cover exactly, and int4 without zero points.
bool plain_rows(const QuantExperts& w, int chunks, int depth) {
  if (!quant_plain_loop() || chunks % (4 * kExactStride) != 0) return false;
  if (w.format == QuantFormat::int4 && w.zero) return false;
  return exact_batches(chunks) % depth == 0;
}

// Blocks of kThreads threads of a kernel with smem bytes of dynamic shared memory resident on
// one SM at once, and the SMs in sms (the attribute raised to the device's opt-in limit on
// first use; the last answer cached per thread: a decode step asks with the same bytes every
// layer).
template <auto kKernel, int kThreads = kWarps * 32>
int blocks_per_sm(size_t smem, int& sms) {
  static std::atomic<uint64_t> raised{0};  // a bit per device whose attribute is set
  int cur = 0;
  CUDA_CHECK(cudaGetDevice(&cur));
  const uint64_t bit = uint64_t{1} << (cur & 63);
  if (!(raised.load(std::memory_order_acquire) & bit)) {
    // The opt-in limit less this kernel's own static arrays (the router kernel's exceed
    // dynamic_smem_limit's allowance; the launches ask for far less than either cap).
    allow_dynamic_smem(reinterpret_cast<const void*>(kKernel));
    raised.fetch_or(bit, std::memory_order_acq_rel);
  }
  thread_local size_t last_smem = ~size_t{0};
  thread_local int last_per_sm = 0, last_sms = 0;
  if (smem != last_smem) {
    CUDA_CHECK(cudaDeviceGetAttribute(&last_sms, cudaDevAttrMultiProcessorCount, cur));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&last_per_sm, kKernel, kThreads, smem));
    last_smem = smem;
  }
  sms = last_sms;
  return last_per_sm;
}
// The same, all SMs together (at least 1).
template <auto kKernel>
int resident_blocks_smem(size_t smem) {
  int sms = 0;
  const int per_sm = blocks_per_sm<kKernel>(smem, sms);
  return std::max(1, sms * per_sm);
}

// fn(half constant, plain constant, smem bytes) for a launch of the exact kernels: the fp16
// form where half_smem_bytes gives its bytes, the plain loop (ExactGroup kPlain) where
// plain_rows holds, in the default shapes (40, 44) only.
template <QuantFormat F, int kCfg, int kRP, bool kContig, typename Fn>
void exact_forms(const QuantExperts& w, int rows, int K, bool down, Fn&& fn) {
  const size_t smem = half_smem_bytes(rows, K, down);
  auto with_form = [&](auto plain_c) {
    if (smem) fn(std::true_type{}, plain_c, smem);
    else fn(std::false_type{}, plain_c, size_t{0});
  };
  constexpr bool kPlainShape = !kContig && ((kCfg == 2 && kRP == 1) || (kCfg == 8 && kRP == 2));
  if constexpr (kPlainShape)
    if (plain_rows(w, static_cast<int>(row_bytes_of<F>(K) / 16), cfg_depth(kCfg))) return with_form(std::true_type{});
  with_form(std::false_type{});
}

// The exact GEMV and gate/up's item order (quant_warp_order): 1 warp-major, 0 block-major.
int exact_warp_major(QuantFormat f) {
  const int order = quant_warp_order();
  return order == 2 || (order == 1 && f == QuantFormat::int4) ? 1 : 0;
}

template <QuantFormat F, bool kPaired, int kCfg, int kRP, bool kContig>
void launch_exact(const QuantExperts& w, const bf16* x, bool x_per_pair, const int32_t* ids, int n_pairs, int k, int N,
                  int K, float* out, bf16* out_h, cudaStream_t stream) {
  const int gu_inter = out_h ? N / 2 : 0;
  const int64_t items = static_cast<int64_t>(n_pairs) * ceil_div(out_h ? gu_inter : (N + 1) / 2, kRP);
  exact_forms<F, kCfg, kRP, kContig>(
      w, x_per_pair ? n_pairs : (n_pairs - 1) / k + 1, K, false, [&](auto half_c, auto plain_c, size_t smem) {
        constexpr auto kernel =
            quant_exact_kernel<F, kPaired, kCfg, kRP, kContig, decltype(half_c)::value, decltype(plain_c)::value>;
        const int blocks =
            static_cast<int>(std::min<int64_t>(ceil_div(items, kWarps), resident_blocks_smem<kernel>(smem)));
        launch_pdl(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kWarps * 32), smem, stream, w, x,
                   x_per_pair ? 1 : 0, ids, n_pairs, k, N, K, out, gu_inter, out_h, exact_warp_major(F));
      });
}

// The shapes quant_exact_router_kernel is compiled for: the one-token gate/up defaults (40
// and 44, quant_gemv.h kDefaultQuantExact).
constexpr bool router_shape(int cfg, int rp, bool contig) {
  return !contig && ((cfg == 2 && rp == 1) || (cfg == 8 && rp == 2));
}

template <QuantFormat F, bool kPaired, int kCfg, int kRP>
void launch_exact_router(const QuantExperts& w, const GateUpRouter& r, int k, int N, int K, bf16* out_h,
                         cudaStream_t stream) {
  const int64_t items = static_cast<int64_t>(k) * ceil_div(N / 2, kRP);
  exact_forms<F, kCfg, kRP, false>(w, 1, K, false, [&](auto half_c, auto plain_c, size_t smem) {
    if constexpr (!decltype(half_c)::value) {
      fail_msg(msg("quant_rows_gate_up_router: ", K, " inputs have no fp16 form (MOEBENCH_QUANT_HALF=0?)"));
    } else {
      constexpr auto kernel = quant_exact_router_kernel<F, kPaired, kCfg, kRP, decltype(plain_c)::value>;
      const int blocks =
          static_cast<int>(std::min<int64_t>(ceil_div(items, kWarps), resident_blocks_smem<kernel>(smem)));
      launch_pdl(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kWarps * 32), smem, stream, w, r, k, N, K, out_h,
                 exact_warp_major(F));
    }
  });
}

// The persistent MoE block's grid: one block an SM where one fits (0 where none does).
template <auto kKernel, int kThreads>
int persistent_blocks(size_t smem) {
  int sms = 0;
  return blocks_per_sm<kKernel, kThreads>(smem, sms) >= 1 ? sms : 0;
}

template <QuantFormat F, bool kPaired, int kRouter>
void launch_persistent(const QuantExperts& gu, const QuantExperts& dn, const GateUpRouter& r, const bf16* x,
                       const int32_t* ids, const float* weights, int k, int inter, int H, bf16* hb, float* out,
                       unsigned long long* counter, cudaStream_t stream) {
  auto go = [&](auto sub_c, auto gu_c, auto dn_c) {
    constexpr int kSub = decltype(sub_c)::value;
    constexpr auto kernel =
        quant_moe_persistent_kernel<F, kPaired, kRouter, kSub, decltype(gu_c)::value, decltype(dn_c)::value>;
    const size_t smem = half_smem_bytes(1, H, false);
    const int blocks = persistent_blocks<kernel, persist_threads(kSub)>(smem);
    if (blocks == 0) fail_msg("quant_rows_moe_persistent: a block of the persistent MoE launch does not fit on an SM");
    launch_pdl(kernel, dim3(static_cast<unsigned>(blocks)), dim3(persist_threads(kSub)), smem, stream, gu, dn, r, x,
               ids, weights, k, inter, H, hb, out, counter, exact_warp_major(F));
  };
  // quant_moe_persistent_shapes: int4 in shape 44 (its launches' default for both phases),
  // blocks of 2 x 8 warps; otherwise shape 40, blocks of 4 x 8 warps.
  using S40 = std::integral_constant<int, 0>;
  using S44 = std::integral_constant<int, 4>;
  if constexpr (F == QuantFormat::int4) {
    if (quant_moe_persistent_shapes() == 1) return go(std::integral_constant<int, 2>{}, S44{}, S44{});
  }
  go(std::integral_constant<int, 4>{}, S40{}, S40{});
}

// The down + combine kernels' flags: bit 0 the ids early, bit 1 the late trigger
// (launch_env.h quant_down_late_trigger).
inline int down_flags(bool ids_early) { return (ids_early ? 1 : 0) | (quant_down_late_trigger() ? 2 : 0); }

template <QuantFormat F, bool kPaired, int kK, int kCfg>
void launch_down(const QuantExperts& w, const bf16* h, const int32_t* ids, const float* weights, int n_pairs, int N,
                 int K, float* out, bool ids_early, cudaStream_t stream) {
  constexpr auto kernel = quant_rows_down_combine_kernel<F, kPaired, kK, kCfg>;
  const int64_t items = static_cast<int64_t>(n_pairs / kK) * ((N + 1) / 2);
  const int blocks = static_cast<int>(std::min<int64_t>(items, resident_blocks<kernel>()));
  launch_pdl(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kWarps * 32), 0, stream, w, h, ids, weights, n_pairs, N,
             K, out, down_flags(ids_early));
}

template <QuantFormat F, bool kPaired, int kCfg, int kRP, bool kContig>
void launch_exact_down(const QuantExperts& w, const bf16* h, const int32_t* ids, const float* weights, int n_pairs,
                       int k, int N, int K, float* out, bool ids_early, cudaStream_t stream) {
  const int64_t items = static_cast<int64_t>(n_pairs / k) * ceil_div((N + 1) / 2, kWarps / k * kRP);
  exact_forms<F, kCfg, kRP, kContig>(w, n_pairs, K, true, [&](auto half_c, auto plain_c, size_t smem) {
    constexpr auto kernel = quant_exact_down_combine_kernel<F, kPaired, kCfg, kRP, kContig, decltype(half_c)::value,
                                                            decltype(plain_c)::value>;
    const int blocks = static_cast<int>(std::min<int64_t>(items, resident_blocks_smem<kernel>(smem)));
    launch_pdl(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kWarps * 32), smem, stream, w, h, ids, weights,
               n_pairs, k, N, K, out, down_flags(ids_early));
  });
}

// fn(format constant, paired constant, cfg constant, row pairs constant: 0 for the warp-row
// kernels) for w's format and int4 order and the family and launch shape of variant var.
template <typename Fn>
void for_format(const QuantExperts& w, int var, const char* what, Fn&& fn) {
  if (!is_warp_variant(var))
    fail_msg(msg(what, ": variant ", var, ", expected ", kQuantVariantRows, " .. ", kQuantVariantRows + kRowsCfgs - 1,
                 " or ", kQuantVariantExact, " .. ", kQuantVariantExact + kQuantExactShapes - 1));
  auto with_cfg = [&](auto f_c, auto p_c) {
    auto go = [&](auto cfg_c, auto rp_c, auto contig_c) { fn(f_c, p_c, cfg_c, rp_c, contig_c); };
    using R = std::integral_constant<int, 0>;
    switch (var) {
      case kQuantVariantRows + 0: return go(std::integral_constant<int, 0>{}, R{}, std::false_type{});
      case kQuantVariantRows + 1: return go(std::integral_constant<int, 1>{}, R{}, std::false_type{});
      case kQuantVariantRows + 2: return go(std::integral_constant<int, 2>{}, R{}, std::false_type{});
      case kQuantVariantRows + 3: return go(std::integral_constant<int, 3>{}, R{}, std::false_type{});
      case kQuantVariantRows + 4: return go(std::integral_constant<int, 4>{}, R{}, std::false_type{});
      case kQuantVariantRows + 5: return go(std::integral_constant<int, 5>{}, R{}, std::false_type{});
      case kQuantVariantRows + 6: return go(std::integral_constant<int, 6>{}, R{}, std::false_type{});
#define MB_EXACT_CASE(i)                                                           \
  case kQuantVariantExact + i:                                                     \
    return go(std::integral_constant<int, kExactShapes[i].cfg>{}, std::integral_constant<int, kExactShapes[i].rp>{}, \
              std::bool_constant<kExactShapes[i].contig>{});
      MB_EXACT_CASE(0)
      MB_EXACT_CASE(1)
      MB_EXACT_CASE(2)
      MB_EXACT_CASE(3)
      MB_EXACT_CASE(4)
      MB_EXACT_CASE(5)
#undef MB_EXACT_CASE
      default: break;
    }
  };
  static_assert(kQuantExactShapes == 6, "one case a shape above");
  using FC = std::integral_constant<QuantFormat, QuantFormat::int4>;
  switch (w.format) {
    case QuantFormat::int4:
      if (w.int4_paired) with_cfg(FC{}, std::true_type{});
      else with_cfg(FC{}, std::false_type{});
      break;
    case QuantFormat::int8: with_cfg(std::integral_constant<QuantFormat, QuantFormat::int8>{}, std::false_type{}); break;
    case QuantFormat::fp8: with_cfg(std::integral_constant<QuantFormat, QuantFormat::fp8>{}, std::false_type{}); break;
    default: fail_msg(msg(what, ": format ", quant_format_name(w.format), " is not quantised"));
  }
  CUDA_CHECK_LAUNCH(what);
}
}  // namespace

int quant_half_form() {
  static const int v = env_choice("MOEBENCH_QUANT_HALF", {1, 0, 2}, 1);
  return v;
}

bool quant_plain_loop() {
  static const bool v = env_choice("MOEBENCH_QUANT_PLAIN", {1, 0}, 1) == 1;
  return v;
}

namespace {
EnvSwitch g_persistent_shapes{"MOEBENCH_QUANT_MOE_PERSISTENT_SHAPES", 1};
}

int quant_moe_persistent_shapes() { return g_persistent_shapes.get() ? 1 : 0; }

void set_quant_moe_persistent_shapes(int v) { g_persistent_shapes.force(v); }

int quant_warp_order() {
  static const int v = env_choice("MOEBENCH_QUANT_WARP_ORDER", {1, 0, 2}, 1);
  return v;
}

void quant_rows_gemv(const QuantExperts& w, const bf16* x, bool x_per_pair, const int32_t* ids, int n_pairs, int k,
                     int N, int K, float* out, bf16* out_h, int var, cudaStream_t stream) {
  if (out_h && N % 2 != 0) fail_msg(msg("quant_rows_gemv: the fused gate/up takes 2 inter rows, not ", N));
  for_format(w, var, "quant_rows_gemv", [&](auto f_c, auto p_c, auto c_c, auto rp_c, auto contig_c) {
    constexpr QuantFormat F = decltype(f_c)::value;
    constexpr bool P = decltype(p_c)::value;
    constexpr int C = decltype(c_c)::value, RP = decltype(rp_c)::value;
    if constexpr (RP > 0) launch_exact<F, P, C, RP, decltype(contig_c)::value>(w, x, x_per_pair, ids, n_pairs, k, N, K, out, out_h, stream);
    else launch_rows<F, P, C>(w, x, x_per_pair, ids, n_pairs, k, N, K, out, out_h, stream);
  });
}

bool quant_rows_gate_up_router_takes(int var, const QuantExperts& w, int k, int K, int n_experts) {
  if (!is_exact_variant(var) || (w.format == QuantFormat::int4 && !w.int4_paired)) return false;
  const ExactShape sh = kExactShapes[var - kQuantVariantExact];
  return router_shape(sh.cfg, sh.rp, sh.contig) && norm_router_regs_shape(K, n_experts) && k >= 1 &&
         k <= n_experts && half_smem_bytes(1, K, false) > 0;
}

void quant_rows_gate_up_router(const QuantExperts& w, const GateUpRouter& r, int k, int N, int K, bf16* out_h,
                               int var, cudaStream_t stream) {
  if (!quant_rows_gate_up_router_takes(var, w, k, K, r.n_experts))
    fail_msg(msg("quant_rows_gate_up_router: variant ", var, ", ", quant_format_name(w.format), ", ", K, " inputs, ",
                 r.n_experts, " experts, top-", k, " is not a compiled shape"));
  if (N % 2 != 0) fail_msg(msg("quant_rows_gate_up_router: the fused gate/up takes 2 inter rows, not ", N));
  for_format(w, var, "quant_rows_gate_up_router", [&](auto f_c, auto p_c, auto c_c, auto rp_c, auto contig_c) {
    constexpr QuantFormat F = decltype(f_c)::value;
    constexpr bool P = decltype(p_c)::value;
    constexpr int C = decltype(c_c)::value, RP = decltype(rp_c)::value;
    if constexpr (RP > 0 && router_shape(C, RP, decltype(contig_c)::value) && (F != QuantFormat::int4 || P))
      launch_exact_router<F, P, C, RP>(w, r, k, N, K, out_h, stream);
  });
}

bool quant_rows_moe_persistent_takes(const QuantExperts& gu, const QuantExperts& dn, int k, int inter, int H,
                                     int n_experts, bool router) {
  const QuantFormat f = gu.format;
  if (dn.format != f || (f != QuantFormat::fp8 && f != QuantFormat::int8 && f != QuantFormat::int4)) return false;
  if (f == QuantFormat::int4 && !(gu.int4_paired && dn.int4_paired)) return false;
  if (!quant_rows_down_combine_takes(k) || k > n_experts || inter <= 0 || H <= 0) return false;
  if (quant_half_form() != 1 || half_smem_bytes(1, H, false) == 0) return false;  // gate/up fp16, down bf16
  const int64_t per = f == QuantFormat::int4 ? 2 : 1;  // inputs a byte
  if (H % (16 * per) != 0 || inter % (16 * per) != 0) return false;
  const int depth = cfg_depth(kExactShapes[0].cfg);
  static_assert(cfg_depth(kExactShapes[0].cfg) == cfg_depth(kExactShapes[4].cfg), "every persistent shape's depth");
  if (!plain_rows(gu, static_cast<int>(H / per / 16), depth) || !plain_rows(dn, static_cast<int>(inter / per / 16), depth))
    return false;
  return !router || norm_router_regs_shape(H, n_experts);
}

void quant_rows_moe_persistent(const QuantExperts& gu, const QuantExperts& dn, const GateUpRouter* router,
                               const bf16* x, const int32_t* ids, const float* weights, int k, int inter, int H,
                               bf16* h, float* out, unsigned long long* counter, bool router_every_block,
                               cudaStream_t stream) {
  const int E = router ? router->n_experts : gu.n_experts;
  if (!quant_rows_moe_persistent_takes(gu, dn, k, inter, H, E, router != nullptr))
    fail_msg(msg("quant_rows_moe_persistent: ", quant_format_name(gu.format), " experts of ", inter, " x ", H, ", ", E,
                 " experts, top-", k, router ? " with the router" : "", " is not a compiled shape"));
  if (!counter || !h || !out || (!router && (!x || !ids || !weights)))
    fail_msg("quant_rows_moe_persistent: a buffer or the barrier counter is null");
  const GateUpRouter r = router ? *router : GateUpRouter{};
  auto go = [&](auto f_c, auto p_c) {
    constexpr QuantFormat F = decltype(f_c)::value;
    constexpr bool P = decltype(p_c)::value;
    if (!router) launch_persistent<F, P, 0>(gu, dn, r, x, ids, weights, k, inter, H, h, out, counter, stream);
    else if (router_every_block)
      launch_persistent<F, P, 2>(gu, dn, r, x, ids, weights, k, inter, H, h, out, counter, stream);
    else launch_persistent<F, P, 1>(gu, dn, r, x, ids, weights, k, inter, H, h, out, counter, stream);
  };
  switch (gu.format) {
    case QuantFormat::fp8: go(std::integral_constant<QuantFormat, QuantFormat::fp8>{}, std::false_type{}); break;
    case QuantFormat::int8: go(std::integral_constant<QuantFormat, QuantFormat::int8>{}, std::false_type{}); break;
    default: go(std::integral_constant<QuantFormat, QuantFormat::int4>{}, std::true_type{}); break;
  }
  CUDA_CHECK_LAUNCH("quant_rows_moe_persistent");
}

bool quant_rows_down_combine_takes(int k) { return k == 1 || k == 2 || k == 4 || k == 8; }

void quant_rows_down_combine(const QuantExperts& w, const bf16* h, const int32_t* ids, const float* weights,
                             int n_pairs, int k, int N, int K, float* out, bool ids_early, int var,
                             cudaStream_t stream) {
  if (!quant_rows_down_combine_takes(k))
    fail_msg(msg("quant_rows_down_combine: top-k ", k, ", expected 1, 2, 4 or 8 (the slots split a block's 8 warps)"));
  for_format(w, var, "quant_rows_down_combine", [&](auto f_c, auto p_c, auto c_c, auto rp_c, auto contig_c) {
    constexpr QuantFormat F = decltype(f_c)::value;
    constexpr bool P = decltype(p_c)::value;
    constexpr int C = decltype(c_c)::value, RP = decltype(rp_c)::value;
    if constexpr (RP > 0) {
      launch_exact_down<F, P, C, RP, decltype(contig_c)::value>(w, h, ids, weights, n_pairs, k, N, K, out, ids_early, stream);
    } else {
      switch (k) {
        case 1: return launch_down<F, P, 1, C>(w, h, ids, weights, n_pairs, N, K, out, ids_early, stream);
        case 2: return launch_down<F, P, 2, C>(w, h, ids, weights, n_pairs, N, K, out, ids_early, stream);
        case 4: return launch_down<F, P, 4, C>(w, h, ids, weights, n_pairs, N, K, out, ids_early, stream);
        default: return launch_down<F, P, 8, C>(w, h, ids, weights, n_pairs, N, K, out, ids_early, stream);
      }
    }
  });
}

}  // namespace moebench::cuda
