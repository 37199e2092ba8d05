// quant_gemv.cu: see quant_gemv.h. The dequantising GEMV on the tensor cores.
//
// A block owns a tile of 16 weight rows of one used expert (grid row y: the y-th
// distinct expert of ids, gemv_core.cuh used_expert) and the (up to 8 per pass) pairs
// that chose it; its kWarps warps split the row length (split-K inside the
// block) and add their partial sums in warp order through shared memory, so the result
// does not depend on timing. Per "super-step" of a warp, lane (gr, t) streams the
// 16-byte chunk t of the super-step's 4 chunks for rows gr and gr + 8, kDepth
// super-steps deep (kDepth x 32 bytes in flight per lane before the first use: 128
// bytes for the quantised formats, 256 for bf16, whose codes need no registers to
// decode); at least 16 warps fit on an SM (at most 128 registers a thread).
// Dequantising happens in registers and is exact: each stored code becomes the bf16
// number it stands for before scaling (int8 q, int4 q - zero, fp8 e4m3 value: all exact
// in bf16), mma.m16n8k16 multiplies 16 rows by 8 pairs' bf16 activations with fp32
// sums (engine/cuda/gemv_core.cuh), and the scale of the super-step's row / block /
// group multiplies the fp32 partial sum: out = sum over scale groups of s * sum (code x).
// A super-step spans 4 chunks = 64 inputs (int8, fp8) or 128 (int4): inside one
// fp8 128x128 block and exactly one int4 group, so one scale per row and super-step.
// Lanes whose chunk lies past the row end feed zero activations (their codes, of a
// valid row, are finite), lanes of an unused pair column feed zero activations.
// The same tile with bf16 weights as their own codes (no scale) is gemv_tc (ops.cuh): a
// plain GEMV of n <= 8 activation rows, the rows being the pairs of one "expert".
#include <cuda_fp8.h>

#include <algorithm>
#include <type_traits>

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/pdl.cuh"
#include "engine/cuda/quant_codes.cuh"
#include "engine/cuda/quant_gemv.h"
#include "engine/cuda/quant_gemv_rows.h"

namespace moebench::cuda {

namespace {
constexpr int kTileRows = 16;  // mma M: weight rows per block
constexpr int kTileCols = 8;   // mma N: pairs per pass over the weights
constexpr int kMaxPairs = detail::kMaxSlotPairs;  // pairs per launch
constexpr int kPipeDepth = 2;  // the pipelined kernel's default batch: two in registers

using namespace qcodes;  // Codes and the bf16 word helpers (quant_codes.cuh)

// One warp's share of a tile pass: kDepth super-steps of weight chunks for the rows
// ra / rb of kRT tiles (lane t: chunk 4 ss + t), and the raw scale words of those rows and
// super-steps. load() issues the weight loads and uses none of them (a warp stalls only
// where a loaded register is first used, so the loads of one batch are all in flight
// together); dot() dequantises, multiplies and adds into tot. kEarlyScales: the scale
// words are loaded in load() with the weights (the pipelined kernel); otherwise in dot()
// where each super-step needs them (the plain kernel, as measured at its best).
template <QuantFormat F, int kDepth, int kRT, bool kEarlyScales, bool kPaired = false>
struct Batch {
  using C = Codes<F, kPaired>;
  uint4 wa[kRT][kDepth], wb[kRT][kDepth];
  typename C::Raw sa[kRT][kDepth], sb[kRT][kDepth];
  // !kEarlyScales: what dot() needs to load them.
  const uint8_t *scale_ = nullptr, *zero_ = nullptr;
  int ra_[kRT], rb_[kRT], K_ = 0;

  __device__ void load(const uint8_t* const (&qa)[kRT], const uint8_t* const (&qb)[kRT], const int (&ra)[kRT],
                       const int (&rb)[kRT], const uint8_t* scale, const uint8_t* zero, int ss0, int chunks, int steps,
                       int t, int K) {
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
      const int c = (ss0 + u) * 4 + t;
      const int ss = min(ss0 + u, steps - 1);  // past the row end: any valid group (its sum is zero)
#pragma unroll
      for (int tt = 0; tt < kRT; ++tt) {
        if (c < chunks) {
          wa[tt][u] = load16_stream(qa[tt] + 16 * static_cast<int64_t>(c));
          wb[tt][u] = load16_stream(qb[tt] + 16 * static_cast<int64_t>(c));
        } else {
          wa[tt][u] = wb[tt][u] = make_uint4(0, 0, 0, 0);
        }
        if constexpr (kEarlyScales) {
          sa[tt][u] = C::raw(scale, zero, ra[tt], ss, K);
          sb[tt][u] = C::raw(scale, zero, rb[tt], ss, K);
        }
      }
    }
    if constexpr (!kEarlyScales) {
      scale_ = scale;
      zero_ = zero;
      K_ = K;
#pragma unroll
      for (int tt = 0; tt < kRT; ++tt) {
        ra_[tt] = ra[tt];
        rb_[tt] = rb[tt];
      }
    }
  }

  // What dot() needs besides the weights when they come from elsewhere (the staged
  // ring): the rows' scale words (early scales: loaded now, as load() would) or where
  // dot() loads them.
  __device__ void set_rows(const int (&ra)[kRT], const int (&rb)[kRT], const uint8_t* scale, const uint8_t* zero,
                           int ss0, int steps, int K) {
    if constexpr (kEarlyScales) {
#pragma unroll
      for (int u = 0; u < kDepth; ++u) {
        const int ss = min(ss0 + u, steps - 1);
#pragma unroll
        for (int tt = 0; tt < kRT; ++tt) {
          sa[tt][u] = C::raw(scale, zero, ra[tt], ss, K);
          sb[tt][u] = C::raw(scale, zero, rb[tt], ss, K);
        }
      }
    } else {
      scale_ = scale;
      zero_ = zero;
      K_ = K;
#pragma unroll
      for (int tt = 0; tt < kRT; ++tt) {
        ra_[tt] = ra[tt];
        rb_[tt] = rb[tt];
      }
    }
  }

  // x_row: the pass's activation row of this lane's B column (has_x: a used column).
  __device__ void dot(float (&tot)[kRT][4], const bf16* x_row, bool has_x, int ss0, int chunks, int steps,
                      int t) const {
    constexpr int V = C::kValues;
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
      const int ss = ss0 + u;
      if (ss >= steps) break;  // warp-uniform
      const int c = ss * 4 + t;
      uint32_t xw[V / 2];
#pragma unroll
      for (int j = 0; j < V / 8; ++j) {
        uint4 v = make_uint4(0, 0, 0, 0);
        if (has_x && c < chunks) v = *reinterpret_cast<const uint4*>(x_row + static_cast<int64_t>(c) * V + 8 * j);
        xw[4 * j] = v.x;
        xw[4 * j + 1] = v.y;
        xw[4 * j + 2] = v.z;
        xw[4 * j + 3] = v.w;
      }
#pragma unroll
      for (int tt = 0; tt < kRT; ++tt) {
        const typename C::Row pa = C::row(kEarlyScales ? sa[tt][u] : C::raw(scale_, zero_, ra_[tt], ss, K_)),
                              pb = C::row(kEarlyScales ? sb[tt][u] : C::raw(scale_, zero_, rb_[tt], ss, K_));
        float d[4] = {0, 0, 0, 0};
        float(&acc)[4] = C::kScaled ? d : tot[tt];
#pragma unroll
        for (int s = 0; s < V / 4; ++s) {
          uint32_t a0, a1, a2, a3, b0, b1;
          C::a_regs(wa[tt][u], s, pa, a0, a2);
          C::a_regs(wb[tt][u], s, pb, a1, a3);
          C::b_regs(xw, s, b0, b1);
          detail::mma_bf16_16x8x16(acc, a0, a1, a2, a3, b0, b1);
        }
        if constexpr (C::kScaled) {
          tot[tt][0] = fmaf(pa.s, d[0], tot[tt][0]);
          tot[tt][1] = fmaf(pa.s, d[1], tot[tt][1]);
          tot[tt][2] = fmaf(pb.s, d[2], tot[tt][2]);
          tot[tt][3] = fmaf(pb.s, d[3], tot[tt][3]);
        }
      }
    }
  }

  // dot() with the batch's super-steps side by side (quantised formats): mma step s of
  // kChains super-steps, then step s + 1, so kChains independent mma chains advance
  // together where dot() runs one chain of kValues / 4 dependent mma at a time (int8: all
  // 4 super-steps of a batch; int4 and fp8: 2 at a time, 4 spill registers); the scale
  // words of those super-steps are asked for first, the activations one 16-byte word (two
  // mma steps) at a time. Each super-step's chain (from zero, steps in order) and the
  // additions into tot (super-steps in order) are dot()'s: the same sums, bit for bit.
  __device__ void dot_interleaved(float (&tot)[kRT][4], const bf16* x_row, bool has_x, int ss0, int chunks,
                                  int steps, int t) const {
    static_assert(C::kScaled, "the interleaved dot is for the scaled (quantised) formats");
    constexpr int kChains = F == QuantFormat::int8 ? kDepth : kDepth >= 2 ? 2 : 1;
    static_assert(kDepth % kChains == 0, "super-steps in whole groups");
    constexpr int V = C::kValues;
#pragma unroll
    for (int tt = 0; tt < kRT; ++tt)
#pragma unroll
      for (int u0 = 0; u0 < kDepth; u0 += kChains) {
        if (ss0 + u0 >= steps) break;  // warp-uniform
        typename C::Row pa[kChains], pb[kChains];
        float d[kChains][4];
#pragma unroll
        for (int i = 0; i < kChains; ++i) {
          const int ss = min(ss0 + u0 + i, steps - 1);  // past the row end: any valid group (never added)
          pa[i] = C::row(kEarlyScales ? sa[tt][u0 + i] : C::raw(scale_, zero_, ra_[tt], ss, K_));
          pb[i] = C::row(kEarlyScales ? sb[tt][u0 + i] : C::raw(scale_, zero_, rb_[tt], ss, K_));
#pragma unroll
          for (int q = 0; q < 4; ++q) d[i][q] = 0;
        }
#pragma unroll
        for (int j = 0; j < V / 8; ++j) {  // activation word j of the chunk: mma steps 2j and 2j + 1
          uint32_t xw[kChains][V / 2];
#pragma unroll
          for (int i = 0; i < kChains; ++i) {
            const int c = (ss0 + u0 + i) * 4 + t;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (has_x && c < chunks && ss0 + u0 + i < steps)
              v = *reinterpret_cast<const uint4*>(x_row + static_cast<int64_t>(c) * V + 8 * j);
            xw[i][4 * j] = v.x;
            xw[i][4 * j + 1] = v.y;
            xw[i][4 * j + 2] = v.z;
            xw[i][4 * j + 3] = v.w;
          }
#pragma unroll
          for (int s = 2 * j; s < 2 * j + 2; ++s)
#pragma unroll
            for (int i = 0; i < kChains; ++i) {
              if (ss0 + u0 + i >= steps) continue;  // warp-uniform
              uint32_t a0, a1, a2, a3, b0, b1;
              C::a_regs(wa[tt][u0 + i], s, pa[i], a0, a2);
              C::a_regs(wb[tt][u0 + i], s, pb[i], a1, a3);
              C::b_regs(xw[i], s, b0, b1);
              detail::mma_bf16_16x8x16(d[i], a0, a1, a2, a3, b0, b1);
            }
        }
#pragma unroll
        for (int i = 0; i < kChains; ++i) {
          if (ss0 + u0 + i >= steps) break;  // warp-uniform
          tot[tt][0] = fmaf(pa[i].s, d[i][0], tot[tt][0]);
          tot[tt][1] = fmaf(pa[i].s, d[i][1], tot[tt][1]);
          tot[tt][2] = fmaf(pb[i].s, d[i][2], tot[tt][2]);
          tot[tt][3] = fmaf(pb[i].s, d[i][3], tot[tt][3]);
        }
      }
  }
};

// Inner-loop variants of the plain and the down/combine kernels (QuantGemvShape::var, the
// model's MOEBENCH_QUANT_VARIANT), bits of one number; none changes a sum's bits:
// kVarEarlyScales: a batch's scale words are loaded with its weights (before any is used);
// kVarInterleave: Batch::dot_interleaved (independent mma chains side by side);
// kVarDoubleBuffer: two batches in registers, the next one's loads issued before the
// current one's products (warp_tile_sums); at least 12 warps an SM instead of 16 (room
// for the second batch's registers).
// kVarStaged: the weights go through a ring of batches in shared memory (cp.async), a
// warp's next kRing - 1 batches in flight while it computes one, across the ends of
// tiles (the plain kernel's blocks then stay resident and take several tiles each) and
// of experts (down/combine); the batches, their super-steps and the order of the sums
// are the plain loop's (Staged below). Compiled as 8, 8 | 2 and 8 | 3.
// kVarPaired: int4 codes in the paired word order (QuantExperts::int4_paired; not a
// choice of the loop but of the data, set from the weights), compiled with 0 and 8.
constexpr int kVarEarlyScales = 1, kVarInterleave = 2, kVarDoubleBuffer = 4, kVarStaged = 8, kVarPaired = 16;
constexpr bool variant_compiled(int var) {
  return (var >= 0 && var < 8) || var == 8 || var == 10 || var == 11 || is_warp_variant(var);
}
// Warps an SM the plain and down/combine kernels are compiled to fit (launch bounds).
constexpr int resident_warps(int var) { return (var & kVarDoubleBuffer) != 0 ? 12 : 16; }

// The block's start, shared by both kernels: its expert (grid row y: the y-th distinct
// expert of ids; ids null: the one matrix `single`) and the pairs that chose it, into
// s_pair / *s_cnt. -1: no expert for this grid row (the whole block returns).
__device__ __forceinline__ int block_expert(const int32_t* ids, int n_pairs, int* s_ids, int* s_pair, int* s_cnt) {
  const int e = ids ? detail::used_expert(ids, n_pairs, blockIdx.y, s_ids) : 0;
  if (e < 0) return -1;
  if (threadIdx.x == 0) {
    int cnt = 0;
    for (int p = 0; p < n_pairs; ++p)
      if (!ids || s_ids[p] == e) s_pair[cnt++] = p;
    *s_cnt = cnt;
  }
  __syncthreads();
  return e;
}

// Rows of kRT tiles from row0 (16 rows, tile_stride apart): lane gr's rows gr and gr + 8
// of each, clamped to N - 1 (rows past N are read, never written), and their starts.
template <int kRT>
__device__ __forceinline__ void tile_rows(const uint8_t* q, int64_t row_bytes, int row0, int tile_stride, int gr,
                                          int N, int (&ra)[kRT], int (&rb)[kRT], const uint8_t* (&qa)[kRT],
                                          const uint8_t* (&qb)[kRT]) {
#pragma unroll
  for (int tt = 0; tt < kRT; ++tt) {
    ra[tt] = min(row0 + tile_stride * tt + gr, N - 1);
    rb[tt] = min(row0 + tile_stride * tt + gr + 8, N - 1);
    qa[tt] = q + ra[tt] * row_bytes;
    qb[tt] = q + rb[tt] * row_bytes;
  }
}

// The warps' partial sums of a tile pass (s_part), added in warp order by warp 0 and
// written: out[pair, row] (accumulate: +=).
template <int kWarps, int kRT>
__device__ __forceinline__ void write_tile(const float (*s_part)[32][4 * kRT], const int* s_pair, int p0, int m,
                                           int row0, int tile_stride, int N, int lane, float* out, int accumulate) {
  const int gr = lane >> 2, t = lane & 3;
#pragma unroll
  for (int tt = 0; tt < kRT; ++tt)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v = s_part[0][lane][4 * tt + i];
#pragma unroll
      for (int wi = 1; wi < kWarps; ++wi) v += s_part[wi][lane][4 * tt + i];
      const int col = 2 * t + (i & 1), row = row0 + tile_stride * tt + gr + (i >= 2 ? 8 : 0);
      if (col < m && row < N) {
        float* o = out + static_cast<int64_t>(s_pair[p0 + col]) * N + row;
        *o = accumulate ? *o + v : v;
      }
    }
}

__device__ __forceinline__ int64_t quant_row_bytes(QuantFormat F, int K) {
  return F == QuantFormat::int4 ? K / 2 : F == QuantFormat::bf16 ? 2 * static_cast<int64_t>(K) : K;
}

// L2 prefetch of the plain kernel's weights (pf > 0): a "pass" is one batch of every
// warp of the block, kWarps x kDepth super-steps of 64 bytes of every row of the tile;
// the block asks L2 for the passes pf ahead of the one its warps load into registers
// (the first pf at the start), one bulk request per row and pass. The register loads
// then find their lines in L2 or on the way, so the bytes in flight are not bounded by
// the registers that hold a batch. Nothing is written: the sums do not change.
// Tile position i (0 .. 16 kRT - 1) -> matrix row, or -1 past the rows: kRT tiles of 16
// rows from row0, or (gate/up fused, gu_inter > 0) for tile tt = i / 16 and j = i % 16
// rows row0 + 8 tt + j of w1 for j < 8 and inter + row0 + 8 tt + j - 8 of w3.
__device__ __forceinline__ int tile_pos_row(int i, int row0, int N, int gu_inter) {
  if (gu_inter > 0) {
    const int j = i & 15, r = row0 + 8 * (i >> 4) + (j & 7);
    return r < gu_inter ? r + (j >= 8 ? gu_inter : 0) : -1;
  }
  const int r = row0 + i;
  return r < N ? r : -1;
}

template <int kRT>
__device__ __forceinline__ void prefetch_pass(const uint8_t* q, int64_t row_bytes, int pass_bytes, int pass, int row0,
                                              int N, int gu_inter, int lane) {
  if (lane >= 16 * kRT) return;
  const int r = tile_pos_row(lane, row0, N, gu_inter);
  const int64_t begin = static_cast<int64_t>(pass) * pass_bytes;
  if (r < 0 || begin >= row_bytes) return;
  const int64_t len = min(static_cast<int64_t>(pass_bytes), row_bytes - begin);
  l2_prefetch_bulk(q + r * row_bytes + begin, static_cast<unsigned>(len));
}

// [begin, end) bytes of a scale part, widened to 16-byte boundaries (parts start on one).
__device__ __forceinline__ void prefetch_bytes(const uint8_t* base, int64_t begin, int64_t end) {
  begin &= ~int64_t{15};
  end = (end + 15) & ~int64_t{15};
  if (end > begin) l2_prefetch_bulk(base + begin, static_cast<unsigned>(end - begin));
}

// The scales (and zero points) of rows [r0, r1) of a matrix of K inputs.
template <QuantFormat F>
__device__ __forceinline__ void prefetch_scales(const uint8_t* scale, const uint8_t* zero, int r0, int r1, int K) {
  if (r1 <= r0) return;
  if constexpr (F == QuantFormat::int4) {
    const int64_t groups = (K + static_cast<int>(kInt4Group) - 1) / static_cast<int>(kInt4Group);
    prefetch_bytes(scale, r0 * groups * 2, r1 * groups * 2);
    if (zero) prefetch_bytes(zero, r0 * groups, r1 * groups);
  } else if constexpr (F == QuantFormat::int8) {
    prefetch_bytes(scale, int64_t{4} * r0, int64_t{4} * r1);
  } else if constexpr (F == QuantFormat::fp8) {
    const int64_t cb = (K + static_cast<int>(kFp8Block) - 1) / static_cast<int>(kFp8Block);
    const int64_t b0 = r0 / static_cast<int>(kFp8Block), b1 = (r1 - 1) / static_cast<int>(kFp8Block) + 1;
    prefetch_bytes(scale, b0 * cb * 4, b1 * cb * 4);
  }
}

// The tile's scale rows (lane 0 of the calling warp): one range, or w1's and w3's.
template <QuantFormat F, int kRT>
__device__ __forceinline__ void prefetch_tile_scales(const uint8_t* scale, const uint8_t* zero, int row0, int N,
                                                     int gu_inter, int K, int lane) {
  if constexpr (F == QuantFormat::bf16) return;
  if (lane != 0 || !scale) return;
  if (gu_inter > 0) {
    const int r1 = min(row0 + 8 * kRT, gu_inter);
    prefetch_scales<F>(scale, zero, row0, r1, K);
    prefetch_scales<F>(scale, zero, gu_inter + row0, gu_inter + r1, K);
  } else {
    prefetch_scales<F>(scale, zero, row0, min(row0 + 16 * kRT, N), K);
  }
}

// One warp's sums over a tile for the pairs p0 .. p0 + 7 (the plain kernel's loop, also
// the down/combine kernel's): warp `warp` of kWarps takes the super-steps warp * kDepth
// + i * kWarps * kDepth, kDepth at a time; with pf > 0 (first: the block's first pass
// over these weights) the warp whose turn it is asks L2 for the pass pf ahead.
template <QuantFormat F, int kWarps, int kDepth, int kRT, int kVar = 0>
__device__ __forceinline__ void warp_tile_sums(float (&tot)[kRT][4], const uint8_t* const (&qa)[kRT],
                                               const uint8_t* const (&qb)[kRT], const int (&ra)[kRT],
                                               const int (&rb)[kRT], const uint8_t* q, const uint8_t* scale,
                                               const uint8_t* zero, const bf16* xr, bool has_x, int warp, int lane,
                                               int row0, int N, int gu_inter, int K, int pf, bool first) {
  const int t = lane & 3;
  const int64_t row_bytes = quant_row_bytes(F, K);
  const int chunks = static_cast<int>(row_bytes / 16);
  const int steps = (chunks + 3) / 4;  // super-steps per row
  constexpr int kPassBytes = kWarps * kDepth * 64;
#pragma unroll
  for (int tt = 0; tt < kRT; ++tt)
#pragma unroll
    for (int i = 0; i < 4; ++i) tot[tt][i] = 0;
  using B = Batch<F, kDepth, kRT, (kVar & kVarEarlyScales) != 0, (kVar & kVarPaired) != 0>;
  auto prefetch = [&](int pass) {
    if (first && pf > 0 && (pass + pf) % kWarps == warp)
      prefetch_pass<kRT>(q, row_bytes, kPassBytes, pass + pf, row0, N, gu_inter, lane);
  };
  auto dot = [&](const B& b, int ss0) {
    if constexpr ((kVar & kVarInterleave) != 0) b.dot_interleaved(tot, xr, has_x, ss0, chunks, steps, t);
    else b.dot(tot, xr, has_x, ss0, chunks, steps, t);
  };
  constexpr int kStride = kWarps * kDepth;  // super-steps from one pass of a warp to its next
  if constexpr ((kVar & kVarDoubleBuffer) != 0) {
    // Two batches in registers: the next pass's loads are issued before this pass's
    // products, so a warp has weights in flight while it computes. The passes' products
    // and their order are the plain loop's.
    B b0, b1;
    int ss0 = warp * kDepth, pass = 0;
    if (ss0 < steps) b0.load(qa, qb, ra, rb, scale, zero, ss0, chunks, steps, t, K);
    for (; ss0 < steps; ss0 += 2 * kStride, pass += 2) {
      prefetch(pass);
      if (ss0 + kStride < steps) b1.load(qa, qb, ra, rb, scale, zero, ss0 + kStride, chunks, steps, t, K);
      dot(b0, ss0);
      if (ss0 + kStride >= steps) break;
      prefetch(pass + 1);
      if (ss0 + 2 * kStride < steps) b0.load(qa, qb, ra, rb, scale, zero, ss0 + 2 * kStride, chunks, steps, t, K);
      dot(b1, ss0 + kStride);
    }
  } else {
    int pass = 0;
    for (int ss0 = warp * kDepth; ss0 < steps; ss0 += kStride, ++pass) {
      prefetch(pass);
      B b;
      b.load(qa, qb, ra, rb, scale, zero, ss0, chunks, steps, t, K);
      dot(b, ss0);
    }
  }
}

// The staged variant's copies (kVarStaged): cp.async moves 16 bytes from global to
// shared memory without holding a register (L2 only, .cg); src_ok false zero-fills.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool src_ok) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(src_ok ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

// Batches a warp's ring holds (3; 2 for blocks of 8 or 16 warps, so that two blocks of
// the down/combine's 8 warps fit an SM beside their static shared memory), and
// the ring's shared bytes for a block of `warps` warps at depth `depth`: per warp and
// slot, depth super-steps x 2 rows x 32 lanes x 16 bytes, lanes adjacent (no bank
// conflicts).
constexpr int ring_slots(int warps) { return warps >= 8 ? 2 : 3; }
constexpr size_t ring_bytes(int warps, int depth) {
  return static_cast<size_t>(warps) * ring_slots(warps) * depth * 2 * 32 * 16;
}

// One item of a warp's staged walk: one batch (kDepth super-steps from ss0) of the rows
// ra / rb of the matrix q (scale, zero: its scale parts).
struct StagedItem {
  const uint8_t *q = nullptr, *scale = nullptr, *zero = nullptr;
  int ra = 0, rb = 0, ss0 = 0;
};

// A warp's ring of kR batches in shared memory (ring: the warp's part) over n_items items:
// prime() issues the copies of the first kR; walk() then, for each item in turn, waits
// for its copies, hands the batch to use(j, batch, item) and issues the copies of item
// j + kR into the slot it leaves, so kR - 1 batches are in flight while one is used.
// item(j) names item j. The batch, its super-steps and scale words are those
// Batch::load gives the plain loop: the same sums.
template <QuantFormat F, int kDepth, int kR, bool kEarly, bool kPaired>
struct StagedRing {
  using B = Batch<F, kDepth, 1, kEarly, kPaired>;
  uint4* ring;
  int n_items, lane, chunks, steps, K;
  int64_t row_bytes;

  __device__ uint4* slot(int s, int r, int u) const { return ring + ((s * 2 + r) * kDepth + u) * 32 + lane; }
  template <typename Item>
  __device__ void issue(int j, Item&& item) const {
    if (j < n_items) {
      const StagedItem it = item(j);
      const uint8_t* qa = it.q + it.ra * row_bytes;
      const uint8_t* qb = it.q + it.rb * row_bytes;
      const int t = lane & 3;
#pragma unroll
      for (int u = 0; u < kDepth; ++u) {
        const int c = (it.ss0 + u) * 4 + t;
        const bool ok = c < chunks;
        const int64_t off = ok ? 16 * static_cast<int64_t>(c) : 0;
        cp_async16(slot(j % kR, 0, u), qa + off, ok);
        cp_async16(slot(j % kR, 1, u), qb + off, ok);
      }
    }
    cp_async_commit();  // one group per item (empty past the end): wait_group counts items
  }
  template <typename Item>
  __device__ void prime(Item&& item) const {
#pragma unroll
    for (int j = 0; j < kR; ++j) issue(j, item);
  }
  template <typename Item, typename Use>
  __device__ void walk(Item&& item, Use&& use) const {
    for (int i = 0; i < n_items; ++i) {
      cp_async_wait<kR - 1>();  // item i's group is complete
      const StagedItem it = item(i);
      B b;
#pragma unroll
      for (int u = 0; u < kDepth; ++u) {
        b.wa[0][u] = *slot(i % kR, 0, u);
        b.wb[0][u] = *slot(i % kR, 1, u);
      }
      const int ra[1] = {it.ra}, rb[1] = {it.rb};
      b.set_rows(ra, rb, it.scale, it.zero, it.ss0, steps, K);
      use(i, b, it);
      issue(i + kR, item);  // into the slot just read (its values are used above)
    }
    cp_async_wait<0>();
  }
};

// The ring of warp `warp` (of the block) over n_items items, kR batches, the variant's
// loop; and the batches a warp takes of each tile (every warp at least one where the
// staged loop runs: steps >= kWarps x kDepth).
template <QuantFormat F, int kDepth, int kR, int kVar>
__device__ __forceinline__ StagedRing<F, kDepth, kR, (kVar & kVarEarlyScales) != 0, (kVar & kVarPaired) != 0>
staged_ring(uint4* ring_all, int warp, int n_items, int lane, int chunks, int steps, int K, int64_t row_bytes) {
  return {ring_all + warp * kR * kDepth * 2 * 32, n_items, lane, chunks, steps, K, row_bytes};
}
template <int kWarps, int kDepth>
__device__ __forceinline__ int staged_batches(int steps, int warp) {
  return (steps - warp * kDepth + kWarps * kDepth - 1) / (kWarps * kDepth);
}

// The batch's products into tot, by the variant's loop.
template <int kVar, typename B>
__device__ __forceinline__ void staged_dot(const B& b, float (&tot)[1][4], const bf16* xr, bool has_x, int ss0,
                                           int chunks, int steps, int t) {
  if constexpr ((kVar & kVarInterleave) != 0) b.dot_interleaved(tot, xr, has_x, ss0, chunks, steps, t);
  else b.dot(tot, xr, has_x, ss0, chunks, steps, t);
}

// The first pf passes of a tile and its scales, spread over the block's (or group's) warps.
template <QuantFormat F, int kWarps, int kDepth, int kRT>
__device__ __forceinline__ void prefetch_tile_start(const uint8_t* q, const uint8_t* scale, const uint8_t* zero,
                                                    int warp, int lane, int row0, int N, int gu_inter, int K, int pf) {
  const int64_t row_bytes = quant_row_bytes(F, K);
  for (int pass = warp; pass < pf; pass += kWarps)
    prefetch_pass<kRT>(q, row_bytes, kWarps * kDepth * 64, pass, row0, N, gu_inter, lane);
  if (warp == kWarps - 1) prefetch_tile_scales<F, kRT>(scale, zero, row0, N, gu_inter, K, lane);
}

// The end of a tile pass of the plain kernel: the warps' sums (tot) through s_part,
// added in warp order by warp 0 and written (out, or h = silu(g) * u with the fused
// gate/up); s_part is free again when it returns.
template <int kWarps, int kRT>
__device__ __forceinline__ void tile_epilogue(float (*s_part)[32][4 * kRT], const float (&tot)[kRT][4], int warp,
                                              int lane, const int* s_pair, int p0, int m, int row0, int N,
                                              int gu_inter, float* out, bf16* out_h, int accumulate) {
  const int gr = lane >> 2, t = lane & 3;
#pragma unroll
  for (int tt = 0; tt < kRT; ++tt)
#pragma unroll
    for (int i = 0; i < 4; ++i) s_part[warp][lane][4 * tt + i] = tot[tt][i];
  __syncthreads();
  if (warp == 0) {
    if (gu_inter > 0) {
#pragma unroll
      for (int tt = 0; tt < kRT; ++tt) {  // tile tt: rows row0 + 8 tt .. + 7 of w1 and of w3
        float v[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          v[i] = s_part[0][lane][4 * tt + i];
#pragma unroll
          for (int wi = 1; wi < kWarps; ++wi) v[i] += s_part[wi][lane][4 * tt + i];
        }
        const int r = row0 + 8 * tt + gr;  // g in v[0], v[1] (pairs 2t, 2t + 1), u in v[2], v[3]
#pragma unroll
        for (int c = 0; c < 2; ++c)
          if (2 * t + c < m && r < gu_inter)
            out_h[static_cast<int64_t>(s_pair[p0 + 2 * t + c]) * gu_inter + r] =
                __float2bfloat16_rn(detail::silu(v[c]) * v[2 + c]);
      }
    } else {
      write_tile<kWarps, kRT>(s_part, s_pair, p0, m, row0, kTileRows, N, lane, out, accumulate);
    }
  }
  __syncthreads();  // s_part is reused by the next pass
}

// ids null: every pair belongs to one expert, whose weights are `single` (gemv_tc,
// quant_gemv) with the scales `single_scale` (symmetric).
// accumulate: out += the result instead of out = it.
// gu_inter > 0 (x per token): gate/up fused with the SwiGLU product. The matrix is [w1;
// w3] (N = 2 gu_inter rows), a block's tile tt (of kRT) holds rows r0 .. r0 + 7 of w1 (tile
// rows 0..7) and the same rows of w3 (tile rows 8..15), r0 = 8 (kRT blockIdx.x + tt), so a lane
// holds g and u of one row and writes h[pair, r] = bf16(silu(g) * u) to out_h: each row's
// sums are those of the unfused kernel over 2 gu_inter rows (the same warps, super-steps
// and order; a row's mma result does not depend on the other rows of its tile).
// pf: L2 prefetch window in passes (0: none). seq: tiles a block takes in turn (blockIdx.x
// seq + i; with pf, each tile's first passes asked for as the one before starts), one
// start per seq tiles. Launched with launch_pdl: everything it reads that an earlier
// kernel writes comes after pdl_wait().
// At least 16 / kRT warps per SM (two tiles a block: twice the registers for loads).
template <QuantFormat F, int kWarps, int kDepth = Codes<F>::kDepth, int kRT = 1, int kVar = 0>
__global__ void __launch_bounds__(kWarps * 32,
                                  resident_warps(kVar) / kWarps / kRT > 0 ? resident_warps(kVar) / kWarps / kRT : 1)
    quant_moe_gemv_kernel(QuantExperts w, const uint8_t* __restrict__ single, const uint8_t* __restrict__ single_scale,
                          const bf16* __restrict__ x,
                          int x_per_pair, const int32_t* __restrict__ ids, int n_pairs, int k, int N, int K,
                          float* __restrict__ out, int accumulate, int pf, int gu_inter, bf16* __restrict__ out_h,
                          int seq) {
  using C = Codes<F>;
  __shared__ int s_ids[kMaxPairs], s_pair[kMaxPairs], s_cnt;
  __shared__ float s_part[kWarps][32][4 * kRT];
  pdl_wait();  // ids (the router's) and x come from the kernels before
  pdl_trigger();
  const int e = block_expert(ids, n_pairs, s_ids, s_pair, &s_cnt);
  if (e < 0) return;  // the whole block: fewer experts used than grid rows
  const int cnt = s_cnt;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, t = lane & 3;
  // kRT tiles of 16 rows, sharing the activations' loads; gate/up fused: 8 rows of w1 and w3
  const int tile_rows_n = gu_inter > 0 ? 8 * kRT : kTileRows * kRT, row_end = gu_inter > 0 ? gu_inter : N;
  const int64_t row_bytes = quant_row_bytes(F, K);
  const uint8_t* q = single ? single : w.q[e];
  const uint8_t* scale = !C::kScaled ? nullptr : single ? single_scale : w.scale[e];
  const uint8_t* zero = C::kScaled && !single && w.zero ? w.zero[e] : nullptr;
  if constexpr ((kVar & kVarStaged) != 0 && kRT == 1) {
    // Staged: the block's seq tiles through each warp's ring (one pass of pairs, every
    // warp at least one batch a tile; else the plain loop below).
    constexpr int kStride = kWarps * kDepth, kR = ring_slots(kWarps);
    const int chunks = static_cast<int>(row_bytes / 16), steps = (chunks + 3) / 4;
    if (cnt <= kTileCols && steps >= kStride) {  // block-uniform
      extern __shared__ uint4 ring_all[];
      int n_tiles = 0;
      while (n_tiles < seq && (static_cast<int>(blockIdx.x) * seq + n_tiles) * tile_rows_n < row_end) ++n_tiles;
      const int np = staged_batches<kWarps, kDepth>(steps, warp);  // batches a tile (>= 1)
      const bool has_x = gr < cnt;
      const int px = s_pair[min(gr, cnt - 1)];
      const bf16* xr = x + static_cast<int64_t>(x_per_pair ? px : px / k) * K;
      auto row0_of = [&](int ti) { return (static_cast<int>(blockIdx.x) * seq + ti) * tile_rows_n; };
      auto item = [&](int j) {
        StagedItem it;
        const int row0 = row0_of(j / np);
        it.q = q;
        it.scale = scale;
        it.zero = zero;
        if (gu_inter > 0) {
          it.ra = min(row0 + gr, gu_inter - 1);
          it.rb = gu_inter + it.ra;
        } else {
          it.ra = min(row0 + gr, N - 1);
          it.rb = min(row0 + gr + 8, N - 1);
        }
        it.ss0 = warp * kDepth + (j % np) * kStride;
        return it;
      };
      const auto ring = staged_ring<F, kDepth, kR, kVar>(ring_all, warp, n_tiles * np, lane, chunks, steps, K, row_bytes);
      ring.prime(item);
      float tot[1][4] = {};
      ring.walk(item, [&](int j, const auto& b, const StagedItem& it) {
        staged_dot<kVar>(b, tot, xr, has_x, it.ss0, chunks, steps, t);
        if (j % np != np - 1) return;  // the tile's last batch: its sums
        tile_epilogue<kWarps, 1>(s_part, tot, warp, lane, s_pair, 0, cnt, row0_of(j / np), N, gu_inter, out, out_h,
                                 accumulate);
#pragma unroll
        for (int i = 0; i < 4; ++i) tot[0][i] = 0;
      });
      return;
    }
  }
  for (int ti = 0; ti < seq; ++ti) {
    const int row0 = (static_cast<int>(blockIdx.x) * seq + ti) * tile_rows_n;
    if (row0 >= row_end) break;  // block-uniform
    int ra[kRT], rb[kRT];
    const uint8_t *qa[kRT], *qb[kRT];
    if (gu_inter > 0) {
#pragma unroll
      for (int tt = 0; tt < kRT; ++tt) {
        ra[tt] = min(row0 + 8 * tt + gr, gu_inter - 1);
        rb[tt] = gu_inter + ra[tt];
        qa[tt] = q + ra[tt] * row_bytes;
        qb[tt] = q + rb[tt] * row_bytes;
      }
    } else {
      tile_rows<kRT>(q, row_bytes, row0, kTileRows, gr, N, ra, rb, qa, qb);
    }
    if (pf > 0) {
      if (ti == 0) prefetch_tile_start<F, kWarps, kDepth, kRT>(q, scale, zero, warp, lane, row0, N, gu_inter, K, pf);
      if (ti + 1 < seq && row0 + tile_rows_n < row_end)  // the next tile's start, one tile ahead
        prefetch_tile_start<F, kWarps, kDepth, kRT>(q, scale, zero, warp, lane, row0 + tile_rows_n, N, gu_inter, K, pf);
    }
    for (int p0 = 0; p0 < cnt; p0 += kTileCols) {
      const int m = min(kTileCols, cnt - p0);
      const bool has_x = gr < m;  // this lane's B column is pair p0 + gr
      const int px = s_pair[p0 + min(gr, m - 1)];
      const bf16* xr = x + static_cast<int64_t>(x_per_pair ? px : px / k) * K;
      float tot[kRT][4];
      warp_tile_sums<F, kWarps, kDepth, kRT, kVar & ~kVarStaged>(tot, qa, qb, ra, rb, q, scale, zero, xr, has_x,
                                                                 warp, lane, row0, N, gu_inter, K, pf, p0 == 0);
      tile_epilogue<kWarps, kRT>(s_part, tot, warp, lane, s_pair, p0, m, row0, N, gu_inter, out, out_h, accumulate);
    }
  }
}

// Down projection and combine in one launch (decode): out[t, :] += sum over the token's
// slots j, in order, of weights[t k + j] * (W2[ids[t k + j]] . h[t k + j]) — what
// quant_moe_gemv over the pairs (its default shape: kWarps warps, the format's depth)
// followed by moe_combine_all (fmaf from 0, then added to out) computes, bit for bit. A
// block owns 16 kRT rows (kRT tiles) for every used expert: kGroups groups of kWarps warps, group g
// taking the used experts g, g + kGroups, ... in first-use order, each with the plain
// kernel's warps, super-steps and order; the sums land in shared memory (s_y) and the
// block combines them. ids_early: the ids were written before the previous kernel began
// (the router's, two launches back), so a block finds its experts and asks L2 for its
// first weights before pdl_wait, while the previous kernel finishes. kRT 2 (batch_tiles):
// each pair's activations loaded once for both tiles' rows (the staged loop takes one).
template <QuantFormat F, int kWarps, int kGroups, int kVar = 0, int kDepth = Codes<F>::kDepth, int kRT = 1>
__global__ void __launch_bounds__(kWarps * kGroups * 32, resident_warps(kVar) / kWarps / kGroups / kRT > 0
                                                             ? resident_warps(kVar) / kWarps / kGroups / kRT
                                                             : 1)
    quant_down_combine_kernel(QuantExperts w, const bf16* __restrict__ h, const int32_t* __restrict__ ids,
                              const float* __restrict__ weights, int n_pairs, int k, int N, int K,
                              float* __restrict__ out, int pf, int ids_early) {
  __shared__ int s_ids[kMaxPairs], s_exp[kMaxPairs], s_cnt[kMaxPairs], s_pairs[kMaxPairs][kMaxPairs];
  __shared__ int s_used;
  __shared__ float s_part[kGroups][kWarps][32][4 * kRT];
  __shared__ float s_y[kMaxPairs][kTileRows * kRT];
  if (!ids_early) pdl_wait();
  for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) s_ids[p] = ids[p];
  __syncthreads();
  if (threadIdx.x == 0) {  // the used experts in first-use order, each with its pairs in order
    int used = 0;
    for (int p = 0; p < n_pairs; ++p) {
      const int e = s_ids[p];
      int u = 0;
      while (u < used && s_exp[u] != e) ++u;
      if (u == used) {
        s_exp[used++] = e;
        s_cnt[u] = 0;
      }
      s_pairs[u][s_cnt[u]++] = p;
    }
    s_used = used;
  }
  __syncthreads();
  const int used = s_used;
  const int warp_all = threadIdx.x >> 5, group = warp_all / kWarps, warp = warp_all % kWarps;
  const int lane = threadIdx.x & 31, gr = lane >> 2, t = lane & 3;
  const int row0 = blockIdx.x * kTileRows * kRT;
  const int64_t row_bytes = quant_row_bytes(F, K);
  if (pf > 0 && group < used)  // the group's first expert, before the wait
    prefetch_tile_start<F, kWarps, kDepth, kRT>(w.q[s_exp[group]], w.scale[s_exp[group]],
                                              w.zero ? w.zero[s_exp[group]] : nullptr, warp, lane, row0, N, 0, K, pf);
  // The group's sums of expert slot u, pairs p0 .. p0 + m - 1 (tot: kRT tiles, or one
  // for the staged loop) into s_y.
  auto finish = [&](int u, int p0, int m, const auto& tot) {
    constexpr int kT = static_cast<int>(std::extent_v<std::remove_reference_t<decltype(tot)>>);
#pragma unroll
    for (int tt = 0; tt < kT; ++tt)
#pragma unroll
      for (int i = 0; i < 4; ++i) s_part[group][warp][lane][4 * tt + i] = tot[tt][i];
    asm volatile("bar.sync %0, %1;" ::"r"(1 + group), "r"(kWarps * 32) : "memory");
    if (warp == 0)
#pragma unroll
      for (int tt = 0; tt < kT; ++tt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          float v = s_part[group][0][lane][4 * tt + i];
#pragma unroll
          for (int wi = 1; wi < kWarps; ++wi) v += s_part[group][wi][lane][4 * tt + i];
          const int col = 2 * t + (i & 1), r = kTileRows * tt + gr + (i >= 2 ? 8 : 0);
          if (col < m) s_y[s_pairs[u][p0 + col]][r] = v;
        }
    asm volatile("bar.sync %0, %1;" ::"r"(1 + group), "r"(kWarps * 32) : "memory");
  };
  bool staged = false;
  if constexpr ((kVar & kVarStaged) != 0 && kRT == 1) {
    // Staged: the group's experts one after the other through each warp's ring (every
    // expert one pass of pairs, every warp at least one batch; else the loop below). With
    // ids_early the first batches are asked for before the wait.
    constexpr int kStride = kWarps * kDepth, kR = ring_slots(kWarps * kGroups);
    const int chunks = static_cast<int>(row_bytes / 16), steps = (chunks + 3) / 4;
    int max_cnt = 0;
    for (int u = 0; u < used; ++u) max_cnt = max(max_cnt, s_cnt[u]);
    staged = max_cnt <= kTileCols && steps >= kStride;  // block-uniform
    if (staged) {
      extern __shared__ uint4 ring_all[];
      const int n_e = used > group ? (used - group + kGroups - 1) / kGroups : 0;  // the group's experts
      const int np = staged_batches<kWarps, kDepth>(steps, warp);
      auto item = [&](int j) {
        StagedItem it;
        const int e = s_exp[group + (j / np) * kGroups];
        it.q = w.q[e];
        it.scale = w.scale[e];
        it.zero = w.zero ? w.zero[e] : nullptr;
        it.ra = min(row0 + gr, N - 1);
        it.rb = min(row0 + gr + 8, N - 1);
        it.ss0 = warp * kDepth + (j % np) * kStride;
        return it;
      };
      const auto ring = staged_ring<F, kDepth, kR, kVar>(ring_all, warp_all, n_e * np, lane, chunks, steps, K, row_bytes);
      ring.prime(item);
      if (ids_early) pdl_wait();  // h, out
      pdl_trigger();
      float tot[1][4] = {};
      ring.walk(item, [&](int j, const auto& b, const StagedItem& it) {
        const int u = group + (j / np) * kGroups, cnt = s_cnt[u];
        const int px = s_pairs[u][min(gr, cnt - 1)];
        staged_dot<kVar>(b, tot, h + static_cast<int64_t>(px) * K, gr < cnt, it.ss0, chunks, steps, t);
        if (j % np != np - 1) return;  // the expert's last batch
        finish(u, 0, cnt, tot);
#pragma unroll
        for (int i = 0; i < 4; ++i) tot[0][i] = 0;
      });
    }
  }
  if (!staged) {
  if (ids_early) pdl_wait();  // h, out
  pdl_trigger();
  for (int u = group; u < used; u += kGroups) {
    const int e = s_exp[u], cnt = s_cnt[u];
    const uint8_t* q = w.q[e];
    const uint8_t* scale = w.scale[e];
    const uint8_t* zero = w.zero ? w.zero[e] : nullptr;
    int ra[kRT], rb[kRT];
    const uint8_t *qa[kRT], *qb[kRT];
    tile_rows<kRT>(q, row_bytes, row0, kTileRows, gr, N, ra, rb, qa, qb);
    if (pf > 0 && u != group) prefetch_tile_start<F, kWarps, kDepth, kRT>(q, scale, zero, warp, lane, row0, N, 0, K, pf);
    for (int p0 = 0; p0 < cnt; p0 += kTileCols) {
      const int m = min(kTileCols, cnt - p0);
      const bool has_x = gr < m;
      const int px = s_pairs[u][p0 + min(gr, m - 1)];
      float tot[kRT][4];
      warp_tile_sums<F, kWarps, kDepth, kRT, kVar & ~kVarStaged>(tot, qa, qb, ra, rb, q, scale, zero,
                                                               h + static_cast<int64_t>(px) * K, has_x, warp, lane,
                                                               row0, N, 0, K, pf, p0 == 0);
      finish(u, p0, m, tot);
    }
  }
  }
  __syncthreads();
  const int n_tok = n_pairs / k;
  for (int i = threadIdx.x; i < n_tok * kTileRows * kRT; i += blockDim.x) {
    const int tok = i / (kTileRows * kRT), r = i % (kTileRows * kRT), row = row0 + r;
    if (row >= N) continue;
    float s = 0;
    for (int j = 0; j < k; ++j) s = fmaf(weights[tok * k + j], s_y[tok * k + j][r], s);
    out[static_cast<int64_t>(tok) * N + row] += s;
  }
}

// The pipelined variant: a block stays resident and walks the row tiles blockIdx.x,
// blockIdx.x + gridDim.x, ... of its expert (one start per block instead of one per tile),
// and each warp issues the loads of its next batch (of the same tile, or of the next
// tile) before it dequantises and multiplies the current one, two batches alternating in
// registers: a warp's loads stay in flight while it computes, and across the ends of
// tiles. The warps' split of a tile's row and the order of the sums are those of
// quant_moe_gemv_kernel (the same result, bit for bit, for the same kWarps and kDepth).
// The partial sums of consecutive tiles alternate between two shared arrays, so one
// barrier a tile suffices. gate_up: kRT = 2 tiles tile_stride = N / 2 apart (g and u of
// the same rows), written as h = silu(g) * u (bf16, pairs x N / 2) to out_h; at least
// 16 / kRT warps per SM, as for the plain kernel.
template <QuantFormat F, int kWarps, int kDepth, int kRT>
__global__ void __launch_bounds__(kWarps * 32, 16 / kWarps / kRT > 0 ? 16 / kWarps / kRT : 1)
    quant_moe_gemv_pipe_kernel(QuantExperts w, const bf16* __restrict__ x, int x_per_pair,
                               const int32_t* __restrict__ ids, int n_pairs, int k, int N, int K, int tiles,
                               int tile_stride, float* __restrict__ out, bf16* __restrict__ out_h) {
  using C = Codes<F>;
  using B = Batch<F, kDepth, kRT, true>;
  __shared__ int s_ids[kMaxPairs], s_pair[kMaxPairs], s_cnt;
  __shared__ float s_part[2][kWarps][32][4 * kRT];
  const int e = block_expert(ids, n_pairs, s_ids, s_pair, &s_cnt);
  if (e < 0) return;
  const int cnt = s_cnt;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, t = lane & 3;
  const int64_t row_bytes = quant_row_bytes(F, K);
  const int chunks = static_cast<int>(row_bytes / 16);
  const int steps = (chunks + 3) / 4;
  const int iters = (steps + kWarps * kDepth - 1) / (kWarps * kDepth);  // batches of a warp per tile
  const int my_tiles = (tiles - static_cast<int>(blockIdx.x) + static_cast<int>(gridDim.x) - 1) / static_cast<int>(gridDim.x);
  const int n_it = my_tiles * iters;
  const uint8_t* q = w.q[e];
  const uint8_t* scale = w.scale[e];
  const uint8_t* zero = w.zero ? w.zero[e] : nullptr;
  for (int p0 = 0; p0 < cnt; p0 += kTileCols) {
    const int m = min(kTileCols, cnt - p0);
    const bool has_x = gr < m;
    const int px = s_pair[p0 + min(gr, m - 1)];
    const bf16* xr = x + static_cast<int64_t>(x_per_pair ? px : px / k) * K;
    float tot[kRT][4] = {};
    auto load = [&](B& b, int it) {
      const int row0 = (static_cast<int>(blockIdx.x) + (it / iters) * static_cast<int>(gridDim.x)) * kTileRows;
      int ra[kRT], rb[kRT];
      const uint8_t *qa[kRT], *qb[kRT];
      tile_rows<kRT>(q, row_bytes, row0, tile_stride, gr, N, ra, rb, qa, qb);
      b.load(qa, qb, ra, rb, scale, zero, warp * kDepth + (it % iters) * kWarps * kDepth, chunks, steps, t, K);
    };
    auto step = [&](const B& b, int it) {
      const int i = it % iters, tile_no = it / iters;
      b.dot(tot, xr, has_x, warp * kDepth + i * kWarps * kDepth, chunks, steps, t);
      if (i != iters - 1) return;  // block-uniform
      float(*part)[32][4 * kRT] = s_part[tile_no & 1];
#pragma unroll
      for (int tt = 0; tt < kRT; ++tt)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          part[warp][lane][4 * tt + j] = tot[tt][j];
          tot[tt][j] = 0;
        }
      __syncthreads();
      if (warp != 0) return;
      const int row0 = (static_cast<int>(blockIdx.x) + tile_no * static_cast<int>(gridDim.x)) * kTileRows;
      if constexpr (kRT == 2) {
        if (out_h) {  // g (tile 0) and u (tile 1) of the same rows and pairs
          const int inter = tile_stride;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            float g = part[0][lane][j], u = part[0][lane][4 + j];
#pragma unroll
            for (int wi = 1; wi < kWarps; ++wi) {
              g += part[wi][lane][j];
              u += part[wi][lane][4 + j];
            }
            const int col = 2 * t + (j & 1), row = row0 + gr + (j >= 2 ? 8 : 0);
            if (col < m && row < inter)
              out_h[static_cast<int64_t>(s_pair[p0 + col]) * inter + row] = __float2bfloat16_rn(detail::silu(g) * u);
          }
          return;
        }
      }
      write_tile<kWarps, kRT>(part, s_pair, p0, m, row0, tile_stride, N, lane, out, 0);
    };
    B b0, b1;
    if (n_it > 0) load(b0, 0);
    for (int it = 0; it < n_it; it += 2) {
      if (it + 1 < n_it) load(b1, it + 1);
      step(b0, it);
      if (it + 2 < n_it) load(b0, it + 2);
      if (it + 1 < n_it) step(b1, it + 1);
    }
    __syncthreads();  // the last tiles' s_part before the next pass writes them
  }
}

// Warps per block (splitting the row length): more when the row tiles are few, so the
// grid still brings enough loads in flight on every SM. Quantised formats: 4 from 132
// tiles on (measured on an H200 at Mixtral's w2, 256 tiles: int8/fp8 44.6 us with 4 warps
// against 46.9 with 8 and 51 with 16, int4 33.7 against 35.5; w1, 896 tiles, 4 was best too).
template <QuantFormat F>
int default_warps(int tiles) {
  if (F != QuantFormat::bf16 && tiles >= 132) return 4;
  return tiles >= 2 * 264 ? 4 : tiles >= 132 ? 8 : 16;
}

// What the plain kernel takes beyond the product: the L2 prefetch window (passes) and
// the fused gate/up form (gu_inter > 0: h to out_h).
struct PlainExtra {
  int pf = 0, gu_inter = 0;
  bf16* out_h = nullptr;
  int seq = 1;  // tiles a block takes in turn
  int var = 0;  // inner-loop variant (kVarEarlyScales | kVarInterleave)
};

// Whether the inner-loop variants are compiled for this launch: the quantised formats at
// their default depth, one tile a block, 4 or 16 warps (the warps default_warps picks).
template <QuantFormat F>
constexpr bool variants_compiled(int depth, int tiles_per_block, int warps) {
  return F != QuantFormat::bf16 && depth == Codes<F>::kDepth && tiles_per_block == 1 && (warps == 4 || warps == 16);
}

// Whether the plain loop on int4 codes in the paired order is compiled for this launch:
// the format's depth, 4 or 16 warps, one tile a block or two (the batched default,
// batch_tiles).
template <QuantFormat F>
constexpr bool paired_compiled(int depth, int tiles_per_block, int warps) {
  return F == QuantFormat::int4 && depth == Codes<F>::kDepth && tiles_per_block <= 2 && (warps == 4 || warps == 16);
}

// fn(std::integral_constant<int, var>) for the compiled variants (variant_compiled; where
// none is compiled: 0). kPairedCompiled: the paired plain loop (paired_compiled), and with
// kCompiled its staged form.
template <bool kCompiled, bool kPairedCompiled, typename Fn>
void with_variant(int var, Fn&& fn) {
  if constexpr (kPairedCompiled) {
    if (var == kVarPaired) return fn(std::integral_constant<int, kVarPaired>{});
    if constexpr (kCompiled)
      if (var == (kVarPaired | kVarStaged)) return fn(std::integral_constant<int, kVarPaired | kVarStaged>{});
  }
  if ((var & kVarPaired) != 0)
    fail_msg(msg("quant_moe_gemv: int4 codes in the paired order run inner-loop variant 0, 8 or 32 .. 38 (0 at the "
                 "format's depth, one or two tiles and 4 or 16 warps; 8 at one tile), not variant ",
                 var & ~kVarPaired));
  if constexpr (kCompiled) {
    switch (var) {
      case 1: return fn(std::integral_constant<int, 1>{});
      case 2: return fn(std::integral_constant<int, 2>{});
      case 3: return fn(std::integral_constant<int, 3>{});
      case 4: return fn(std::integral_constant<int, 4>{});
      case 5: return fn(std::integral_constant<int, 5>{});
      case 6: return fn(std::integral_constant<int, 6>{});
      case 7: return fn(std::integral_constant<int, 7>{});
      case 8: return fn(std::integral_constant<int, 8>{});
      case 10: return fn(std::integral_constant<int, 10>{});
      case 11: return fn(std::integral_constant<int, 11>{});
      default: break;
    }
  }
  fn(std::integral_constant<int, 0>{});
}

// A staged kernel's blocks resident on the GPU at once with `smem` bytes of ring (its
// shared-memory limit raised to that on first use; one value per kernel: the GPUs of a
// run are of one kind).
template <auto kKernel>
int staged_resident_blocks(int warps, size_t smem) {
  static const int n = [&] {  // one per kernel (kernels of one signature share a function type)
    auto* kernel = kKernel;
    int dev = 0, sms = 0, per_sm = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    set_dynamic_smem(reinterpret_cast<const void*>(kernel), static_cast<int>(smem), "the staged quantised GEMV");
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, warps * 32, smem));
    return std::max(1, sms * per_sm);
  }();
  return n;
}

template <QuantFormat F, int kDepth, int kRT>
void launch_depth(int warps, int tiles, int slots, const QuantExperts& w, const uint8_t* single,
                  const uint8_t* single_scale, const bf16* x, int pp,
                  const int32_t* ids, int n_pairs, int k, int N, int K, float* out, int acc, PlainExtra ex,
                  cudaStream_t stream) {
  const int units =
      ex.gu_inter > 0 ? static_cast<int>(ceil_div(ex.gu_inter, 8 * kRT)) : static_cast<int>(ceil_div(tiles, kRT));
  const int bx = static_cast<int>(ceil_div(units, ex.seq));
  const dim3 grid(static_cast<unsigned>(bx), static_cast<unsigned>(slots));
  auto launch = [&](auto warps_c) {
    constexpr int kWarps = decltype(warps_c)::value;
    with_variant<variants_compiled<F>(kDepth, kRT, kWarps), paired_compiled<F>(kDepth, kRT, kWarps)>(ex.var, [&](auto var_c) {
      constexpr int kVar = decltype(var_c)::value;
      auto* kernel = quant_moe_gemv_kernel<F, kWarps, kDepth, kRT, kVar>;
      if constexpr ((kVar & kVarStaged) != 0) {
        // Staged: the ring in dynamic shared memory, the blocks resident (a slot's tiles
        // shared out among as many blocks as fit beside the other slots'), each taking
        // consecutive tiles.
        constexpr size_t smem = ring_bytes(kWarps, kDepth);
        const int per_gpu = staged_resident_blocks<quant_moe_gemv_kernel<F, kWarps, kDepth, kRT, kVar>>(kWarps, smem);
        const int per_slot = std::max(1, per_gpu / std::max(1, slots));
        const int seq = static_cast<int>(ceil_div(units, per_slot));
        const dim3 sgrid(static_cast<unsigned>(ceil_div(units, seq)), static_cast<unsigned>(slots));
        launch_pdl(kernel, sgrid, dim3(kWarps * 32), smem, stream, w, single, single_scale, x, pp, ids, n_pairs, k,
                   N, K, out, acc, 0, ex.gu_inter, ex.out_h, seq);
      } else {
        launch_pdl(kernel, grid, dim3(kWarps * 32), 0, stream, w, single, single_scale, x, pp, ids, n_pairs, k, N, K,
                   out, acc, ex.pf, ex.gu_inter, ex.out_h, ex.seq);
      }
    });
  };
  switch (warps) {
    case 2: return launch(std::integral_constant<int, 2>{});
    case 4: return launch(std::integral_constant<int, 4>{});
    case 8: return launch(std::integral_constant<int, 8>{});
    case 16: return launch(std::integral_constant<int, 16>{});
    default: fail_msg(msg("quant_moe_gemv: ", warps, " warps per block, expected 2, 4, 8 or 16"));
  }
}

// The plain kernel's L2 prefetch window when the shape leaves it (-1): none for bf16
// weights (gemv_tc); for the quantised formats MOEBENCH_QUANT_PREFETCH (0, 1, 2 or 4
// passes; unset: kDefaultQuantPrefetch).
template <QuantFormat F>
int prefetch_passes(const QuantGemvShape& shape) {
  if (shape.pf >= 0) return shape.pf;
  if (F == QuantFormat::bf16) return 0;
  static const int pf = env_choice("MOEBENCH_QUANT_PREFETCH", {0, 1, 2, 4}, kDefaultQuantPrefetch);
  return pf;
}

// The launches whose default variant was measured apart.
enum class QuantLaunch { gemv, gate_up, down_combine };

// A launch's variant where neither its shape nor MOEBENCH_QUANT_VARIANT names one, as
// measured on an H200 (Mixtral-8x7B shapes, all eight variants side by side in one
// binary, microseconds at one token / at 8 tokens):
// - fused gate/up: fp8 interleaved (2: 78.9 / 286.6 against 80.7 / 288.3); int8 and
//   int4 the plain loop (int8 78.9 against 81.3-94.9 for the others, int4 59.9 against
//   60.8-84.0);
// - down + combine: int8 early scales and interleaved (3: 43.3 / 149.8 against 48.0 /
//   182.7), fp8 interleaved (2: 44.6 / 161.3 against 47.7 / 182.4), int4 the plain loop
//   (34.8 against 35.1-49.0);
// - the plain GEMV (and the attention projections' quant_gemv): kDefaultQuantVariant.
// Double buffering (4) was slower everywhere (12 warps an SM).
int default_variant(QuantFormat f, QuantLaunch l) {
  if (f == QuantFormat::fp8 && l != QuantLaunch::gemv) return kVarInterleave;
  if (f == QuantFormat::int8 && l == QuantLaunch::down_combine) return kVarEarlyScales | kVarInterleave;
  return kDefaultQuantVariant;
}

// The inner-loop variant: var, or when it is -1, MOEBENCH_QUANT_VARIANT (0 .. 7, 8, 10, 11, 32 .. 38, 40 .. 42),
// unset the launch's default dflt. Any other value is a one-line Error.
int inner_variant(int var, int dflt) {
  if (var < 0) {
    static const int v = env_choice("MOEBENCH_QUANT_VARIANT",
                                    {0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 32, 33, 34, 35, 36, 37, 38, 40, 41, 42, 43, 44, 45}, -1);
    return v >= 0 ? v : dflt;
  }
  if (!variant_compiled(var))
    fail_msg(msg("quant_moe_gemv: inner-loop variant ", var, ", expected 0 .. 7, 8, 10, 11, ", kQuantVariantRows,
                 " .. ", kQuantVariantRows + kQuantRowsShapes - 1, " (the warp-row kernels) or ", kQuantVariantExact,
                 " .. ", kQuantVariantExact + kQuantExactShapes - 1, " (the exact warp kernels)"));
  return var;
}

// The exact warp kernel a one-token launch takes where the tile kernel would run its
// default shape (4 warps, the format's depth, one tile), so that the result is the same
// bit for bit (0: the tile kernel): MOEBENCH_QUANT_EXACT = 0 or 40 .. 45 for every launch;
// unset, the fastest measured on an H200 (Mixtral shapes, one token, microseconds, tile
// default against exact):
// - fp8: gate/up + silu 40 (76.2 against 77.2), down + combine 40 (39.4 against 42.8);
//   the plain GEMV 40;
// - int8: gate/up the tile kernel (76.8; 40 and 43 79.4, 78.2), down + combine 44 (41.2
//   against 41.6); the plain GEMV the tile kernel;
// - int4: gate/up the tile kernel (57.1; 40 and 44 66.5, 60.6), down + combine 44 (31.7
//   against 32.1); the plain GEMV the tile kernel.
// With the exact kernels' fp16 form (quant_half_form, the default; session 15, one call,
// microseconds, tile against bf16 form against fp16 form): gate/up + silu fp8 40 (79.2,
// 76.3, 70.5), int8 40 (77.3, 79.4, 70.5), int4 (paired) 44 (53.7, 54.3, 52.8).
// MOEBENCH_QUANT_VARIANT, where set, decides instead.
int exact_default(QuantFormat f, QuantLaunch l, bool int4_paired = true) {
  static const int env = env_choice("MOEBENCH_QUANT_EXACT", {0, 40, 41, 42, 43, 44, 45}, -1);
  if (env >= 0) return env;
  if (f == QuantFormat::fp8) return kDefaultQuantExact;
  if (l == QuantLaunch::down_combine) return kQuantVariantExact + 4;
  if (l == QuantLaunch::gate_up && quant_half_form() >= 1 && (f == QuantFormat::int8 || int4_paired))
    return f == QuantFormat::int8 ? kQuantVariantExact : kQuantVariantExact + 4;  // int4: measured paired only
  return 0;
}

// The pipelined kernel's grid: as many blocks per used expert as fit on the GPU at once
// (all of them resident, each walking several tiles), at most one per tile.
// (One value per kernel, taken on first use: the GPUs of a run are of one kind.)
template <QuantFormat F, int kWarps, int kDepth, int kRT>
int resident_blocks() {
  static const int n = [] {
    int dev = 0, sms = 0, per_sm = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, quant_moe_gemv_pipe_kernel<F, kWarps, kDepth, kRT>,
                                                             kWarps * 32, 0));
    return std::max(1, sms * per_sm);
  }();
  return n;
}

// out_h non-null: the fused gate/up form (kRT 2, tiles of the first N / 2 rows).
template <QuantFormat F, int kDepth, int kRT>
void launch_pipe(int warps, int slots, const QuantExperts& w, const bf16* x, int pp, const int32_t* ids, int n_pairs,
                 int k, int N, int K, float* out, bf16* out_h, cudaStream_t stream) {
  const int rows = out_h ? N / 2 : N, tiles = static_cast<int>(ceil_div(rows, kTileRows));
  const int stride = out_h ? N / 2 : kTileRows;
  auto launch = [&](auto warps_c) {
    constexpr int kWarps = decltype(warps_c)::value;
    const int bx = std::min(tiles, std::max(1, resident_blocks<F, kWarps, kDepth, kRT>() / slots));
    quant_moe_gemv_pipe_kernel<F, kWarps, kDepth, kRT><<<dim3(static_cast<unsigned>(bx), static_cast<unsigned>(slots)), kWarps * 32, 0, stream>>>(
        w, x, pp, ids, n_pairs, k, N, K, tiles, stride, out, out_h);
  };
  switch (warps) {
    case 4: return launch(std::integral_constant<int, 4>{});
    case 8: return launch(std::integral_constant<int, 8>{});
    default: fail_msg(msg("quant_moe_gemv: ", warps, " warps per block for the pipelined kernel, expected 4 or 8"));
  }
}

// The pipelined kernel (shape.pipe 1; depth 2 or the format's kDepth, 4 or 8 warps).
template <QuantFormat F>
void launch_pipelined(const QuantExperts& w, const bf16* x, bool x_per_pair, const int32_t* ids, int n_pairs, int k,
                      int N, int K, int n_experts, float* out, bf16* out_h, QuantGemvShape shape,
                      cudaStream_t stream) {
  if (w.int4_paired) fail_msg("quant_moe_gemv: the pipelined kernel reads int4 codes as stored, not in the paired order");
  const int slots = std::min(n_pairs, n_experts), pp = x_per_pair ? 1 : 0;
  const int warps = shape.warps ? shape.warps : 4;
  constexpr int D = Codes<F>::kDepth;
  const int depth = shape.depth ? shape.depth : kPipeDepth;
  if (depth == 2) {
    if (out_h) launch_pipe<F, 2, 2>(warps, slots, w, x, pp, ids, n_pairs, k, N, K, out, out_h, stream);
    else launch_pipe<F, 2, 1>(warps, slots, w, x, pp, ids, n_pairs, k, N, K, out, out_h, stream);
    return;
  }
  if (depth == D && !out_h) {
    launch_pipe<F, D, 1>(warps, slots, w, x, pp, ids, n_pairs, k, N, K, out, out_h, stream);
    return;
  }
  fail_msg(msg("quant_moe_gemv: depth ", depth, " for the pipelined ", quant_format_name(F), " kernel, expected 2",
               out_h ? std::string(" (gate/up fused)") : msg(" or ", D)));
}

// A launch's variant where its shape names none (MOEBENCH_QUANT_VARIANT, else the default):
// one token (each used expert one pair) at the tile kernel's default shape (exact_ok) takes
// the exact warp kernel, which computes the same bits.
int launch_variant(const QuantExperts& w, QuantLaunch l, bool exact_ok) {
  int dflt = default_variant(w.format, l);
  if (exact_ok && exact_default(w.format, l, w.int4_paired) != 0) dflt = exact_default(w.format, l, w.int4_paired);
  return inner_variant(-1, dflt);
}

// Tiles a block takes by default in a launch over the selected experts: where their pairs
// average at least two an expert (a batched decode step), kDefaultQuantBatchTiles or
// MOEBENCH_QUANT_BATCH_TILES = 1 or 2 (two: every pair's activations loaded once for two
// tiles' rows; the same sums, a row's sum does not depend on the tile beside it), else one.
int batch_tiles(int n_pairs, int n_experts) {
  static const int env = env_choice("MOEBENCH_QUANT_BATCH_TILES", {1, 2}, kDefaultQuantBatchTiles);
  return n_pairs >= 2 * n_experts ? env : 1;
}

// shape.warps / shape.depth / shape.tiles 0: the defaults (default_warps, the format's
// kDepth, batch_tiles for the quantised experts, one tile for one matrix). Depth kDepth / 2
// and 2 x kDepth and two tiles (at depth kDepth) are compiled for the quantised formats only.
// out_h: the fused gate/up form (N = 2 inter).
template <QuantFormat F>
void launch(const QuantExperts& w, const uint8_t* single, const uint8_t* single_scale, const bf16* x, bool x_per_pair,
            const int32_t* ids,
            int n_pairs, int k, int N, int K, int n_experts, float* out, bool accumulate, QuantGemvShape shape,
            cudaStream_t stream, bf16* out_h = nullptr) {
  const int tiles = static_cast<int>(ceil_div(N, kTileRows)), slots = std::min(n_pairs, n_experts);
  const int pp = x_per_pair ? 1 : 0, acc = accumulate ? 1 : 0;
  const int warps = shape.warps ? shape.warps : default_warps<F>(tiles);
  const int rt = shape.tiles                          ? shape.tiles
                 : F == QuantFormat::bf16 || single ? 1
                                                    : batch_tiles(n_pairs, n_experts);
  constexpr int D = Codes<F>::kDepth;
  const int depth = shape.depth ? shape.depth : D;
  // The environment's variant applies where it is compiled; a shape's own var must be.
  int var = 0;
  if (F != QuantFormat::bf16 && shape.var >= 0) {
    var = inner_variant(shape.var, 0);
  } else if (F != QuantFormat::bf16 && variants_compiled<F>(depth, rt, warps)) {
    var = launch_variant(w, out_h ? QuantLaunch::gate_up : QuantLaunch::gemv,
                         !single && !accumulate && n_pairs <= k && warps == 4);
  }
  if (is_warp_variant(var)) {
    if (F != QuantFormat::bf16 && !single && !accumulate) {
      quant_rows_gemv(w, x, x_per_pair, ids, n_pairs, k, N, K, out, out_h, var, stream);
      return;
    }
    var = 0;  // one matrix (quant_gemv, gemv_tc): the tile kernel
  }
  if (F == QuantFormat::int4 && w.int4_paired) var |= kVarPaired;
  const PlainExtra ex{prefetch_passes<F>(shape), out_h ? N / 2 : 0, out_h, shape.seq > 0 ? shape.seq : 1, var};
  if ((var & ~kVarPaired) != 0 && !variants_compiled<F>(depth, rt, warps))
    fail_msg(msg("quant_moe_gemv: inner-loop variant ", var, " is compiled for depth ", D,
                 ", one tile and 4 or 16 warps, not depth ", depth, " x ", rt, " tiles x ", warps, " warps"));
  if (depth == D && rt == 1) {
    launch_depth<F, D, 1>(warps, tiles, slots, w, single, single_scale, x, pp, ids, n_pairs, k, N, K, out, acc, ex, stream);
    return;
  }
  if constexpr (F != QuantFormat::bf16) {
    if (depth == 2 * D && rt == 1) {
      launch_depth<F, 2 * D, 1>(warps, tiles, slots, w, single, single_scale, x, pp, ids, n_pairs, k, N, K, out, acc, ex, stream);
      return;
    }
    if (depth == D && rt == 2) {
      launch_depth<F, D, 2>(warps, tiles, slots, w, single, single_scale, x, pp, ids, n_pairs, k, N, K, out, acc, ex, stream);
      return;
    }
    if (depth == D / 2 && rt == 1) {
      launch_depth<F, D / 2, 1>(warps, tiles, slots, w, single, single_scale, x, pp, ids, n_pairs, k, N, K, out, acc, ex, stream);
      return;
    }
  }
  fail_msg(msg("quant_moe_gemv: depth ", depth, " x ", rt, " tiles for ", quant_format_name(F), ", expected ", D,
               F != QuantFormat::bf16 ? msg(", ", D / 2, " or ", 2 * D, " x 1 tile, or ", D, " x 2 tiles")
                                      : std::string(" x 1 tile")));
}

// The down/combine kernel: two groups of the plain kernel's default warps (4 for every
// quantised format at Mixtral's w2 and above 132 tiles; 8 or 16 below, as default_warps);
// rt tiles a block (1, or 2: the plain loop only, its paired form for int4; another
// variant runs as the plain loop, the same bits).
template <QuantFormat F>
void launch_down_combine(const QuantExperts& w, const bf16* h, const int32_t* ids, const float* weights, int n_pairs,
                         int k, int N, int K, float* out, int pf, int var, bool ids_early, int rt,
                         cudaStream_t stream) {
  const int tiles = static_cast<int>(ceil_div(N, kTileRows));
  auto go = [&](auto warps_c, auto rt_c) {
    constexpr int kWarps = decltype(warps_c)::value, kRT = decltype(rt_c)::value;
    constexpr int kGroups = kWarps == 4 ? 2 : 1, kDepth = Codes<F>::kDepth;
    with_variant<kRT == 1, F == QuantFormat::int4>(var, [&](auto var_c) {
      constexpr int kVar = decltype(var_c)::value;
      auto* kernel = quant_down_combine_kernel<F, kWarps, kGroups, kVar, kDepth, kRT>;
      size_t smem = 0;
      if constexpr ((kVar & kVarStaged) != 0) {
        smem = ring_bytes(kWarps * kGroups, kDepth);
        staged_resident_blocks<quant_down_combine_kernel<F, kWarps, kGroups, kVar, kDepth, kRT>>(kWarps * kGroups,
                                                                                                 smem);  // its limit
      }
      launch_pdl(kernel, dim3(static_cast<unsigned>(ceil_div(tiles, kRT))), dim3(kWarps * kGroups * 32), smem, stream,
                 w, h, ids, weights, n_pairs, k, N, K, out, (kVar & kVarStaged) != 0 ? 0 : pf, ids_early ? 1 : 0);
    });
  };
  auto with_rt = [&](auto warps_c) {
    if (rt == 2) return go(warps_c, std::integral_constant<int, 2>{});
    return go(warps_c, std::integral_constant<int, 1>{});
  };
  switch (default_warps<F>(tiles)) {
    case 4: return with_rt(std::integral_constant<int, 4>{});
    default: return with_rt(std::integral_constant<int, 16>{});
  }
}

}  // namespace

namespace {
void check_args(const QuantExperts& w, const bf16* x, int n_pairs, int N, int K, int n_experts, int k) {
  if (n_pairs <= 0 || n_pairs > kMaxPairs) fail_msg(msg("quant_moe_gemv: ", n_pairs, " pairs, expected 1..", kMaxPairs));
  const int align = w.format == QuantFormat::int4 ? 32 : 16;
  if (K % align != 0)
    fail_msg(msg("quant_moe_gemv: ", K, " inputs is not a multiple of ", align, " (", quant_format_name(w.format),
                 " rows are read 16 bytes at a time)"));
  if (N <= 0 || n_experts <= 0 || k <= 0)
    fail_msg(msg("quant_moe_gemv: N ", N, ", experts ", n_experts, ", k ", k, " must be positive"));
  if (!aligned16(x))
    fail_msg(msg("quant_moe_gemv: the activations are not 16-byte aligned (they are read 16 bytes at a time)"));
}

// fn(std::integral_constant<QuantFormat, F>) for the experts' quantised format F, then
// the launch check named `what`; bf16 is an Error (bf16 experts use moe_fused).
template <typename Fn>
void for_expert_format(QuantFormat f, const char* what, Fn&& fn) {
  switch (f) {
    case QuantFormat::int8: fn(std::integral_constant<QuantFormat, QuantFormat::int8>{}); break;
    case QuantFormat::int4: fn(std::integral_constant<QuantFormat, QuantFormat::int4>{}); break;
    case QuantFormat::fp8: fn(std::integral_constant<QuantFormat, QuantFormat::fp8>{}); break;
    default: fail_msg(msg(what, ": format ", quant_format_name(f), " is not quantised (bf16 experts use moe_fused)"));
  }
  CUDA_CHECK_LAUNCH(what);
}

// Either kernel for the run's format; out_h: the fused gate/up form.
void dispatch(const QuantExperts& w, const bf16* x, bool x_per_pair, const int32_t* ids, int n_pairs, int k, int N,
              int K, int n_experts, float* out, bf16* out_h, QuantGemvShape shape, cudaStream_t stream) {
  auto run = [&](auto f_c) {
    constexpr QuantFormat F = decltype(f_c)::value;
    if (shape.pipe) launch_pipelined<F>(w, x, x_per_pair, ids, n_pairs, k, N, K, n_experts, out, out_h, shape, stream);
    else launch<F>(w, nullptr, nullptr, x, x_per_pair, ids, n_pairs, k, N, K, n_experts, out, false, shape, stream, out_h);
  };
  for_expert_format(w.format, "quant_moe_gemv", run);
}
}  // namespace

void quant_moe_gemv_shaped(const QuantExperts& w, const bf16* x, bool x_per_pair, const int32_t* ids, int n_pairs,
                           int k, int N, int K, int n_experts, float* out, QuantGemvShape shape, cudaStream_t stream) {
  MB_NVTX_RANGE("quant_moe_gemv");
  check_args(w, x, n_pairs, N, K, n_experts, k);
  dispatch(w, x, x_per_pair, ids, n_pairs, k, N, K, n_experts, out, nullptr, shape, stream);
}

void quant_moe_gemv(const QuantExperts& w, const bf16* x, bool x_per_pair, const int32_t* ids, int n_pairs, int k,
                    int N, int K, int n_experts, float* out, cudaStream_t stream) {
  quant_moe_gemv_shaped(w, x, x_per_pair, ids, n_pairs, k, N, K, n_experts, out, kDefaultQuantGemvShape, stream);
}

void quant_moe_gemv_gate_up_shaped(const QuantExperts& w, const bf16* x, const int32_t* ids, int n_pairs, int k,
                                   int inter, int K, int n_experts, bf16* h, QuantGemvShape shape,
                                   cudaStream_t stream) {
  MB_NVTX_RANGE("quant_moe_gemv_gate_up");
  check_args(w, x, n_pairs, 2 * inter, K, n_experts, k);
  dispatch(w, x, false, ids, n_pairs, k, 2 * inter, K, n_experts, nullptr, h, shape, stream);
}

void quant_moe_gemv_gate_up(const QuantExperts& w, const bf16* x, const int32_t* ids, int n_pairs, int k, int inter,
                            int K, int n_experts, bf16* h, cudaStream_t stream) {
  quant_moe_gemv_gate_up_shaped(w, x, ids, n_pairs, k, inter, K, n_experts, h, kDefaultQuantGemvShape, stream);
}

namespace {
// The variant a one-token fused gate/up launch takes (launch at the default shape), 0 where
// it runs no exact kernel's shape with the router compiled.
int gate_up_router_variant(const QuantExperts& w, int k, int inter, int K, int n_experts) {
  if (w.format == QuantFormat::bf16 || k < 1 || k > kMaxPairs || inter <= 0) return 0;
  const int tiles = static_cast<int>(ceil_div(2 * inter, kTileRows));
  // Every quantised format's default warps (default_warps) and compiled variants
  // (variants_compiled: 4 or 16 warps at the default depth, one tile) are alike.
  const int warps = default_warps<QuantFormat::int8>(tiles);
  if (!variants_compiled<QuantFormat::int8>(Codes<QuantFormat::int8>::kDepth, 1, warps)) return 0;
  const int var = launch_variant(w, QuantLaunch::gate_up, warps == 4);  // one token: k pairs
  return quant_rows_gate_up_router_takes(var, w, k, K, n_experts) ? var : 0;
}
}  // namespace

bool quant_moe_gemv_gate_up_router_supported(const QuantExperts& w, int k, int inter, int K, int n_experts) {
  return gate_up_router_variant(w, k, inter, K, n_experts) != 0;
}

void quant_moe_gemv_gate_up_router(const QuantExperts& w, const GateUpRouter& r, int k, int inter, int K, bf16* h,
                                   cudaStream_t stream) {
  MB_NVTX_RANGE("quant_moe_gemv_gate_up_router");
  const int var = gate_up_router_variant(w, k, inter, K, r.n_experts);
  if (var == 0)
    fail_msg(msg("quant_moe_gemv_gate_up_router: ", quant_format_name(w.format), " experts of ", inter, " x ", K,
                 ", ", r.n_experts, " experts, top-", k, ": the one-token gate/up runs no kernel with the router"));
  check_args(w, h, k, 2 * inter, K, r.n_experts, k);
  if (!r.x || !r.norm_w || !r.gate || !r.h || !r.logits || !r.ids || !r.weights)
    fail_msg("quant_moe_gemv_gate_up_router: a router input or output is null");
  quant_rows_gate_up_router(w, r, k, 2 * inter, K, h, var, stream);
}

bool quant_moe_block_persistent_supported(const QuantExperts& gu, const QuantExperts& dn, int k, int inter, int K,
                                          int n_experts, bool router) {
  if (gu.format == QuantFormat::bf16 || dn.format != gu.format || k < 1 || k > kMaxPairs || inter <= 0 || K <= 0)
    return false;
  // The one-token gate/up on an exact kernel (every exact shape gives the tile kernel's sums).
  const int tiles_gu = static_cast<int>(ceil_div(2 * inter, kTileRows));
  const int warps_gu = default_warps<QuantFormat::int8>(tiles_gu);  // alike for every quantised format
  if (!variants_compiled<QuantFormat::int8>(Codes<QuantFormat::int8>::kDepth, 1, warps_gu) ||
      !is_exact_variant(launch_variant(gu, QuantLaunch::gate_up, warps_gu == 4)))
    return false;
  // The one-token down + combine likewise (quant_moe_down_combine's choice).
  if (default_warps<QuantFormat::int8>(static_cast<int>(ceil_div(K, kTileRows))) != 4 ||
      exact_default(dn.format, QuantLaunch::down_combine) == 0 ||
      !is_exact_variant(inner_variant(-1, exact_default(dn.format, QuantLaunch::down_combine))))
    return false;
  return quant_rows_moe_persistent_takes(gu, dn, k, inter, K, n_experts, router);
}

void quant_moe_block_persistent(const QuantExperts& gu, const QuantExperts& dn, const GateUpRouter* router,
                                const bf16* x, const int32_t* ids, const float* weights, int k, int inter, int K,
                                int n_experts, bf16* h, float* residual, unsigned long long* counter,
                                cudaStream_t stream, bool router_every_block) {
  MB_NVTX_RANGE("quant_moe_block_persistent");
  if (!quant_moe_block_persistent_supported(gu, dn, k, inter, K, n_experts, router != nullptr))
    fail_msg(msg("quant_moe_block_persistent: ", quant_format_name(gu.format), " experts of ", inter, " x ", K, ", ",
                 n_experts, " experts, top-", k, router ? " with the router" : "",
                 ": the one-token MoE block runs no persistent launch"));
  check_args(gu, router ? router->h : x, k, 2 * inter, K, n_experts, k);
  check_args(dn, h, k, K, inter, n_experts, k);
  if (router && (!router->x || !router->norm_w || !router->gate || !router->h || !router->logits || !router->ids ||
                 !router->weights))
    fail_msg("quant_moe_block_persistent: a router input or output is null");
  quant_rows_moe_persistent(gu, dn, router, x, ids, weights, k, inter, K, h, residual, counter, router_every_block,
                            stream);
}

bool quant_decode_fused_from_env() {
  static const bool on = env_choice("MOEBENCH_QUANT_FUSED", {0, 1}, 1) == 1;
  return on;
}

void quant_moe_down_combine(const QuantExperts& w, const bf16* h, const int32_t* ids, const float* weights, int n_pairs,
                            int k, int N, int K, int n_experts, float* out, bool ids_early, cudaStream_t stream,
                            int pf, int var, int tiles) {
  MB_NVTX_RANGE("quant_moe_down_combine");
  check_args(w, h, n_pairs, N, K, n_experts, k);
  if (n_pairs % k != 0) fail_msg(msg("quant_moe_down_combine: ", n_pairs, " pairs is not a multiple of k ", k));
  if (tiles < 0 || tiles > 2) fail_msg(msg("quant_moe_down_combine: ", tiles, " tiles a block, expected 0 (the default), 1 or 2"));
  auto run = [&](auto f_c) {
    constexpr QuantFormat F = decltype(f_c)::value;
    const int passes = pf >= 0 ? pf : prefetch_passes<F>(kDefaultQuantGemvShape);
    int dflt = default_variant(F, QuantLaunch::down_combine);
    // One token at the tile kernel's 4-warp shape: the exact warp kernel, the same bits.
    if (var < 0 && n_pairs == k && quant_rows_down_combine_takes(k) &&
        default_warps<F>(static_cast<int>(ceil_div(N, kTileRows))) == 4 &&
        exact_default(F, QuantLaunch::down_combine) != 0)
      dflt = exact_default(F, QuantLaunch::down_combine);
    int v = inner_variant(var, dflt);
    if (is_warp_variant(v)) {
      if (quant_rows_down_combine_takes(k)) {
        quant_rows_down_combine(w, h, ids, weights, n_pairs, k, N, K, out, ids_early, v, stream);
        return;
      }
      v = 0;  // a top-k that does not split 8 warps: the tile kernel
    }
    launch_down_combine<F>(w, h, ids, weights, n_pairs, k, N, K, out, passes,
                           F == QuantFormat::int4 && w.int4_paired ? v | kVarPaired : v, ids_early,
                           tiles > 0 ? tiles : batch_tiles(n_pairs, n_experts), stream);
  };
  for_expert_format(w.format, "quant_moe_down_combine", run);
}

void quant_gemv(QuantFormat f, const uint8_t* q, const uint8_t* scale, const bf16* x, int n, int in, int out, float* y,
                bool accumulate, cudaStream_t stream) {
  MB_NVTX_RANGE("quant_gemv");
  if (n <= 0 || out <= 0) return;
  if (n > kTileCols || in <= 0 || in % 16 != 0 || !aligned16(x) || !aligned16(q))
    fail_msg(msg("quant_gemv: needs 1..", kTileCols, " rows (got ", n, "), in % 16 == 0 (got ", in,
                 ") and 16-byte aligned x and weights"));
  switch (f) {
    case QuantFormat::int8:
      launch<QuantFormat::int8>(QuantExperts{}, q, scale, x, false, nullptr, n, 1, out, in, 1, y, accumulate,
                                QuantGemvShape{}, stream);
      break;
    case QuantFormat::fp8:
      launch<QuantFormat::fp8>(QuantExperts{}, q, scale, x, false, nullptr, n, 1, out, in, 1, y, accumulate,
                               QuantGemvShape{}, stream);
      break;
    default:
      fail_msg(msg("quant_gemv: format ", quant_format_name(f), ", expected int8 or fp8 (a quantised weight_dtype)"));
  }
  CUDA_CHECK_LAUNCH("quant_gemv");
}

void gemv_tc(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool accumulate, cudaStream_t stream) {
  MB_NVTX_RANGE("gemv_tc");
  if (n <= 0 || out <= 0) return;
  if (n > kGemvMaxRows || in % 8 != 0 || !aligned16(x) || !aligned16(w))
    fail_msg(msg("cuda::gemv_tc: needs n <= ", kGemvMaxRows, " (got ", n, "), in % 8 == 0 (got ", in,
                 ") and 16-byte aligned x and w"));
  launch<QuantFormat::bf16>(QuantExperts{}, reinterpret_cast<const uint8_t*>(w), nullptr, x, false, nullptr, n, 1, out, in, 1,
                            y, accumulate, QuantGemvShape{}, stream);
  CUDA_CHECK_LAUNCH("gemv_tc");
}

}  // namespace moebench::cuda
