// attention.cu: causal GQA attention over a bf16 KV cache (twin: engine/ops/attention.cpp).
//
// One kernel for prefill and decode. A block owns a tile of kRows "rows" — (query
// token, query head) pairs that share one KV head, so a decode step's 4 query heads
// of a Mixtral KV head read each K/V tile once — and walks the keys in tiles of 32
// staged in shared memory (bf16 -> fp32), with an online softmax per row: no score
// matrix ever reaches global memory. Lane j scores key j of the tile; each lane owns
// head_dim/32 output dims. When the (row tile x KV head) grid is too small to fill the
// GPU (decode), the key range is split over blocks (flash-decoding) and a second
// kernel merges the partial (max, sum, acc) triples in a fixed order.
#include <cmath>

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda {

namespace {
constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kRows = kWarps * kRowsPerWarp;  // rows per block
constexpr int kKeys = 32;                     // keys per tile
constexpr int kTargetBlocks = 264;            // ~2 waves of 132 SMs
constexpr int kMinKeysPerSplit = 64;

struct Plan {
  int row_tiles, n_splits, split_keys;
};
Plan make_plan(int n, int pos0, int n_heads, int n_kv) {
  const int group = n_heads / n_kv;
  const int rows = n * group;
  Plan p;
  p.row_tiles = static_cast<int>(ceil_div(rows, kRows));
  const int len = pos0 + n;
  const int base = p.row_tiles * n_kv;
  int splits = 1;
  if (base < kTargetBlocks) {
    splits = static_cast<int>(ceil_div(kTargetBlocks, base));
    const int max_by_len = static_cast<int>(ceil_div(len, kMinKeysPerSplit));
    if (splits > max_by_len) splits = max_by_len;
    if (splits < 1) splits = 1;
  }
  p.split_keys = static_cast<int>(ceil_div(ceil_div(len, splits), kKeys) * kKeys);
  p.n_splits = static_cast<int>(ceil_div(len, p.split_keys));
  return p;
}

// grid (row_tiles, n_kv, n_splits), block kWarps*32. D = ceil(head_dim / 32).
template <int D>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(const float* __restrict__ q, const bf16* __restrict__ kc,
                                                              const bf16* __restrict__ vc, bf16* __restrict__ out,
                                                              float* __restrict__ ws, int n, int pos0, int n_heads,
                                                              int n_kv, int hd, int split_keys, float scale) {
  extern __shared__ float smem[];
  float* Ks = smem;                          // (kKeys, hd + 1)
  float* Vs = Ks + kKeys * (hd + 1);         // (kKeys, hd)
  float* Qs = Vs + kKeys * hd;               // (kRows, hd)
  const int group = n_heads / n_kv, g = blockIdx.y, split = blockIdx.z;
  const int rows = n * group, row0 = blockIdx.x * kRows;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t kv_stride = static_cast<int64_t>(n_kv) * hd;

  for (int e = threadIdx.x; e < kRows * hd; e += blockDim.x) {
    const int rr = e / hd, d = e % hd, r = row0 + rr;
    float v = 0;
    if (r < rows) {
      const int i = r / group, h = g * group + r % group;
      v = q[(static_cast<int64_t>(i) * n_heads + h) * hd + d];
    }
    Qs[e] = v;
  }
  // Keys this block may need: up to the causal limit of its last row.
  const int last_row = min(row0 + kRows, rows) - 1;
  const int k_begin = split * split_keys;
  const int k_end = min(k_begin + split_keys, pos0 + last_row / group + 1);

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][D];
  int limit[kRowsPerWarp];
#pragma unroll
  for (int rw = 0; rw < kRowsPerWarp; ++rw) {
    m[rw] = -INFINITY;
    l[rw] = 0;
#pragma unroll
    for (int c = 0; c < D; ++c) acc[rw][c] = 0;
    const int r = row0 + warp * kRowsPerWarp + rw;
    limit[rw] = r < rows ? pos0 + r / group : -1;  // last key this row may see
  }

  for (int t0 = k_begin; t0 < k_end; t0 += kKeys) {
    __syncthreads();
    for (int e = threadIdx.x; e < kKeys * hd; e += blockDim.x) {
      const int j = e / hd, d = e % hd, t = t0 + j;
      float kv = 0, vv = 0;
      if (t < k_end) {
        kv = __bfloat162float(kc[t * kv_stride + static_cast<int64_t>(g) * hd + d]);
        vv = __bfloat162float(vc[t * kv_stride + static_cast<int64_t>(g) * hd + d]);
      }
      Ks[j * (hd + 1) + d] = kv;
      Vs[j * hd + d] = vv;
    }
    __syncthreads();
#pragma unroll
    for (int rw = 0; rw < kRowsPerWarp; ++rw) {
      if (limit[rw] < t0) continue;  // warp-uniform
      const float* qr = Qs + (warp * kRowsPerWarp + rw) * hd;
      const float* kr = Ks + lane * (hd + 1);
      float s = 0;
      for (int d = 0; d < hd; ++d) s = fmaf(qr[d], kr[d], s);
      const int t = t0 + lane;
      s = (t <= limit[rw] && t < k_end) ? s * scale : -INFINITY;
      const float m_new = fmaxf(m[rw], warp_max(s));
      const float p = s == -INFINITY ? 0.0f : __expf(s - m_new);
      const float alpha = m[rw] == -INFINITY ? 0.0f : __expf(m[rw] - m_new);
      l[rw] = l[rw] * alpha + warp_sum(p);
      m[rw] = m_new;
#pragma unroll
      for (int c = 0; c < D; ++c) acc[rw][c] *= alpha;
      for (int j = 0; j < kKeys; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int c = 0; c < D; ++c) {
          const int d = lane + 32 * c;
          if (d < hd) acc[rw][c] = fmaf(pj, Vs[j * hd + d], acc[rw][c]);
        }
      }
    }
  }

  const int n_splits = gridDim.z;
#pragma unroll
  for (int rw = 0; rw < kRowsPerWarp; ++rw) {
    const int r = row0 + warp * kRowsPerWarp + rw;
    if (r >= rows) continue;
    const int i = r / group, h = g * group + r % group;
    const int64_t qh = static_cast<int64_t>(i) * n_heads + h;
    if (n_splits == 1) {
      const float inv = l[rw] > 0 ? 1.0f / l[rw] : 0.0f;
#pragma unroll
      for (int c = 0; c < D; ++c) {
        const int d = lane + 32 * c;
        if (d < hd) out[qh * hd + d] = __float2bfloat16_rn(acc[rw][c] * inv);
      }
    } else {
      const int64_t slot = static_cast<int64_t>(split) * n * n_heads + qh;
      float* wacc = ws + slot * hd;
      float* wml = ws + static_cast<int64_t>(n_splits) * n * n_heads * hd + slot * 2;
#pragma unroll
      for (int c = 0; c < D; ++c) {
        const int d = lane + 32 * c;
        if (d < hd) wacc[d] = acc[rw][c];
      }
      if (lane == 0) {
        wml[0] = m[rw];
        wml[1] = l[rw];
      }
    }
  }
}

// grid (n * n_heads), block 128: merge the splits of one (token, head) in split order.
__global__ void attention_merge_kernel(const float* __restrict__ ws, bf16* __restrict__ out, int n, int n_heads,
                                       int hd, int n_splits) {
  const int64_t qh = blockIdx.x;
  const int64_t per_split = static_cast<int64_t>(n) * n_heads;
  const float* ml = ws + static_cast<int64_t>(n_splits) * per_split * hd;
  float mx = -INFINITY;
  for (int s = 0; s < n_splits; ++s) mx = fmaxf(mx, ml[(s * per_split + qh) * 2]);
  float l = 0;
  for (int s = 0; s < n_splits; ++s) {
    const float ms = ml[(s * per_split + qh) * 2];
    if (ms != -INFINITY) l += ml[(s * per_split + qh) * 2 + 1] * __expf(ms - mx);
  }
  const float inv = l > 0 ? 1.0f / l : 0.0f;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float a = 0;
    for (int s = 0; s < n_splits; ++s) {
      const float ms = ml[(s * per_split + qh) * 2];
      if (ms != -INFINITY) a += ws[(s * per_split + qh) * hd + d] * __expf(ms - mx);
    }
    out[qh * hd + d] = __float2bfloat16_rn(a * inv);
  }
}

template <int D>
void launch(const float* q, const bf16* kc, const bf16* vc, bf16* out, float* ws, int n, int pos0, int n_heads,
            int n_kv, int hd, const Plan& p, cudaStream_t stream) {
  const size_t smem = sizeof(float) * (kKeys * (hd + 1) + kKeys * hd + kRows * hd);
  dim3 grid(p.row_tiles, n_kv, p.n_splits);
  attention_kernel<D><<<grid, kWarps * 32, smem, stream>>>(q, kc, vc, out, ws, n, pos0, n_heads, n_kv, hd,
                                                           p.split_keys, 1.0f / sqrtf(static_cast<float>(hd)));
  CUDA_CHECK_LAUNCH("attention_kernel");
}
}  // namespace

size_t attention_workspace_floats(int n, int pos0, int n_heads, int n_kv, int head_dim) {
  if (n <= 0) return 0;
  const Plan p = make_plan(n, pos0, n_heads, n_kv);
  if (p.n_splits == 1) return 0;
  return static_cast<size_t>(p.n_splits) * n * n_heads * (head_dim + 2);
}

void attention(const float* q, const bf16* k_cache, const bf16* v_cache, bf16* out, int n, int pos0, int n_heads,
               int n_kv, int head_dim, float* workspace, cudaStream_t stream) {
  MB_NVTX_RANGE("attention");
  if (n <= 0) return;
  if (head_dim > 128 || head_dim <= 0) fail_msg(msg("cuda::attention: head_dim ", head_dim, " is not supported (1..128)"));
  if (n_kv <= 0 || n_heads % n_kv != 0) fail_msg(msg("cuda::attention: n_heads ", n_heads, " is not a multiple of n_kv ", n_kv));
  const Plan p = make_plan(n, pos0, n_heads, n_kv);
  if (p.n_splits > 1 && !workspace)
    fail_msg(msg("cuda::attention: ", p.n_splits, " key splits need a workspace of ",
                 attention_workspace_floats(n, pos0, n_heads, n_kv, head_dim), " floats, got none"));
  switch ((head_dim + 31) / 32) {
    case 1: launch<1>(q, k_cache, v_cache, out, workspace, n, pos0, n_heads, n_kv, head_dim, p, stream); break;
    case 2: launch<2>(q, k_cache, v_cache, out, workspace, n, pos0, n_heads, n_kv, head_dim, p, stream); break;
    case 3: launch<3>(q, k_cache, v_cache, out, workspace, n, pos0, n_heads, n_kv, head_dim, p, stream); break;
    default: launch<4>(q, k_cache, v_cache, out, workspace, n, pos0, n_heads, n_kv, head_dim, p, stream); break;
  }
  if (p.n_splits > 1) {
    attention_merge_kernel<<<n * n_heads, 128, 0, stream>>>(workspace, out, n, n_heads, head_dim, p.n_splits);
    CUDA_CHECK_LAUNCH("attention_merge_kernel");
  }
}

}  // namespace moebench::cuda
