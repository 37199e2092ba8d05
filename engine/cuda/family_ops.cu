// family_ops.cu: the small kernels the MoE families beyond Mixtral add to a layer
// (twins: the loops in engine/cpu_model.cpp): q/k/v bias, q/k RMSNorm in place on the
// fp32 projections (per head: together with RoPE and the KV store, one launch), and the
// sigmoid-gated add of the shared expert; one launch each, so a decode step of a
// 48-layer model pays few extra launches.
#include "engine/cuda/family_ops.h"

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/pdl.cuh"
#include "engine/cuda/rmsnorm_row.cuh"

namespace moebench::cuda {

namespace {
constexpr int kThreads = 256;

// One thread per element of q, then k, then v (one launch for the three).
__global__ void add_qkv_bias_kernel(float* __restrict__ q, const bf16* __restrict__ bq, float* __restrict__ k,
                                    const bf16* __restrict__ bk, float* __restrict__ v, const bf16* __restrict__ bv,
                                    int64_t nq, int64_t nkv, int q_dim, int kv_dim) {
  int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < nq) {
    q[i] += __bfloat162float(bq[i % q_dim]);
    return;
  }
  i -= nq;
  if (i < nkv) {
    k[i] += __bfloat162float(bk[i % kv_dim]);
    return;
  }
  i -= nkv;
  if (i < nkv) v[i] += __bfloat162float(bv[i % kv_dim]);
}

// One warp per row (q's rows, then k's): the sum of squares in fp32, then
// x * rsqrt(mean + eps) * w.
__global__ void qk_rmsnorm_kernel(float* __restrict__ q, const bf16* __restrict__ wq, int q_rows, int q_dim,
                                  float* __restrict__ k, const bf16* __restrict__ wk, int k_rows, int k_dim,
                                  float eps) {
  int r = blockIdx.x * (kThreads / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= q_rows + k_rows) return;
  const bool is_q = r < q_rows;
  if (!is_q) r -= q_rows;
  const int dim = is_q ? q_dim : k_dim;
  float* xr = (is_q ? q : k) + static_cast<int64_t>(r) * dim;
  const bf16* w = is_q ? wq : wk;
  float ss = 0;
  for (int d = lane; d < dim; d += 32) ss = fmaf(xr[d], xr[d], ss);
  ss = warp_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  for (int d = lane; d < dim; d += 32) xr[d] = (xr[d] * inv) * __bfloat162float(w[d]);
}

// One head of qk_norm_rope_kv_store_paged's block (any block size): every warp sums the
// head's squares (lane-strided fmaf over head_dim, then warp_sum: qk_rmsnorm_kernel's one
// warp), then each thread normalises its pairs j = threadIdx.x, + blockDim.x, ... ((x * inv)
// * w) and rotates them (rope_angle, rope_rotate); the query head in place (q), the key
// head into its pool row (kdst, bf16). The first pair's angle and weights (ang0, w0a, w0b)
// were taken before the caller's wait. kL2: src was written by other blocks of the running
// kernel (loads from L2).
template <bool kL2>
__device__ __forceinline__ void qk_head_norm_rope(const float* src, float* q, bf16* kdst, const bf16* __restrict__ w,
                                                  float p, RopeAngle ang0, float w0a, float w0b, int head_dim,
                                                  float theta, float eps) {
  const int half = head_dim / 2, lane = threadIdx.x & 31, j0 = threadIdx.x;
  auto ld = [&](int d) { return kL2 ? __ldcg(src + d) : src[d]; };
  float ss = 0;
  for (int d = lane; d < head_dim; d += 32) ss = fmaf(ld(d), ld(d), ss);
  ss = warp_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(head_dim) + eps);
  __syncthreads();  // every warp has read the query head before it is overwritten
  for (int j = j0; j < half; j += blockDim.x) {
    const bool first = j == j0;
    const float a = (ld(j) * inv) * (first ? w0a : __bfloat162float(w[j]));
    const float b = (ld(j + half) * inv) * (first ? w0b : __bfloat162float(w[j + half]));
    const float2 r = rope_rotate(a, b, first ? ang0 : rope_angle(p, j, head_dim, theta));
    if (q) {
      q[j] = r.x;
      q[j + half] = r.y;
    } else {
      kdst[j] = __float2bfloat16_rn(r.x);
      kdst[j + half] = __float2bfloat16_rn(r.y);
    }
  }
  if (head_dim % 2 == 1 && threadIdx.x == 0) {  // the odd last dim: normed, not rotated
    const float last = (ld(head_dim - 1) * inv) * __bfloat162float(w[head_dim - 1]);
    if (q) q[head_dim - 1] = last;
    else kdst[head_dim - 1] = __float2bfloat16_rn(last);
  }
}

// qk_rmsnorm (per head) and rope_kv_store_paged in one launch, bit for bit the two: grid
// (m, n_heads + n_kv), rope_kv_store_paged_kernel's threads per block. A block takes one
// query head (normed and rotated in place) or one key head (normed and rotated into the
// pool) together with the value head of the same index (copied into the pool). It first
// sums the head's squares in every warp the way one warp of qk_rmsnorm_kernel does
// (lane-strided fmaf over head_dim, then warp_sum: the same sum in each warp), then
// normalises its pairs ((x * inv) * w, in registers) and rotates them (rope_angle,
// rope_rotate: paged_kv.cu's arithmetic). k itself is left as the projection wrote it
// (nothing reads it after the pool). A programmatic launch (pdl.cuh), as rope_kv_store_paged's:
// the position and slot (copied before the step's first kernel), the norm weights and the
// first pair's angle are loaded before the wait, so after it only the projections are.
__global__ void qk_norm_rope_kv_store_paged_kernel(float* __restrict__ q, const float* __restrict__ k,
                                                   const float* __restrict__ v, const bf16* __restrict__ wq,
                                                   const bf16* __restrict__ wk, const int32_t* __restrict__ pos,
                                                   const int32_t* __restrict__ slot, bf16* __restrict__ kp,
                                                   bf16* __restrict__ vp, int n_heads, int n_kv, int head_dim,
                                                   float theta, float eps) {
  const int i = blockIdx.x, y = blockIdx.y, half = head_dim / 2;
  const bool is_q = y < n_heads;
  const int h = is_q ? y : y - n_heads;
  const int64_t kv_row = static_cast<int64_t>(n_kv) * head_dim;
  const int64_t in_kv = i * kv_row + static_cast<int64_t>(h) * head_dim;                  // k, v of token i, head h
  const int64_t in_pool = static_cast<int64_t>(slot[i]) * kv_row + static_cast<int64_t>(h) * head_dim;
  float* x = is_q ? q + (static_cast<int64_t>(i) * n_heads + h) * head_dim : nullptr;
  const float* src = is_q ? x : k + in_kv;
  const bf16* w = is_q ? wq : wk;
  const float p = static_cast<float>(pos[i]);
  const int j0 = threadIdx.x;  // this thread's first pair (blockDim.x <= half unless half < 32)
  RopeAngle ang0{};
  float w0a = 0, w0b = 0;
  if (j0 < half) {
    ang0 = rope_angle(p, j0, head_dim, theta);
    w0a = __bfloat162float(w[j0]);
    w0b = __bfloat162float(w[j0 + half]);
  }
  pdl_wait();  // q, k, v come from the previous kernel
  pdl_trigger();
  qk_head_norm_rope<false>(src, x, is_q ? nullptr : kp + in_pool, w, p, ang0, w0a, w0b, head_dim, theta, eps);
  if (!is_q)
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) vp[in_pool + d] = __float2bfloat16_rn(v[in_kv + d]);
}

// Rows done per head of the one-launch attention entry (qkv_qk_norm_rope_kernel), zero
// between launches (each head's last block puts its counter back).
constexpr int kQkvMaxHeads = 512;
__device__ unsigned int g_qkv_head_blocks[kQkvMaxHeads];

// Decode's attention entry for one token with per-head q/k norm, in one launch: the input
// rmsnorm and the q/k/v GEMV as gemv_multi_norm_kernel computes them (rmsnorm_row into
// shared memory, block 0 writing h out; gemv_rows, whose sums do not depend on the launch
// shape), then, per head, the last of its blocks to finish (a counter per head) takes
// qk_norm_rope_kv_store_paged_kernel's work for it (qk_head_norm_rope; a value head's block
// copies it into the pool): the same q, h and pools, bit for bit, without the launch
// between. Blocks: head-major, head_dim / (8 warps x R rows) per head over the q heads, the k
// heads, then the v heads. Before the wait: the block's weight rows asked of L2 (as the
// q/k/v GEMV does), the position, slot, norm weights and this thread's first pair's angle.
template <int R, int U, bool kLateTrigger>
__global__ void __launch_bounds__(detail::kGemvWarps * 32)
    qkv_qk_norm_rope_kernel(const float* __restrict__ x, const bf16* __restrict__ norm_w, float eps,
                            bf16* __restrict__ h, const bf16* __restrict__ wq, const bf16* __restrict__ wk,
                            const bf16* __restrict__ wv, float* q, float* k, float* v, const bf16* __restrict__ q_norm,
                            const bf16* __restrict__ k_norm, const int32_t* __restrict__ pos,
                            const int32_t* __restrict__ slot, bf16* __restrict__ kp, bf16* __restrict__ vp, int K,
                            int n_heads, int n_kv, int head_dim, float theta, unsigned prefetch_bytes) {
  extern __shared__ __align__(16) unsigned char qkv_smem[];
  bf16* hs = reinterpret_cast<bf16*>(qkv_smem);
  __shared__ bool s_last;
  constexpr int kRowsPerBlock = detail::kGemvWarps * R;
  const int per_head = head_dim / kRowsPerBlock;
  const int head = static_cast<int>(blockIdx.x) / per_head, part = static_cast<int>(blockIdx.x) % per_head;
  const int kind = head < n_heads ? 0 : head < n_heads + n_kv ? 1 : 2;  // q, k, v
  const int hh = kind == 0 ? head : kind == 1 ? head - n_heads : head - n_heads - n_kv;
  const bf16* w = kind == 0 ? wq : kind == 1 ? wk : wv;
  float* y = kind == 0 ? q : kind == 1 ? k : v;
  const int N = (kind == 0 ? n_heads : n_kv) * head_dim;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = hh * head_dim + part * kRowsPerBlock + warp * R;
  if (lane < R)
    l2_prefetch_bulk(w + static_cast<int64_t>(row0 + lane) * K, min(static_cast<unsigned>(K) * 2u, prefetch_bytes));
  if (threadIdx.x == 0 && aligned16(norm_w)) l2_prefetch_bulk(norm_w, static_cast<unsigned>(K) * 2u);
  const int half = head_dim / 2, j0 = threadIdx.x;
  const int64_t in_pool = static_cast<int64_t>(slot[0]) * n_kv * head_dim + static_cast<int64_t>(hh) * head_dim;
  const float p = static_cast<float>(pos[0]);
  const bf16* nw = kind == 0 ? q_norm : k_norm;
  RopeAngle ang0{};
  float w0a = 0, w0b = 0;
  if (kind < 2 && j0 < half) {
    ang0 = rope_angle(p, j0, head_dim, theta);
    w0a = __bfloat162float(nw[j0]);
    w0b = __bfloat162float(nw[j0 + half]);
  }
  pdl_wait();  // x comes from the previous kernel
  if (!kLateTrigger) pdl_trigger();  // else once the block's rows are written (below)
  rmsnorm_row<detail::kGemvWarps * 32>(x, norm_w, hs, K, eps);
  __syncthreads();
  if (blockIdx.x == 0)
    for (int c = threadIdx.x; c < K / 8; c += detail::kGemvWarps * 32)
      *reinterpret_cast<bf16x8*>(h + 8 * c) = *reinterpret_cast<const bf16x8*>(hs + 8 * c);
  detail::gemv_rows<1, R, U, 0>(hs, w, y, 1, K, N, row0, lane, false);
  __syncthreads();  // every warp's rows written
  if (kLateTrigger) pdl_trigger();  // the attention's blocks start as the heads' last blocks finish
  if (threadIdx.x == 0) {
    __threadfence();
    s_last = atomicAdd(&g_qkv_head_blocks[head], 1u) == static_cast<unsigned>(per_head - 1);
    if (s_last) {
      g_qkv_head_blocks[head] = 0;  // every block of the head has counted
      __threadfence();
    }
  }
  __syncthreads();
  if (!s_last) return;
  const float* src = y + static_cast<int64_t>(hh) * head_dim;
  if (kind == 0)
    qk_head_norm_rope<true>(src, q + static_cast<int64_t>(hh) * head_dim, nullptr, nw, p, ang0, w0a, w0b, head_dim,
                            theta, eps);
  else if (kind == 1)
    qk_head_norm_rope<true>(src, nullptr, kp + in_pool, nw, p, ang0, w0a, w0b, head_dim, theta, eps);
  else
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) vp[in_pool + d] = __float2bfloat16_rn(__ldcg(src + d));
}

__global__ void add_sigmoid_gated_kernel(float* __restrict__ out, const float* __restrict__ y,
                                         const float* __restrict__ g, int64_t count, int dim) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= count) return;
  const float s = 1.0f / (1.0f + expf(-g[i / dim]));
  out[i] += s * y[i];
}
}  // namespace

void add_qkv_bias(float* q, const bf16* bq, float* k, const bf16* bk, float* v, const bf16* bv, int n, int q_dim,
                  int kv_dim, cudaStream_t stream) {
  MB_NVTX_RANGE("add_qkv_bias");
  const int64_t nq = static_cast<int64_t>(n) * q_dim, nkv = static_cast<int64_t>(n) * kv_dim;
  if (nq + 2 * nkv <= 0) return;
  add_qkv_bias_kernel<<<static_cast<unsigned>(ceil_div(nq + 2 * nkv, kThreads)), kThreads, 0, stream>>>(
      q, bq, k, bk, v, bv, nq, nkv, q_dim, kv_dim);
  CUDA_CHECK_LAUNCH("add_qkv_bias_kernel");
}

void qk_rmsnorm(float* q, const bf16* wq, int q_rows, int q_dim, float* k, const bf16* wk, int k_rows, int k_dim,
                float eps, cudaStream_t stream) {
  MB_NVTX_RANGE("qk_rmsnorm");
  const int rows = q_rows + k_rows;
  if (rows <= 0) return;
  qk_rmsnorm_kernel<<<static_cast<unsigned>(ceil_div(rows, kThreads / 32)), kThreads, 0, stream>>>(
      q, wq, q_rows, q_dim, k, wk, k_rows, k_dim, eps);
  CUDA_CHECK_LAUNCH("qk_rmsnorm_kernel");
}

void qk_norm_rope_kv_store_paged(float* q, const float* k, const float* v, const bf16* wq, const bf16* wk,
                                 const int32_t* pos, const int32_t* slot, bf16* k_pool, bf16* v_pool, int m,
                                 int n_heads, int n_kv, int head_dim, float theta, float eps, cudaStream_t stream) {
  MB_NVTX_RANGE("qk_norm_rope_kv_store_paged");
  if (m <= 0) return;
  const int half = head_dim / 2;  // rope_kv_store_paged's block size
  const int threads = half >= 128 ? 128 : half <= 32 ? 32 : ((half + 31) / 32) * 32;
  const dim3 grid(static_cast<unsigned>(m), static_cast<unsigned>(n_heads + n_kv));
  launch_pdl(qk_norm_rope_kv_store_paged_kernel, grid, dim3(static_cast<unsigned>(threads)), 0, stream, q, k, v, wq, wk,
             pos, slot, k_pool, v_pool, n_heads, n_kv, head_dim, theta, eps);
  CUDA_CHECK_LAUNCH("qk_norm_rope_kv_store_paged_kernel");
}

namespace {
constexpr int kQkvRows = 4, kQkvDepth = 2;  // the q/k/v GEMV's shape at Qwen3-30B-A3B's 5120 rows
constexpr int kQkvBlockRows = detail::kGemvWarps * kQkvRows;
}  // namespace

bool qkv_qk_norm_rope_supported(int hidden, int n_heads, int n_kv, int head_dim, const void* h, const bf16* wq,
                                const bf16* wk, const bf16* wv) {
  return hidden > 0 && hidden % 8 == 0 && hidden * sizeof(bf16) <= kRmsnormGemvMaxSharedBytes && n_heads > 0 &&
         n_kv > 0 && n_heads + 2 * n_kv <= kQkvMaxHeads && head_dim > 0 && head_dim % kQkvBlockRows == 0 &&
         aligned16(h) && aligned16(wq) && aligned16(wk) && aligned16(wv);
}

namespace {
int qkv_mode() {
  static const int mode = env_choice("MOEBENCH_QKV_QK_NORM", {0, 1, 2}, 0);
  return mode;
}
}  // namespace

bool qkv_qk_norm_rope_enabled() { return qkv_mode() != 0; }

void qkv_qk_norm_rope(const float* x, const bf16* norm_w, float eps, bf16* h, const bf16* wq, const bf16* wk,
                      const bf16* wv, float* q, float* k, float* v, const bf16* q_norm, const bf16* k_norm,
                      const int32_t* pos, const int32_t* slot, bf16* k_pool, bf16* v_pool, int hidden, int n_heads,
                      int n_kv, int head_dim, float theta, cudaStream_t stream) {
  MB_NVTX_RANGE("qkv_qk_norm_rope");
  if (!qkv_qk_norm_rope_supported(hidden, n_heads, n_kv, head_dim, h, wq, wk, wv))
    fail_msg(msg("cuda::qkv_qk_norm_rope: hidden ", hidden, ", ", n_heads, " / ", n_kv, " heads of ", head_dim,
                 " not supported (hidden % 8 == 0, hidden * 2 <= ", kRmsnormGemvMaxSharedBytes,
                 " bytes, head_dim a multiple of ", kQkvBlockRows, ", at most ", kQkvMaxHeads,
                 " heads in all, 16-byte aligned h and weights)"));
  const int blocks = (n_heads + 2 * n_kv) * (head_dim / kQkvBlockRows);
  // The next kernel's blocks may start once every block has passed its wait, or (=2) once
  // every block has written its rows.
  launch_pdl(qkv_mode() == 2 ? qkv_qk_norm_rope_kernel<kQkvRows, kQkvDepth, true>
                             : qkv_qk_norm_rope_kernel<kQkvRows, kQkvDepth, false>,
             dim3(static_cast<unsigned>(blocks)),
             dim3(detail::kGemvWarps * 32),
             static_cast<size_t>(hidden) * sizeof(bf16), stream, x, norm_w, eps, h, wq, wk, wv, q, k, v, q_norm, k_norm,
             pos, slot, k_pool, v_pool, hidden, n_heads, n_kv, head_dim, theta, qkv_prefetch_bytes_from_env());
  CUDA_CHECK_LAUNCH("qkv_qk_norm_rope_kernel");
}

void add_sigmoid_gated(float* out, const float* y, const float* g, int n, int dim, cudaStream_t stream) {
  MB_NVTX_RANGE("add_sigmoid_gated");
  const int64_t count = static_cast<int64_t>(n) * dim;
  if (count <= 0) return;
  add_sigmoid_gated_kernel<<<static_cast<unsigned>(ceil_div(count, kThreads)), kThreads, 0, stream>>>(out, y, g,
                                                                                                     count, dim);
  CUDA_CHECK_LAUNCH("add_sigmoid_gated_kernel");
}

}  // namespace moebench::cuda
