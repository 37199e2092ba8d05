// decode_attention.cu: see decode_attention.h.
#include "engine/cuda/decode_attention.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/pdl.cuh"
#include "engine/cuda/split_merge.cuh"

namespace moebench::cuda {

namespace {
constexpr int kWarps = 8;
constexpr int kSplitKeys = 64;  // fewest keys a split takes: one round of 8 warps x 8 keys

// Splits a token attending len keys uses (the rest of the grid's splits return at once).
__device__ __forceinline__ int used_splits(int len, int n_splits) {
  return n_splits > 1 ? min(n_splits, static_cast<int>(ceil_div(len, kSplitKeys))) : 1;
}

// P contiguous bf16 (P = 1, 2, 4; the address aligned to 2P bytes) as floats.
template <int P>
__device__ __forceinline__ void load_dims(const bf16* p, float f[P]) {
  if constexpr (P == 4) {
    const uint2 r = *reinterpret_cast<const uint2*>(p);
    __nv_bfloat162 a, b;
    memcpy(&a, &r.x, 4);
    memcpy(&b, &r.y, 4);
    const float2 fa = __bfloat1622float2(a), fb = __bfloat1622float2(b);
    f[0] = fa.x;
    f[1] = fa.y;
    f[2] = fb.x;
    f[3] = fb.y;
  } else if constexpr (P == 2) {
    const float2 fa = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
    f[0] = fa.x;
    f[1] = fa.y;
  } else {
    f[0] = __bfloat162float(*p);
  }
}

// Per (token, block of heads): the used splits that have written their partials, for
// merge_here launches (the last to count merges and resets it, so launches in a stream and
// graph replays follow each other; one such launch runs on a device at a time).
constexpr int kMergeCounters = 4096;
__device__ unsigned int g_merge_done[kMergeCounters];

// AttentionHandoff's level on this host thread (decode_attention.h).
thread_local int t_handoff = 0;

// Per-head q/k RMSNorm and RoPE inside the attention launch (decode_attention_qk_norm),
// or RoPE alone (decode_attention_folded): the projections of the new token and the
// norms' weights (null for RoPE alone).
struct QkNormRope {
  const float* k;  // (m, n_kv, head_dim) fp32, not normed or rotated
  const float* v;
  const bf16* wq;  // (head_dim)
  const bf16* wk;
  float theta, eps;
};

// What the attention launch does with the new token's q and k: QK_NONE (q rotated, the new
// key and value in the pool already), QK_NORM_ROPE (per-head norm and RoPE), QK_ROPE (RoPE).
constexpr int QK_NONE = 0, QK_NORM_ROPE = 1, QK_ROPE = 2;

// One head of 32 P fp32 values at src, normed and rotated, this lane's dims lane P ..
// lane P + P - 1 into out: qk_norm_rope_kv_store_paged_kernel's arithmetic (family_ops.cu)
// bit for bit: the sum of squares lane-strided (dims lane, lane + 32, ...) then warp_sum,
// (x * inv) * w, rope_rotate of the pair (j, j + head_dim / 2), whose other half lane ^ 16
// holds. w: this lane's norm weights (dims lane P + pp), ang: its angles
// (rope_head_angles), both taken before the wait. Warp-wide.
template <int P>
__device__ __forceinline__ void norm_rope_head(const float* __restrict__ src, const float (&w)[P],
                                               const RopeAngle (&ang)[P], int lane, float eps, float (&out)[P]) {
  constexpr int HD = 32 * P;
  float ss = 0;
#pragma unroll
  for (int t = 0; t < P; ++t) ss = fmaf(src[lane + 32 * t], src[lane + 32 * t], ss);
  ss = warp_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(HD) + eps);
#pragma unroll
  for (int pp = 0; pp < P; ++pp) {
    const float nv = (src[lane * P + pp] * inv) * w[pp];
    const float other = __shfl_xor_sync(0xffffffffu, nv, 16);
    out[pp] = lane < 16 ? rope_rotate(nv, other, ang[pp]).x : rope_rotate(other, nv, ang[pp]).y;
  }
}

// This lane's RoPE angles of one head of 32 P dims at position p: dims lane P + pp pair with
// the other half's dims in lane ^ 16 (rope_kv_store_paged_kernel's pair (j, j + head_dim / 2),
// the angle of j). Only the position is needed, so they are taken before the wait.
template <int P>
__device__ __forceinline__ void rope_head_angles(float p, int lane, float theta, RopeAngle (&ang)[P]) {
  constexpr int HD = 32 * P, half = HD / 2;
#pragma unroll
  for (int pp = 0; pp < P; ++pp) {
    const int d = lane * P + pp;
    ang[pp] = rope_angle(p, lane < 16 ? d : d - half, HD, theta);
  }
}

// One head of 32 P fp32 values at src rotated, this lane's dims into out: rope_rotate of the
// pair as rope_kv_store_paged_kernel does it (the same bits). Warp-wide.
template <int P>
__device__ __forceinline__ void rope_head(const float* __restrict__ src, int lane, const RopeAngle (&ang)[P],
                                          float (&out)[P]) {
#pragma unroll
  for (int pp = 0; pp < P; ++pp) {
    const float x = src[lane * P + pp];
    const float other = __shfl_xor_sync(0xffffffffu, x, 16);
    out[pp] = lane < 16 ? rope_rotate(x, other, ang[pp]).x : rope_rotate(other, x, ang[pp]).y;
  }
}

// grid (m, n_heads / hpb, n_splits), block kWarps x 32: each block takes hpb query heads of
// one KV head (hpb = n_heads / n_kv: the whole group; or a divisor of it, so that a
// group of many heads is spread over more blocks: a head's arithmetic does not depend on
// the block it is in). G >= hpb (a power of two), head_dim = 32 P, K keys per warp per
// round. merge_here: the last used split of a (token, block of heads) to finish merges
// the splits of its heads itself (merge_splits, the merge kernel's arithmetic: the same
// bits), so no merge kernel is launched.
// QK_NORM_ROPE (one head per block) and QK_ROPE: q and the new token's key and value come
// as the projections (nqr), normed and rotated (or only rotated) here; the new key and
// value are used from registers (rounded to bf16 as the pool holds them) and the first
// block of each KV head (split 0) stores them into the pool at the row the block table
// gives the token's position.
template <int G, int P, int K, int QK = QK_NONE>
__global__ void __launch_bounds__(kWarps * 32)
    decode_attention_kernel(const float* __restrict__ q, bf16* __restrict__ kp, bf16* __restrict__ vp,
                            const int32_t* __restrict__ tables, int table_width, const int32_t* __restrict__ seq_row,
                            const int32_t* __restrict__ pos, bf16* __restrict__ out, float* __restrict__ part,
                            int n_heads, int n_kv, int hpb, int block_size, float scale, bool merge_here,
                            bool early_trigger, QkNormRope nqr) {
  static_assert(QK != QK_NORM_ROPE || G == 1, "the folded q/k norm takes one head per block");
  static_assert(G <= kWarps, "the last split merges a head per warp");
  constexpr bool QKN = QK != QK_NONE;
  constexpr int HD = 32 * P;
  __shared__ float Ws[kWarps][G][HD + 2];  // per warp and head: acc (HD), max, sum
  const int i = blockIdx.x, split = blockIdx.z, n_splits = gridDim.z;
  const int group = n_heads / n_kv, blocks_per_kv = group / hpb;
  const int g = blockIdx.y / blocks_per_kv;                                 // the KV head
  const int head0 = g * group + (blockIdx.y % blocks_per_kv) * hpb;         // the block's first query head
  // Before the wait: the step's inputs (positions, sequence rows, block tables: copied
  // before its first kernel), so that after it only q and the K/V rows are loaded.
  const int len = pos[i] + 1;
  const int32_t* table = tables + static_cast<int64_t>(seq_row[i]) * table_width;
  RopeAngle ang[P];  // QK_ROPE: this lane's angles at the new token's position
  if constexpr (QKN) rope_head_angles<P>(static_cast<float>(len - 1), threadIdx.x & 31, nqr.theta, ang);
  float wq[P], wk[P];  // QK_NORM_ROPE: this lane's q and k norm weights
  if constexpr (QK == QK_NORM_ROPE)
#pragma unroll
    for (int pp = 0; pp < P; ++pp) {
      wq[pp] = __bfloat162float(nqr.wq[(threadIdx.x & 31) * P + pp]);
      wk[pp] = __bfloat162float(nqr.wk[(threadIdx.x & 31) * P + pp]);
    }
  const int used = used_splits(len, n_splits);
  const int chunk = static_cast<int>(ceil_div(len, used));
  const int k_begin = split * chunk, k_end = min(len, k_begin + chunk);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t kv_stride = static_cast<int64_t>(n_kv) * HD;
  const int64_t head_off = static_cast<int64_t>(g) * HD + lane * P;
  // The K key and value rows of the round at t0 (past the end: a valid row, not used), all
  // loads issued before any is used.
  auto load_round = [&](int t0, float (&kf)[K][P], float (&vf)[K][P]) {
    const int nk = min(K, k_end - t0);
#pragma unroll
    for (int u = 0; u < K; ++u) {
      const int t = u < nk ? t0 + u : t0;
      const int64_t row =
          (static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size) * kv_stride + head_off;
      load_dims<P>(kp + row, kf[u]);
      load_dims<P>(vp + row, vf[u]);
    }
  };
  // QK_ROPE, QK_NORM_ROPE: no earlier kernel of the step writes this layer's pool (the new
  // token's row comes from the projections below), so the warp's first round is loaded
  // before the wait.
  const int first_t0 = k_begin + warp * K;
  float kf0[K][P], vf0[K][P];
  if constexpr (QKN)
    if (split < used && first_t0 < k_end) load_round(first_t0, kf0, vf0);
  if (early_trigger) pdl_trigger();  // AttentionHandoff >= 2: the next launch reads only weights before its wait
  pdl_wait();                        // q and the new key/value come from the previous kernel
  if (!early_trigger) pdl_trigger();
  if (split >= used) return;  // block-uniform

  float qr[G][P];
  if constexpr (!QKN) {
#pragma unroll
    for (int h = 0; h < G; ++h)
#pragma unroll
      for (int p = 0; p < P; ++p)
        qr[h][p] = h < hpb ? q[(static_cast<int64_t>(i) * n_heads + head0 + h) * HD + lane * P + p] : 0.0f;
  }
  float knew[P], vnew[P];  // QKN: the new token's key and value, as the pool holds them
  if constexpr (QKN) {
    const int64_t in_kv = static_cast<int64_t>(i) * kv_stride + static_cast<int64_t>(g) * HD;
    if constexpr (QK == QK_NORM_ROPE) {
      norm_rope_head<P>(q + (static_cast<int64_t>(i) * n_heads + head0) * HD, wq, ang, lane, nqr.eps, qr[0]);
      norm_rope_head<P>(nqr.k + in_kv, wk, ang, lane, nqr.eps, knew);
    } else {
#pragma unroll
      for (int h = 0; h < G; ++h) {
        if (h < hpb) rope_head<P>(q + (static_cast<int64_t>(i) * n_heads + head0 + h) * HD, lane, ang, qr[h]);  // warp-uniform
        else
#pragma unroll
          for (int p = 0; p < P; ++p) qr[h][p] = 0.0f;
      }
      rope_head<P>(nqr.k + in_kv, lane, ang, knew);
    }
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const bf16 kb = __float2bfloat16_rn(knew[p]), vb = __float2bfloat16_rn(nqr.v[in_kv + lane * P + p]);
      knew[p] = __bfloat162float(kb);
      vnew[p] = __bfloat162float(vb);
      if (split == 0 && blockIdx.y % blocks_per_kv == 0 && warp == 0) {  // the pool's copy
        const int t = len - 1;
        const int64_t row =
            (static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size) * kv_stride + head_off;
        kp[row + p] = kb;
        vp[row + p] = vb;
      }
    }
  }

  float mx[G], l[G], acc[G][P];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    mx[h] = -INFINITY;
    l[h] = 0;
#pragma unroll
    for (int p = 0; p < P; ++p) acc[h][p] = 0;
  }

  for (int t0 = k_begin + warp * K; t0 < k_end; t0 += kWarps * K) {
    const int nk = min(K, k_end - t0);
    float kf[K][P], vf[K][P];
    if (QKN && t0 == first_t0) {
#pragma unroll
      for (int u = 0; u < K; ++u)
#pragma unroll
        for (int p = 0; p < P; ++p) {
          kf[u][p] = kf0[u][p];
          vf[u][p] = vf0[u][p];
        }
    } else {
      load_round(t0, kf, vf);
    }
    if constexpr (QKN) {  // the new token's row: this launch's own values, not the pool's (stored concurrently)
#pragma unroll
      for (int u = 0; u < K; ++u)
        if (u < nk && t0 + u == len - 1)
#pragma unroll
          for (int p = 0; p < P; ++p) {
            kf[u][p] = knew[p];
            vf[u][p] = vnew[p];
          }
    }
    float s[K][G];
#pragma unroll
    for (int u = 0; u < K; ++u)
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float d = 0;
#pragma unroll
        for (int p = 0; p < P; ++p) d = fmaf(qr[h][p], kf[u][p], d);
        s[u][h] = warp_sum(d) * scale;
      }
#pragma unroll
    for (int h = 0; h < G; ++h) {
      float mt = s[0][h];
#pragma unroll
      for (int u = 1; u < K; ++u)
        if (u < nk) mt = fmaxf(mt, s[u][h]);
      const float m_new = fmaxf(mx[h], mt);
      const float alpha = mx[h] == -INFINITY ? 0.0f : __expf(mx[h] - m_new);
      l[h] *= alpha;
#pragma unroll
      for (int p = 0; p < P; ++p) acc[h][p] *= alpha;
#pragma unroll
      for (int u = 0; u < K; ++u)
        if (u < nk) {
          const float pu = __expf(s[u][h] - m_new);
          l[h] += pu;
#pragma unroll
          for (int p = 0; p < P; ++p) acc[h][p] = fmaf(pu, vf[u][p], acc[h][p]);
        }
      mx[h] = m_new;
    }
  }

  // The warps' partials merged in warp order (deterministic).
#pragma unroll
  for (int h = 0; h < G; ++h) {
#pragma unroll
    for (int p = 0; p < P; ++p) Ws[warp][h][lane * P + p] = acc[h][p];
    if (lane == 0) {
      Ws[warp][h][HD] = mx[h];
      Ws[warp][h][HD + 1] = l[h];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < hpb * HD; e += blockDim.x) {
    const int h = e / HD, d = e % HD;
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, Ws[w][h][HD]);
    float L = 0, A = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (Ws[w][h][HD] == -INFINITY) continue;  // this warp saw no key
      const float f = __expf(Ws[w][h][HD] - M);
      L = fmaf(Ws[w][h][HD + 1], f, L);
      A = fmaf(Ws[w][h][d], f, A);
    }
    const int64_t qh = static_cast<int64_t>(i) * n_heads + head0 + h;
    split_result(part, out, used == 1, split, n_splits, static_cast<int64_t>(gridDim.x) * n_heads, qh, HD, d, M, L, A);
  }
  if (!merge_here || used == 1) return;  // block-uniform
  __shared__ bool s_last;
  const int64_t counter = static_cast<int64_t>(i) * gridDim.y + blockIdx.y;
  __threadfence();  // this block's partials reach L2 before its count does
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(&g_merge_done[counter], 1u) == static_cast<unsigned>(used) - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  if (hpb == 1) {
    merge_splits(part, out, static_cast<int64_t>(i) * n_heads + head0, used, n_splits,
                 static_cast<int64_t>(gridDim.x) * n_heads, HD);
  } else if (warp < hpb) {  // a head per warp (hpb <= G <= kWarps), its lanes over the dims
    merge_splits(part, out, static_cast<int64_t>(i) * n_heads + head0 + warp, used, n_splits,
                 static_cast<int64_t>(gridDim.x) * n_heads, HD, lane, 32);
  }
  if (threadIdx.x == 0) g_merge_done[counter] = 0;
}

// grid (m * n_heads), block 128: merges the used splits of one (token, head) in split
// order; nothing to do where one split was used (that block wrote the output).
__global__ void decode_attention_merge_kernel(const float* __restrict__ part, const int32_t* __restrict__ pos,
                                              bf16* __restrict__ out, int m, int n_heads, int hd, int n_splits,
                                              bool early_trigger) {
  const int64_t qh = blockIdx.x;
  const int i = static_cast<int>(qh / n_heads);
  const int len = pos[i] + 1;  // a step input (copied before the step's first kernel): before the wait
  if (early_trigger) pdl_trigger();  // AttentionHandoff >= 1: the next launch reads only weights before its wait
  pdl_wait();                        // the splits' partials come from the previous kernel
  if (!early_trigger) pdl_trigger();
  const int used = used_splits(len, n_splits);
  if (used == 1) return;
  merge_splits(part, out, qh, used, n_splits, static_cast<int64_t>(m) * n_heads, hd);
}

template <int G, int P>
void launch(const float* q, const bf16* kp, const bf16* vp, const int32_t* tables, int W, const int32_t* seq_row,
            const int32_t* pos, bf16* out, float* part, int n_splits, int m, int n_heads, int n_kv, int hpb, int bs,
            bool merge_here, cudaStream_t stream, const QkNormRope& nqr = {}) {
  constexpr int K = G >= 8 ? 4 : 8;  // registers: K x G scores per lane
  const dim3 grid(static_cast<unsigned>(m), static_cast<unsigned>(n_heads / hpb), static_cast<unsigned>(n_splits));
  const float scale = 1.0f / sqrtf(static_cast<float>(32 * P));
  // The pools are written only by the QKN launch (its caller's non-const pools).
  bf16* kw = const_cast<bf16*>(kp);
  bf16* vw = const_cast<bf16*>(vp);
  if constexpr (G == 1) {
    if (nqr.k && nqr.wq) {
      launch_pdl(decode_attention_kernel<G, P, K, QK_NORM_ROPE>, grid, dim3(kWarps * 32), 0, stream, q, kw, vw, tables,
                 W, seq_row, pos, out, part, n_heads, n_kv, hpb, bs, scale, merge_here, t_handoff >= 2, nqr);
      CUDA_CHECK_LAUNCH("decode_attention_kernel");
      return;
    }
  }
  if (nqr.k) {
    launch_pdl(decode_attention_kernel<G, P, K, QK_ROPE>, grid, dim3(kWarps * 32), 0, stream, q, kw, vw, tables, W,
               seq_row, pos, out, part, n_heads, n_kv, hpb, bs, scale, merge_here, t_handoff >= 2, nqr);
    CUDA_CHECK_LAUNCH("decode_attention_kernel");
    return;
  }
  launch_pdl(decode_attention_kernel<G, P, K>, grid, dim3(kWarps * 32), 0, stream, q, kw, vw, tables, W, seq_row, pos, out,
             part, n_heads, n_kv, hpb, bs, scale, merge_here, t_handoff >= 2, nqr);
  CUDA_CHECK_LAUNCH("decode_attention_kernel");
}

template <int G>
void launch_g(int hd, const float* q, const bf16* kp, const bf16* vp, const int32_t* tables, int W,
              const int32_t* seq_row, const int32_t* pos, bf16* out, float* part, int n_splits, int m, int n_heads,
              int n_kv, int hpb, int bs, bool merge_here, cudaStream_t stream, const QkNormRope& nqr = {}) {
  if (hd == 128)
    launch<G, 4>(q, kp, vp, tables, W, seq_row, pos, out, part, n_splits, m, n_heads, n_kv, hpb, bs, merge_here, stream, nqr);
  else if (hd == 64)
    launch<G, 2>(q, kp, vp, tables, W, seq_row, pos, out, part, n_splits, m, n_heads, n_kv, hpb, bs, merge_here, stream, nqr);
  else
    launch<G, 1>(q, kp, vp, tables, W, seq_row, pos, out, part, n_splits, m, n_heads, n_kv, hpb, bs, merge_here, stream, nqr);
}
}  // namespace

AttentionHandoff::AttentionHandoff(int level) : prev_(t_handoff) { t_handoff = level; }
AttentionHandoff::~AttentionHandoff() { t_handoff = prev_; }

int decode_attention_heads_per_block(int n_heads, int n_kv) {
  const int group = n_kv > 0 ? n_heads / n_kv : 1;
  return group >= 8 ? 1 : group;
}

bool decode_attention_supported(int n_heads, int n_kv, int head_dim, const void* k_pool, const void* v_pool) {
  if (head_dim != 32 && head_dim != 64 && head_dim != 128) return false;
  if (n_kv <= 0 || n_heads <= 0 || n_heads % n_kv != 0 || n_heads / n_kv > 8) return false;
  const uintptr_t align = 2u * static_cast<uintptr_t>(head_dim / 32);
  return reinterpret_cast<uintptr_t>(k_pool) % align == 0 && reinterpret_cast<uintptr_t>(v_pool) % align == 0;
}

bool decode_attention_one_split(int keys) { return keys <= kSplitKeys; }

namespace {
void run_decode_attention(const float* q, const bf16* k_pool, const bf16* v_pool, const int32_t* block_tables,
                          int table_width, const int32_t* seq_row, const int32_t* pos, bf16* out, int m, int n_heads,
                          int n_kv, int head_dim, int block_size, float* workspace, cudaStream_t stream,
                          const QkNormRope& nqr, bool merge_in_last_split) {
  if (m <= 0) return;
  if (!decode_attention_supported(n_heads, n_kv, head_dim, k_pool, v_pool))
    fail_msg(msg("cuda::decode_attention: ", n_heads, " heads, ", n_kv, " KV heads, head_dim ", head_dim,
                 " not supported (head_dim 32|64|128, at most 8 heads per KV head, aligned pools)"));
  if (block_size <= 0) fail_msg(msg("cuda::decode_attention: block_size ", block_size, " (expected > 0)"));
  const int max_keys = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(table_width) * block_size, INT32_MAX));
  const int splits = workspace ? paged_attention_splits(m, n_kv, max_keys) : 1;
  float* part = splits > 1 ? workspace : nullptr;
  const int group = n_heads / n_kv;
  int hpb = decode_attention_heads_per_block(n_heads, n_kv);
  // MOEBENCH_ATTN_HEADS_PER_BLOCK: another count of heads a block where it divides the group
  // (not with the folded q/k norm, which takes one head a block). A head's arithmetic does not
  // depend on its block, and every G below 8 takes K = 8 keys a warp a round, so groups of up
  // to 4 heads give the same bits either way.
  if (const int want = attention_heads_per_block_setting(); want > 0 && group % want == 0 && !(nqr.wq && want != 1))
    hpb = want;
  // One head per block (many heads per KV head), or merge_in_last_split: the splits merge
  // themselves, no merge launch.
  const bool merge_here =
      splits > 1 && (hpb == 1 || merge_in_last_split) && static_cast<int64_t>(m) * n_heads <= kMergeCounters;
  if (hpb == 1) launch_g<1>(head_dim, q, k_pool, v_pool, block_tables, table_width, seq_row, pos, out, part, splits, m, n_heads, n_kv, hpb, block_size, merge_here, stream, nqr);
  else if (hpb == 2) launch_g<2>(head_dim, q, k_pool, v_pool, block_tables, table_width, seq_row, pos, out, part, splits, m, n_heads, n_kv, hpb, block_size, merge_here, stream, nqr);
  else if (hpb <= 4) launch_g<4>(head_dim, q, k_pool, v_pool, block_tables, table_width, seq_row, pos, out, part, splits, m, n_heads, n_kv, hpb, block_size, merge_here, stream, nqr);
  else launch_g<8>(head_dim, q, k_pool, v_pool, block_tables, table_width, seq_row, pos, out, part, splits, m, n_heads, n_kv, hpb, block_size, merge_here, stream, nqr);
  if (splits > 1 && !merge_here) {
    launch_pdl(decode_attention_merge_kernel, dim3(static_cast<unsigned>(static_cast<int64_t>(m) * n_heads)), dim3(128), 0,
               stream, part, pos, out, m, n_heads, head_dim, splits, t_handoff >= 1);
    CUDA_CHECK_LAUNCH("decode_attention_merge_kernel");
  }
}

}  // namespace

void decode_attention(const float* q, const bf16* k_pool, const bf16* v_pool, const int32_t* block_tables,
                      int table_width, const int32_t* seq_row, const int32_t* pos, bf16* out, int m, int n_heads,
                      int n_kv, int head_dim, int block_size, float* workspace, cudaStream_t stream) {
  MB_NVTX_RANGE("decode_attention");
  static const bool merge_in_last_split = attention_merge_in_last_split_from_env();  // MOEBENCH_ATTN_MERGE_HERE
  run_decode_attention(q, k_pool, v_pool, block_tables, table_width, seq_row, pos, out, m, n_heads, n_kv, head_dim,
                       block_size, workspace, stream, QkNormRope{}, merge_in_last_split);
}

void decode_attention_folded(const float* q, const float* k, const float* v, float theta, bf16* k_pool, bf16* v_pool,
                             const int32_t* block_tables, int table_width, const int32_t* seq_row, const int32_t* pos,
                             bf16* out, int m, int n_heads, int n_kv, int head_dim, int block_size, float* workspace,
                             bool rope, bool merge_in_last_split, cudaStream_t stream) {
  MB_NVTX_RANGE("decode_attention_folded");
  if (rope && (!k || !v))
    fail_msg(msg("cuda::decode_attention_folded: RoPE in the launch needs the new key and value projections"));
  run_decode_attention(q, k_pool, v_pool, block_tables, table_width, seq_row, pos, out, m, n_heads, n_kv, head_dim,
                       block_size, workspace, stream,
                       rope ? QkNormRope{k, v, nullptr, nullptr, theta, 0.0f} : QkNormRope{}, merge_in_last_split);
}

bool decode_attention_qk_norm_supported(int n_heads, int n_kv, int head_dim, const void* k_pool, const void* v_pool) {
  return decode_attention_supported(n_heads, n_kv, head_dim, k_pool, v_pool) &&
         decode_attention_heads_per_block(n_heads, n_kv) == 1;
}

void decode_attention_qk_norm(const float* q, const float* k, const float* v, const bf16* q_norm, const bf16* k_norm,
                              float theta, float eps, bf16* k_pool, bf16* v_pool, const int32_t* block_tables,
                              int table_width, const int32_t* seq_row, const int32_t* pos, bf16* out, int m,
                              int n_heads, int n_kv, int head_dim, int block_size, float* workspace,
                              cudaStream_t stream) {
  MB_NVTX_RANGE("decode_attention_qk_norm");
  if (m <= 0) return;
  if (!decode_attention_qk_norm_supported(n_heads, n_kv, head_dim, k_pool, v_pool))
    fail_msg(msg("cuda::decode_attention_qk_norm: ", n_heads, " heads, ", n_kv, " KV heads, head_dim ", head_dim,
                 " not supported (decode_attention's shapes with one query head per block)"));
  run_decode_attention(q, k_pool, v_pool, block_tables, table_width, seq_row, pos, out, m, n_heads, n_kv, head_dim,
                       block_size, workspace, stream, QkNormRope{k, v, q_norm, k_norm, theta, eps}, false);
}

}  // namespace moebench::cuda
