// gemv_core.cuh: the inner loops of the GEMV family. gemv_warp (CUDA cores, fp32 FMAs)
// serves the bf16 GEMV (linear.cu), the fused SwiGLU gate/up (swiglu.cu) and the fused
// MoE decode kernels (moe_fused.cu); the tensor-core tile below (mma_bf16_16x8x16) serves
// the dequantising GEMV (quant_gemv.cu). silu() is the one SwiGLU activation of them all.
//
// One warp computes R weight rows x M activation rows. Each lane streams 16-byte
// chunks (8 bf16) of its R rows, U chunks deep, so R*U independent 16-byte loads are in
// flight before the first FMA; weights bypass L1 (read once), activations are read
// through L1/L2 (reused by every warp). Partial sums stay per lane; the caller reduces.
#pragma once
#include "engine/cuda/common.cuh"

namespace moebench::cuda::detail {

constexpr int kGemvWarps = 8;  // 256 threads per block

// The SwiGLU activation, fp32 (engine/ops/swiglu.cpp's twin).
__device__ __forceinline__ float silu(float a) { return a / (1.0f + __expf(-a)); }

constexpr int kMaxSlotPairs = 64;  // pairs (tokens x top_k) the decode kernels over the selected experts take
// Warp-level pair bookkeeping of the fused MoE kernels (one warp, all 32 lanes): lane l
// holds pair 32 w + l of ids[0 .. n_pairs) as id[w] (-1 past the end), and firsts[w] has
// bit l set where that pair is its expert's first use (__match_any_sync inside a word,
// shuffles against the words before). One load of ids per lane, no barrier.
constexpr int kSlotWords = kMaxSlotPairs / 32;
__device__ __forceinline__ void pair_first_uses(const int32_t* ids, int n_pairs, int (&id)[kSlotWords],
                                                unsigned (&firsts)[kSlotWords]) {
  const unsigned full = 0xffffffffu, lt = (1u << (threadIdx.x & 31)) - 1u;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int w = 0; w < kSlotWords; ++w) id[w] = 32 * w + lane < n_pairs ? ids[32 * w + lane] : -1;
#pragma unroll
  for (int w = 0; w < kSlotWords; ++w) {
    if (32 * w >= n_pairs) {  // warp-uniform: no pair in this word
      firsts[w] = 0;
      continue;
    }
    const unsigned peers = __match_any_sync(full, id[w]);  // every lane takes part
    // A negative id is no expert: the pair is computed on another GPU (expert parallelism).
    bool first = 32 * w + lane < n_pairs && id[w] >= 0 && (peers & lt) == 0;
#pragma unroll
    for (int v = 0; v < w; ++v)
      for (int q = 0; q < 32; ++q) first &= __shfl_sync(full, id[v], q) != id[w];  // padding (-1) matches no id
    firsts[w] = __ballot_sync(full, first);
  }
}

// The expert of the slot-th first use (in pair order), -1 when fewer experts are used.
__device__ __forceinline__ int nth_first_use(const int (&id)[kSlotWords], const unsigned (&firsts)[kSlotWords],
                                             int slot) {
#pragma unroll
  for (int w = 0; w < kSlotWords; ++w) {
    const int here = __popc(firsts[w]);
    if (slot < here) {
      unsigned m = firsts[w];
      for (int i = 0; i < slot; ++i) m &= m - 1;  // drop the lower first uses
      return __shfl_sync(0xffffffffu, id[w], __ffs(m) - 1);
    }
    slot -= here;
  }
  return -1;
}

// The pairs that chose expert e, in pair order, at most M of them, into pair[] (and, when
// tok is given, pair / k into tok[]); returns how many chose e (may exceed M).
template <int M>
__device__ __forceinline__ int pairs_of_expert(const int (&id)[kSlotWords], int n_pairs, int e, int k, int* pair,
                                               int* tok) {
  const unsigned lt = (1u << (threadIdx.x & 31)) - 1u;
  int total = 0;
#pragma unroll
  for (int w = 0; w < kSlotWords; ++w) {
    const int p = 32 * w + (threadIdx.x & 31);
    const bool mine = e >= 0 && p < n_pairs && id[w] == e;
    const unsigned b = __ballot_sync(0xffffffffu, mine);
    const int at = total + __popc(b & lt);
    if (mine && at < M) {
      pair[at] = p;
      if (tok) tok[at] = p / k;
    }
    total += __popc(b);
  }
  return total;
}

// Decode kernels over the selected experts launch one grid row per *used* expert slot
// (min(pairs, experts) rows, not one per expert: with 1 token and top-2 of 8, no block
// is launched only to find that nobody chose its expert). Block-wide (every thread calls
// it, blockDim >= 32): the slot-th distinct expert of ids[0 .. n_pairs) in first-use
// order, -1 when fewer experts are used. n_pairs <= kMaxSlotPairs. Warp 0 finds the first
// uses (pair_first_uses), the block waits once. s_ids: the caller's shared array, holding
// ids[0 .. n_pairs) on return (so that the caller gathers its pairs from shared memory,
// not with another trip to global memory).
__device__ __forceinline__ int used_expert(const int32_t* ids, int n_pairs, int slot, int* s_ids) {
  __shared__ int s_e;
  if (threadIdx.x < 32) {  // warp 0 (pair_first_uses): one load of ids per lane, then one barrier
    int id[kSlotWords];
    unsigned firsts[kSlotWords];
    pair_first_uses(ids, n_pairs, id, firsts);
#pragma unroll
    for (int w = 0; w < kSlotWords; ++w)
      if (32 * w + static_cast<int>(threadIdx.x) < n_pairs) s_ids[32 * w + threadIdx.x] = id[w];
    const int e = nth_first_use(id, firsts, slot);
    if (threadIdx.x == 0) s_e = e;
  }
  __syncthreads();
  return s_e;
}

// The gate/up launches' guess of their slot's expert before the router has chosen
// (ops.cuh ExpertPredict): lane j < n_experts of each warp reads score j (L2, not L1: the
// scores of another layer may sit in L1); returns the expert ranked slot-th (ties: the
// lower index first), or -1. Every lane of the warp must call it.
__device__ __forceinline__ int predicted_expert(const float* pred, int n_experts, int slot) {
  const int lane = threadIdx.x & 31;
  const float v = lane < n_experts ? __ldcg(pred + lane) : 0.0f;
  int rank = 0;
  for (int j = 0; j < n_experts; ++j) {
    const float o = __shfl_sync(0xffffffffu, v, j);
    rank += (o > v || (o == v && j < lane)) ? 1 : 0;
  }
  const unsigned hit = __ballot_sync(0xffffffffu, lane < n_experts && rank == slot);
  return hit ? __ffs(static_cast<int>(hit)) - 1 : -1;
}

// That prefetch for one gate/up block (warp 0, lanes 0 and 1): the block's rows
// row0 .. row0 + rows - 1 of w1 and of w3 of the guessed expert are two contiguous ranges;
// L2 is asked for the first `bytes` of each, one bulk request a range (few large requests:
// an SM's copy engine issues many small ones slowly).
__device__ __forceinline__ void prefetch_predicted_block(const float* pred, int n_experts, int slot,
                                                         const __nv_bfloat16* const* w1s,
                                                         const __nv_bfloat16* const* w3s, int row0, int rows, int N,
                                                         int K, unsigned bytes) {
  if (threadIdx.x >= 32) return;
  const int e = predicted_expert(pred, n_experts, slot);
  const int lane = threadIdx.x;
  if (e < 0 || lane >= 2 || row0 >= N) return;
  const __nv_bfloat16* w = lane == 0 ? w1s[e] : w3s[e];
  const unsigned range = static_cast<unsigned>(min(rows, N - row0)) * static_cast<unsigned>(K) * 2u;
  if (w) l2_prefetch_bulk(w + static_cast<int64_t>(row0) * K, min(bytes, range));
}

// used_expert and the gather of the pairs that chose it, for the fused gate/up kernel,
// with one block-wide barrier: warp 0 does the bookkeeping above, the block waits once.
// Returns the slot-th used expert (-1 when fewer are used) and sets cnt (<= M: the pairs
// in s_tok / s_pair) for every thread. The same choice as used_expert followed by a serial
// gather, whose several barriers and per-thread scans the blocks of many pairs (8 tokens:
// 16 pairs) waited on before their first weight load.
template <int M>
__device__ __forceinline__ int used_expert_pairs(const int32_t* ids, int n_pairs, int k, int slot, int (&s_tok)[M],
                                                 int (&s_pair)[M], int& cnt) {
  __shared__ int s_e, s_cnt;
  if (threadIdx.x < 32) {
    int id[kSlotWords];
    unsigned firsts[kSlotWords];
    pair_first_uses(ids, n_pairs, id, firsts);
    const int e = nth_first_use(id, firsts, slot);
    const int total = pairs_of_expert<M>(id, n_pairs, e, k, s_pair, s_tok);
    if (threadIdx.x == 0) {
      s_e = e;
      s_cnt = min(total, M);
    }
  }
  __syncthreads();
  cnt = s_cnt;
  return s_e;
}

// Every used expert in first-use order with its pairs (in pair order, at most M each), for
// the grouped down kernel; warp 0 only (the caller's barrier follows): expert[u], cnt[u]
// (<= M), pair[u][0 .. cnt[u]); returns the number used.
template <int M>
__device__ __forceinline__ int group_pairs(const int32_t* ids, int n_pairs, int* expert, int* cnt, int (*pair)[M]) {
  int id[kSlotWords];
  unsigned firsts[kSlotWords];
  pair_first_uses(ids, n_pairs, id, firsts);
  int used = 0;
#pragma unroll
  for (int w = 0; w < kSlotWords; ++w) used += __popc(firsts[w]);
  for (int u = 0; u < used; ++u) {
    const int e = nth_first_use(id, firsts, u);
    const int total = pairs_of_expert<M>(id, n_pairs, e, 0, pair[u], nullptr);
    if ((threadIdx.x & 31) == 0) {
      expert[u] = e;
      cnt[u] = min(total, M);
    }
  }
  return used;
}

// d (16 x 8, fp32) += A (16 x 16, bf16) . B (16 x 8, bf16) on the tensor cores, one warp.
// Lane l = 4 * gr + t holds (PTX fragment layout of mma.m16n8k16, .bf16):
//   a0: A[gr][2t, 2t+1]   a1: A[gr+8][2t, 2t+1]   a2: A[gr][2t+8, 2t+9]   a3: A[gr+8][2t+8, 2t+9]
//   b0: B[2t, 2t+1][gr]   b1: B[2t+8, 2t+9][gr]
//   d:  D[gr][2t], D[gr][2t+1], D[gr+8][2t], D[gr+8][2t+1]
// (each 32-bit register holds two bf16, the lower k in the low half). The k index only
// pairs A with B, so a caller may map the 16 slots of k to any 16 inputs as long as it
// feeds A and B the same way: the slots {2t, 2t+1, 2t+8, 2t+9} belong to lanes t of every
// group, which lets a lane bring the weights and activations of its own 16-byte chunk.
// Products of bf16 are exact in fp32; sums are fp32.
#define MB_MMA_16X8X16(NAME, T)                                                                                  \
  __device__ __forceinline__ void NAME(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, \
                                       uint32_t b1) {                                                              \
    asm("mma.sync.aligned.m16n8k16.row.col.f32." T "." T ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "             \
        "{%0,%1,%2,%3};"                                                                                           \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                                           \
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));                                                   \
  }
MB_MMA_16X8X16(mma_bf16_16x8x16, "bf16")
// The same tile with fp16 operands (the exact warp kernels' fp16 form, quant_codes.cuh Codes16).
MB_MMA_16X8X16(mma_f16_16x8x16, "f16")
#undef MB_MMA_16X8X16

// One iteration of a warp at chunk c0 (its lane's chunks c0 + 32 u, u < U): the loads of
// R rows' chunks (past K8: not loaded), then their products with the M activation rows,
// added to acc in chunk order.
template <int R, int U>
__device__ __forceinline__ void gemv_loads(const __nv_bfloat16* const (&w)[R], int c0, int K8, bf16x8 (&wv)[U][R]) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int c = c0 + 32 * u;
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (c < K8) wv[u][r] = load8_stream(w[r] + 8 * static_cast<int64_t>(c));
  }
}
template <int R, int M, int U>
__device__ __forceinline__ void gemv_fmas(const bf16x8 (&wv)[U][R], const __nv_bfloat16* const (&x)[M], int m, int c0,
                                          int K8, float (&acc)[R][M]) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int c = c0 + 32 * u;
    if (c >= K8) break;
#pragma unroll
    for (int mm = 0; mm < M; ++mm) {
      if (mm >= m) break;
      float xf[8];
      to_float8(load8(x[mm] + 8 * static_cast<int64_t>(c)), xf);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float wf[8];
        to_float8(wv[u][r], wf);
        acc[r][mm] += dot8(wf, xf);
      }
    }
  }
}

// w[r]: row r's start (16-byte aligned, K8 chunks); x[mm]: activation row mm (16-byte aligned).
// acc[r][mm] += partial dot over this lane's chunks. PF > 0: the warp also asks L2 for
// the chunks PF iterations ahead of its loads (lane r < R one bulk prefetch of row r's
// window per iteration; the first PF windows before the first load), so more bytes are
// in flight than the registers hold; the arithmetic, and so the bits, do not change.
template <int R, int M, int U, int PF = 0>
__device__ __forceinline__ void gemv_warp(const __nv_bfloat16* const (&w)[R], const __nv_bfloat16* const (&x)[M],
                                          int m, int K8, int lane, float (&acc)[R][M]) {
  constexpr int kWindow = 32 * U;  // chunks of a row one iteration of the warp takes
  const __nv_bfloat16* pw = w[0];  // lane r < R prefetches row r (constant indices: no local copy of w)
  if constexpr (PF > 0) {
#pragma unroll
    for (int r = 1; r < R; ++r)
      if (lane == r) pw = w[r];
    if (lane < R && kWindow < K8)
      l2_prefetch_bulk(pw + 8 * kWindow, 16u * static_cast<unsigned>(min(K8, (PF + 1) * kWindow) - kWindow));
  }
  for (int c0 = lane; c0 < K8; c0 += 32 * U) {
    if constexpr (PF > 0) {
      const int ahead = c0 - lane + PF * kWindow;  // window PF iterations ahead of this one
      if (c0 != lane && lane < R && ahead < K8)
        l2_prefetch_bulk(pw + 8 * static_cast<int64_t>(ahead), 16u * static_cast<unsigned>(min(kWindow, K8 - ahead)));
    }
    bf16x8 wv[U][R];
    gemv_loads<R, U>(w, c0, K8, wv);
    gemv_fmas<R, M, U>(wv, x, m, c0, K8, acc);
  }
}

// gemv_dot (below) with the first iteration's chunks (c0 = lane) loaded beforehand by
// gemv_loads(w, lane, K8, first): a caller issues them before its programmatic wait
// (pdl.cuh), while the kernel before still runs. The same sums in the same order, so the
// same bits.
template <int R, int M, int U>
__device__ __forceinline__ void gemv_dot_first(const __nv_bfloat16* const (&w)[R], const __nv_bfloat16* const (&x)[M],
                                               int m, int K8, int lane, const bf16x8 (&first)[U][R],
                                               float (&acc)[R][M]) {
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mm = 0; mm < M; ++mm) acc[r][mm] = 0;
  gemv_fmas<R, M, U>(first, x, m, lane, K8, acc);
  for (int c0 = lane + 32 * U; c0 < K8; c0 += 32 * U) {
    bf16x8 wv[U][R];
    gemv_loads<R, U>(w, c0, K8, wv);
    gemv_fmas<R, M, U>(wv, x, m, c0, K8, acc);
  }
}

// The whole dot product of a warp's R rows with M activation rows: acc = 0, then
// gemv_warp (the prologue every GEMV kernel of the family shares).
template <int R, int M, int U, int PF = 0>
__device__ __forceinline__ void gemv_dot(const __nv_bfloat16* const (&w)[R], const __nv_bfloat16* const (&x)[M], int m,
                                         int K8, int lane, float (&acc)[R][M]) {
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mm = 0; mm < M; ++mm) acc[r][mm] = 0;
  gemv_warp<R, M, U, PF>(w, x, m, K8, lane, acc);
}

// w[r] = the start of weight row min(row0 + r, N - 1) of a row-major (N, K) matrix: rows
// past the end read the last row (their results are never written).
template <int R>
__device__ __forceinline__ void clamped_rows(const __nv_bfloat16* w, int row0, int N, int K,
                                             const __nv_bfloat16* (&wr)[R]) {
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w + static_cast<int64_t>(min(row0 + r, N - 1)) * K;
}

// (the bf16 GEMV's kernels, linear.cu, and o_proj with the norm + router after it,
// o_proj_router.cu.) One warp's R rows row0 .. row0 + R - 1 of y (M activation rows, m used) of an (N, K)
// row-major W: U chunks of 16 bytes deep per row (R * U loads in flight per lane, gemv_core.cuh),
// rows past N read row N - 1 and are not written. Per row the same lane order whatever R,
// U or the block size, so every launch shape gives the same bits.
template <int M, int R, int U, int PF = 0>
__device__ __forceinline__ void gemv_rows(const __nv_bfloat16* x, const __nv_bfloat16* w, float* y, int m, int K, int N,
                                          int row0, int lane, bool accumulate) {
  const __nv_bfloat16* wr[R];
  clamped_rows<R>(w, row0, N, K, wr);
  const __nv_bfloat16* xr[M];
#pragma unroll
  for (int mm = 0; mm < M; ++mm) xr[mm] = x + static_cast<int64_t>(min(mm, m - 1)) * K;
  float acc[R][M];
  gemv_dot<R, M, U, PF>(wr, xr, m, K / 8, lane, acc);
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mm = 0; mm < M; ++mm) {
      const float s = warp_sum(acc[r][mm]);
      if (lane == 0 && mm < m && row0 + r < N) {
        float* yp = y + static_cast<int64_t>(mm) * N + row0 + r;
        *yp = accumulate ? *yp + s : s;
      }
    }
}

// Rows per warp for an output of `rows`: more rows per warp (more loads in flight) when
// there are enough rows to keep ~2 blocks per SM busy anyway.
inline int gemv_rows_per_warp(int rows) {
  if (rows >= kGemvWarps * 4 * 264) return 4;
  if (rows >= kGemvWarps * 2 * 132) return 2;
  return 1;
}

}  // namespace moebench::cuda::detail
