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

// Decode kernels over the selected experts launch one grid row per *used* expert slot
// (min(pairs, experts) rows, not one per expert: with 1 token and top-2 of 8, no block
// is launched only to find that nobody chose its expert). Block-wide (every thread calls
// it): the slot-th distinct expert of ids[0 .. n_pairs) in first-use order, -1 when
// fewer experts are used. n_pairs <= kMaxSlotPairs. Each thread tests its own pairs for
// a first use (in parallel: no thread walks all pairs against all earlier ones before
// the block may start its loads); the first uses form a 64-bit mask in pair order.
// s_ids: the caller's shared array, holding ids[0 .. n_pairs) on return (so that the
// caller gathers its pairs from shared memory, not with another trip to global memory).
constexpr int kMaxSlotPairs = 64;
__device__ __forceinline__ int used_expert(const int32_t* ids, int n_pairs, int slot, int* s_ids) {
  __shared__ unsigned s_first[kMaxSlotPairs / 32];
  if (threadIdx.x < kMaxSlotPairs / 32) s_first[threadIdx.x] = 0;
  for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) s_ids[p] = ids[p];
  __syncthreads();
  for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) {
    bool first = true;
    for (int q = 0; q < p; ++q) first &= s_ids[q] != s_ids[p];
    if (first) atomicOr(&s_first[p >> 5], 1u << (p & 31));
  }
  __syncthreads();
#pragma unroll
  for (int word = 0; word < kMaxSlotPairs / 32; ++word) {
    unsigned m = s_first[word];
    const int here = __popc(m);
    if (slot < here) {
      for (int i = 0; i < slot; ++i) m &= m - 1;  // drop the lower first uses
      return s_ids[32 * word + __ffs(m) - 1];
    }
    slot -= here;
  }
  return -1;
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
__device__ __forceinline__ void mma_bf16_16x8x16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                 uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// w[r]: row r's start (16-byte aligned, K8 chunks); x[mm]: activation row mm (16-byte aligned).
// acc[r][mm] += partial dot over this lane's chunks.
template <int R, int M, int U>
__device__ __forceinline__ void gemv_warp(const __nv_bfloat16* const (&w)[R], const __nv_bfloat16* const (&x)[M],
                                          int m, int K8, int lane, float (&acc)[R][M]) {
  for (int c0 = lane; c0 < K8; c0 += 32 * U) {
    bf16x8 wv[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (c < K8) wv[u][r] = load8_stream(w[r] + 8 * static_cast<int64_t>(c));
    }
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
}

// The whole dot product of a warp's R rows with M activation rows: acc = 0, then
// gemv_warp (the prologue every GEMV kernel of the family shares).
template <int R, int M, int U>
__device__ __forceinline__ void gemv_dot(const __nv_bfloat16* const (&w)[R], const __nv_bfloat16* const (&x)[M], int m,
                                         int K8, int lane, float (&acc)[R][M]) {
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mm = 0; mm < M; ++mm) acc[r][mm] = 0;
  gemv_warp<R, M, U>(w, x, m, K8, lane, acc);
}

// w[r] = the start of weight row min(row0 + r, N - 1) of a row-major (N, K) matrix: rows
// past the end read the last row (their results are never written).
template <int R>
__device__ __forceinline__ void clamped_rows(const __nv_bfloat16* w, int row0, int N, int K,
                                             const __nv_bfloat16* (&wr)[R]) {
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w + static_cast<int64_t>(min(row0 + r, N - 1)) * K;
}

// Rows per warp for an output of `rows`: more rows per warp (more loads in flight) when
// there are enough rows to keep ~2 blocks per SM busy anyway.
inline int gemv_rows_per_warp(int rows) {
  if (rows >= kGemvWarps * 4 * 264) return 4;
  if (rows >= kGemvWarps * 2 * 132) return 2;
  return 1;
}

}  // namespace moebench::cuda::detail
