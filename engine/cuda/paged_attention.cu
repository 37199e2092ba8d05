// paged_attention.cu: batched causal GQA attention over a paged KV cache (twin:
// engine/ops/paged_attention.cpp).
//
// One block per (token, KV head): the G query heads that share the KV head are scored
// together, so each key/value row is read once per token. The block's 8 warps take
// interleaved tiles of 32 keys; lane j scores key j of its tile (16-byte loads of the bf16
// key row, found through the sequence's block table) for all G heads, keeps an online
// softmax (max, sum, acc) per head, and accumulates the value rows with each lane owning
// head_dim/32 output dims. The warps' partials are merged in warp order in shared
// memory (deterministic). Positions and block tables are read on the device, so a
// decode step's launch is the same every step (CUDA graphs).
//
// Key split (flash-decoding): when (tokens x KV heads) blocks cannot fill the GPU, grid.z
// = n_splits blocks share a token's keys. The split count is a function of the shapes
// only (paged_attention_splits); the chunk each block takes is computed on the device
// from the token's position: chunk = ceil(len / n_splits) rounded up to whole 32-key
// tiles, split s takes keys [s * chunk, (s + 1) * chunk) ∩ [0, len) and writes its
// unnormalised (max, sum, acc) to the workspace (blocks past len write nothing). A
// second kernel merges the used splits in split order: deterministic for a given
// position, the same arithmetic as the in-block merge of the warps.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/split_merge.cuh"

namespace moebench::cuda {

namespace {
constexpr int kWarps = 8;
constexpr int kTile = 32;
constexpr int kMaxGroup = 8;
constexpr int kSplitTargetBlocks = 132;  // one wave on an H100 / H200 (132 SMs)
constexpr int kMaxSplits = 32;

// Keys per split for a token attending len keys (whole 32-key tiles): split s takes
// [s * chunk, min(len, (s + 1) * chunk)); splits with s * chunk >= len have none.
__device__ __forceinline__ int split_chunk(int len, int n_splits) {
  return static_cast<int>(ceil_div(ceil_div(len, n_splits), kTile) * kTile);
}

// G >= n_heads / n_kv (compile-time bound on the heads per KV head); D = ceil(hd / 32).
template <int G, int D, bool VEC>
__global__ void __launch_bounds__(kWarps * 32)
    paged_attention_kernel(const float* __restrict__ q, const bf16* __restrict__ kp, const bf16* __restrict__ vp,
                           const int32_t* __restrict__ tables, int table_width, const int32_t* __restrict__ seq_row,
                           const int32_t* __restrict__ pos, bf16* __restrict__ out, float* __restrict__ part,
                           int n_heads, int n_kv, int hd, int block_size, float scale) {
  extern __shared__ float smem[];
  const int group = n_heads / n_kv;
  const int n_splits = gridDim.z, split = blockIdx.z;
  const int len = pos[blockIdx.x] + 1;
  int k_begin = 0, k_end = len;
  if (n_splits > 1) {
    const int chunk = split_chunk(len, n_splits);
    k_begin = split * chunk;
    if (k_begin >= len) return;  // block-uniform: this split has no keys at this position
    k_end = min(len, k_begin + chunk);
  }
  float* Qs = smem;                 // (G, hd)
  float* Ws = Qs + G * hd;          // (kWarps, G, hd + 2): acc, max, sum
  const int i = blockIdx.x, g = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int e = threadIdx.x; e < G * hd; e += blockDim.x) {
    const int h = e / hd;
    Qs[e] = h < group ? q[(static_cast<int64_t>(i) * n_heads + g * group + h) * hd + e % hd] : 0.0f;
  }
  __syncthreads();
  const int32_t* table = tables + static_cast<int64_t>(seq_row[i]) * table_width;
  const int64_t kv_stride = static_cast<int64_t>(n_kv) * hd;

  float mx[G], l[G], acc[G][D];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    mx[h] = -INFINITY;
    l[h] = 0;
#pragma unroll
    for (int c = 0; c < D; ++c) acc[h][c] = 0;
  }

  for (int t0 = k_begin + warp * kTile; t0 < k_end; t0 += kTile * kWarps) {
    const int t = t0 + lane;
    const bool valid = t < k_end;
    int64_t base = 0;
    if (valid) base = (static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size) * kv_stride +
                      static_cast<int64_t>(g) * hd;
    float s[G];
#pragma unroll
    for (int h = 0; h < G; ++h) s[h] = 0;
    if (valid) {
      const bf16* kr = kp + base;
      if constexpr (VEC) {
        // Fully unrolled (hd <= 32 * D): the key row's 16-byte loads are all in flight at once.
        bf16x8 kv[4 * D];
#pragma unroll
        for (int c = 0; c < 4 * D; ++c)
          if (8 * c < hd) kv[c] = load8(kr + 8 * c);
#pragma unroll
        for (int c = 0; c < 4 * D; ++c) {
          if (8 * c >= hd) break;
          float kf[8];
          to_float8(kv[c], kf);
#pragma unroll
          for (int h = 0; h < G; ++h) {
            const float* qh = Qs + h * hd + 8 * c;
#pragma unroll
            for (int u = 0; u < 8; ++u) s[h] = fmaf(qh[u], kf[u], s[h]);
          }
        }
      } else {
        for (int d = 0; d < hd; ++d) {
          const float kf = __bfloat162float(kr[d]);
#pragma unroll
          for (int h = 0; h < G; ++h) s[h] = fmaf(Qs[h * hd + d], kf, s[h]);
        }
      }
    }
    float p[G];
#pragma unroll
    for (int h = 0; h < G; ++h) {
      const float sc = valid ? s[h] * scale : -INFINITY;
      const float m_new = fmaxf(mx[h], warp_max(sc));  // finite: key t0 is valid
      p[h] = valid ? __expf(sc - m_new) : 0.0f;
      const float alpha = mx[h] == -INFINITY ? 0.0f : __expf(mx[h] - m_new);
      l[h] = l[h] * alpha + warp_sum(p[h]);
      mx[h] = m_new;
#pragma unroll
      for (int c = 0; c < D; ++c) acc[h][c] *= alpha;
    }
    // Values: kV keys at a time, their rows loaded before any is used (loads in flight).
    constexpr int kV = 8;
    const int nk = min(kTile, k_end - t0);
    for (int j0 = 0; j0 < nk; j0 += kV) {
      float vv[kV][D];
#pragma unroll
      for (int jj = 0; jj < kV; ++jj) {
        const int j = j0 + jj;  // < 32
        const int64_t bj = __shfl_sync(0xffffffffu, base, j);
#pragma unroll
        for (int c = 0; c < D; ++c) {
          const int d = lane + 32 * c;
          vv[jj][c] = (j < nk && d < hd) ? __bfloat162float(vp[bj + d]) : 0.0f;
        }
      }
#pragma unroll
      for (int jj = 0; jj < kV; ++jj) {
        if (j0 + jj >= nk) break;
#pragma unroll
        for (int h = 0; h < G; ++h) {
          const float pj = __shfl_sync(0xffffffffu, p[h], j0 + jj);
#pragma unroll
          for (int c = 0; c < D; ++c) acc[h][c] = fmaf(pj, vv[jj][c], acc[h][c]);
        }
      }
    }
  }

#pragma unroll
  for (int h = 0; h < G; ++h) {
    float* w = Ws + (warp * G + h) * (hd + 2);
#pragma unroll
    for (int c = 0; c < D; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) w[d] = acc[h][c];
    }
    if (lane == 0) {
      w[hd] = mx[h];
      w[hd + 1] = l[h];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < group * hd; e += blockDim.x) {
    const int h = e / hd, d = e % hd;
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, Ws[(w * G + h) * (hd + 2) + hd]);
    float L = 0, A = 0;
    for (int w = 0; w < kWarps; ++w) {
      const float* ws = Ws + (w * G + h) * (hd + 2);
      if (ws[hd] == -INFINITY) continue;  // this warp saw no key
      const float f = __expf(ws[hd] - M);
      L = fmaf(ws[hd + 1], f, L);
      A = fmaf(ws[d], f, A);
    }
    const int64_t qh = static_cast<int64_t>(i) * n_heads + g * group + h;
    split_result(part, out, n_splits == 1, split, n_splits, static_cast<int64_t>(gridDim.x) * n_heads, qh, hd, d, M, L,
                 A);
  }
}

// grid (m * n_heads), block 128: merges the used splits of one (token, head) in split order.
__global__ void paged_attention_merge_kernel(const float* __restrict__ part, const int32_t* __restrict__ pos,
                                             bf16* __restrict__ out, int m, int n_heads, int hd, int n_splits) {
  const int64_t qh = blockIdx.x;
  const int i = static_cast<int>(qh / n_heads);
  const int len = pos[i] + 1;
  const int used = static_cast<int>(ceil_div(len, split_chunk(len, n_splits)));
  merge_splits(part, out, qh, used, n_splits, static_cast<int64_t>(m) * n_heads, hd);
}

template <int G, int D>
void launch(bool vec, const float* q, const bf16* kp, const bf16* vp, const int32_t* tables, int W,
            const int32_t* seq_row, const int32_t* pos, bf16* out, float* part, int n_splits, int m, int n_heads,
            int n_kv, int hd, int bs, cudaStream_t stream) {
  const size_t smem = sizeof(float) * (G * hd + kWarps * G * (hd + 2));
  const dim3 grid(static_cast<unsigned>(m), static_cast<unsigned>(n_kv), static_cast<unsigned>(n_splits));
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));
  if (vec)
    paged_attention_kernel<G, D, true><<<grid, kWarps * 32, smem, stream>>>(q, kp, vp, tables, W, seq_row, pos, out,
                                                                           part, n_heads, n_kv, hd, bs, scale);
  else
    paged_attention_kernel<G, D, false><<<grid, kWarps * 32, smem, stream>>>(q, kp, vp, tables, W, seq_row, pos, out,
                                                                            part, n_heads, n_kv, hd, bs, scale);
  CUDA_CHECK_LAUNCH("paged_attention_kernel");
}

template <int G>
void launch_g(bool vec, const float* q, const bf16* kp, const bf16* vp, const int32_t* tables, int W,
              const int32_t* seq_row, const int32_t* pos, bf16* out, float* part, int n_splits, int m, int n_heads,
              int n_kv, int hd, int bs, cudaStream_t stream) {
  switch ((hd + 31) / 32) {
    case 1: launch<G, 1>(vec, q, kp, vp, tables, W, seq_row, pos, out, part, n_splits, m, n_heads, n_kv, hd, bs, stream); break;
    case 2: launch<G, 2>(vec, q, kp, vp, tables, W, seq_row, pos, out, part, n_splits, m, n_heads, n_kv, hd, bs, stream); break;
    case 3: launch<G, 3>(vec, q, kp, vp, tables, W, seq_row, pos, out, part, n_splits, m, n_heads, n_kv, hd, bs, stream); break;
    default: launch<G, 4>(vec, q, kp, vp, tables, W, seq_row, pos, out, part, n_splits, m, n_heads, n_kv, hd, bs, stream); break;
  }
}
}  // namespace

int paged_attention_splits(int m, int n_kv, int max_keys) {
  // At most one wave: the <4, 4> kernel holds ~160 registers a thread, one 256-thread
  // block per SM, so m * n_kv * splits <= 132 blocks (Mixtral batch 1: 16 splits, 128).
  const int64_t base = static_cast<int64_t>(m) * n_kv;
  if (m <= 0 || n_kv <= 0) return 1;
  int64_t splits = kSplitTargetBlocks / base;
  if (splits < 2) return 1;
  splits = std::min<int64_t>(splits, ceil_div(std::max(max_keys, 1), kTile));
  splits = std::min<int64_t>(splits, kMaxSplits);
  return static_cast<int>(std::max<int64_t>(splits, 1));
}

size_t paged_attention_workspace_floats(int m, int n_heads, int n_kv, int head_dim, int max_keys) {
  const int splits = paged_attention_splits(m, n_kv, max_keys);
  if (splits == 1) return 0;
  return static_cast<size_t>(splits) * m * n_heads * (head_dim + 2);
}

void paged_attention(const float* q, const bf16* k_pool, const bf16* v_pool, const int32_t* block_tables,
                     int table_width, const int32_t* seq_row, const int32_t* pos, bf16* out, int m, int n_heads,
                     int n_kv, int head_dim, int block_size, float* workspace, cudaStream_t stream) {
  MB_NVTX_RANGE("paged_attention");
  if (m <= 0) return;
  if (head_dim > 128 || head_dim <= 0)
    fail_msg(msg("cuda::paged_attention: head_dim ", head_dim, " is not supported (1..128)"));
  if (n_kv <= 0 || n_heads % n_kv != 0)
    fail_msg(msg("cuda::paged_attention: n_heads ", n_heads, " is not a multiple of n_kv ", n_kv));
  const int group = n_heads / n_kv;
  if (group > kMaxGroup) fail_msg(msg("cuda::paged_attention: ", group, " query heads per KV head, at most ", kMaxGroup));
  if (block_size <= 0) fail_msg(msg("cuda::paged_attention: block_size ", block_size, " (expected > 0)"));
  const int max_keys = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(table_width) * block_size, INT32_MAX));
  const int splits = workspace ? paged_attention_splits(m, n_kv, max_keys) : 1;
  const bool vec = head_dim % 8 == 0 && (reinterpret_cast<uintptr_t>(k_pool) & 15u) == 0;
  float* part = splits > 1 ? workspace : nullptr;
  if (group == 1) launch_g<1>(vec, q, k_pool, v_pool, block_tables, table_width, seq_row, pos, out, part, splits, m, n_heads, n_kv, head_dim, block_size, stream);
  else if (group == 2) launch_g<2>(vec, q, k_pool, v_pool, block_tables, table_width, seq_row, pos, out, part, splits, m, n_heads, n_kv, head_dim, block_size, stream);
  else if (group <= 4) launch_g<4>(vec, q, k_pool, v_pool, block_tables, table_width, seq_row, pos, out, part, splits, m, n_heads, n_kv, head_dim, block_size, stream);
  else launch_g<8>(vec, q, k_pool, v_pool, block_tables, table_width, seq_row, pos, out, part, splits, m, n_heads, n_kv, head_dim, block_size, stream);
  if (splits > 1) {
    paged_attention_merge_kernel<<<static_cast<unsigned>(static_cast<int64_t>(m) * n_heads), 128, 0, stream>>>(
        part, pos, out, m, n_heads, head_dim, splits);
    CUDA_CHECK_LAUNCH("paged_attention_merge_kernel");
  }
}

}  // namespace moebench::cuda
