// norm_router.cu: see norm_router.h.
#include "engine/cuda/norm_router.h"

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/norm_router_cluster.h"
#include "engine/cuda/pdl.cuh"
#include "engine/cuda/norm_router_block.cuh"
#include "engine/cuda/rmsnorm_row.cuh"
#include "engine/cuda/router_topk.cuh"

namespace moebench::cuda {

namespace {
constexpr int kThreads = kNormRouterThreads;
constexpr int kWarps = kNormRouterWarps;
constexpr int kMaxTokens = 8;
constexpr int kMaxExperts = 64;
constexpr int kChunks = 8;  // 16-byte chunks of a gate row in flight per lane

__global__ void __launch_bounds__(kThreads)
    norm_router_kernel(const float* __restrict__ x, const __nv_bfloat16* __restrict__ norm_w, float eps,
                       const __nv_bfloat16* __restrict__ gate, __nv_bfloat16* __restrict__ h,
                       float* __restrict__ logits, int32_t* __restrict__ ids, float* __restrict__ weights, int hidden,
                       int n_experts, int k, bool renormalise) {
  __shared__ float s_logits[kMaxExperts];
  const int i = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __nv_bfloat16* hi = h + static_cast<int64_t>(i) * hidden;
  rmsnorm_row<kThreads>(x + static_cast<int64_t>(i) * hidden, norm_w, hi, hidden, eps);
  __syncthreads();  // the block's writes of h are visible to the block from here
  const int chunks = hidden / 8;
  for (int e = warp; e < n_experts; e += kWarps) {
    const __nv_bfloat16* g = gate + static_cast<int64_t>(e) * hidden;
    float acc = 0;
    for (int c0 = lane; c0 < chunks; c0 += 32 * kChunks) {
      bf16x8 gw[kChunks], hv[kChunks];
#pragma unroll
      for (int u = 0; u < kChunks; ++u) {
        const int c = c0 + 32 * u;
        if (c < chunks) {
          gw[u] = load8_stream(g + 8 * c);
          hv[u] = load8(hi + 8 * c);
        }
      }
#pragma unroll
      for (int u = 0; u < kChunks; ++u) {
        if (c0 + 32 * u >= chunks) break;
        acc = router_chunk_dot(gw[u], hv[u], acc);
      }
    }
    put_logit(acc, i, e, n_experts, s_logits, logits);
  }
  topk_of_block(s_logits, i, n_experts, k, ids, weights, renormalise);
}
// The Mixtral shape (norm_router_regs_shape): the same results, bit for bit, with every
// load issued before any is used (norm_router_block.cuh). One round trip to memory where the
// general kernel makes several in a row; launched programmatically (pdl.cuh), the gate loads
// overlap the end of the kernel before.
__global__ void __launch_bounds__(kThreads)
    norm_router_regs_kernel(const float* __restrict__ x, const __nv_bfloat16* __restrict__ norm_w, float eps,
                            const __nv_bfloat16* __restrict__ gate, __nv_bfloat16* __restrict__ h,
                            float* __restrict__ logits, int32_t* __restrict__ ids, float* __restrict__ weights,
                            int hidden, int n_experts, int k, bool renormalise) {
  bf16x8 gw[kNormRouterRegsPer];
  norm_router_gate_rows(gate, hidden, n_experts, gw);
  pdl_wait();  // the gate loads above overlap the previous kernel's end; x comes from it
  pdl_trigger();
  norm_router_from_regs<false>(x, norm_w, eps, gw, h, logits, ids, weights, static_cast<int>(blockIdx.x), hidden,
                               n_experts, k, renormalise);
}

// The many-expert launch (32 <= n_experts <= 256; fewer take the one-block kernel): grid
// (n, ceil(n_experts / kWideRows)).
// Every block norms its token into shared memory (the same rmsnorm_row: the same h; block
// y = 0 also writes h out) and takes kWideRows expert rows, two per warp with both rows'
// loads issued before either is summed (each row's sum in the same order as the one-block
// kernel's: the same logits). The block that finishes its token's rows last (a counter per
// token, reset by that block, so launches in a stream and graph replays follow each other
// safely) reads the token's logits back from L2 and takes the top-k. One such launch runs
// on a device at a time (the counters are the device's): launches on one stream, as the
// model's, never overlap. A programmatic launch (pdl.cuh): each warp issues the loads of
// its rows' first kChunks chunks per lane (weights) before the wait on the kernel that
// writes x, so they overlap its end instead of following the norm (8.5 us per Qwen3-30B-A3B
// layer on an H200 without, for 0.5 MB of gate).
constexpr int kWideRows = 2 * kWarps;
constexpr int kWideMinExperts = 32;  // one block streamed OLMoE's 64 x 2048 gate in 16 us (H200)
constexpr int kWideMaxExperts = kRouterMaxPerLane * 32;
constexpr int kWideMaxHidden = 16384;  // h in shared memory: 32 KiB
__device__ unsigned int g_wide_done[kMaxTokens];

__global__ void __launch_bounds__(kThreads)
    norm_router_wide_kernel(const float* __restrict__ x, const __nv_bfloat16* __restrict__ norm_w, float eps,
                            const __nv_bfloat16* __restrict__ gate, __nv_bfloat16* __restrict__ h,
                            float* __restrict__ logits, int32_t* __restrict__ ids, float* __restrict__ weights,
                            int hidden, int n_experts, int k, bool renormalise) {
  extern __shared__ __align__(16) unsigned char wide_smem[];
  __nv_bfloat16* hs = reinterpret_cast<__nv_bfloat16*>(wide_smem);
  __shared__ float s_logits[kWideMaxExperts];
  __shared__ bool s_last;
  const int i = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int chunks = hidden / 8;
  const int e0 = blockIdx.y * kWideRows + 2 * warp;
  const int rows = max(0, min(2, n_experts - e0));  // warp-uniform
  const __nv_bfloat16* g0 = gate + static_cast<int64_t>(min(e0, n_experts - 1)) * hidden;
  const __nv_bfloat16* g1 = rows > 1 ? g0 + hidden : g0;
  bf16x8 w0[kChunks], w1[kChunks];
  auto load_rows = [&](int c0) {
#pragma unroll
    for (int u = 0; u < kChunks; ++u) {
      const int c = c0 + 32 * u;
      if (c < chunks) {
        w0[u] = load8_stream(g0 + 8 * c);
        w1[u] = load8_stream(g1 + 8 * c);
      }
    }
  };
  if (rows > 0) load_rows(lane);  // the gate is no kernel's output: before the wait
  pdl_wait();                     // x comes from the previous kernel
  pdl_trigger();
  rmsnorm_row<kThreads>(x + static_cast<int64_t>(i) * hidden, norm_w, hs, hidden, eps);
  __syncthreads();
  if (blockIdx.y == 0)
    for (int c = threadIdx.x; c < chunks; c += kThreads)
      *reinterpret_cast<bf16x8*>(h + static_cast<int64_t>(i) * hidden + 8 * c) = load8(hs + 8 * c);
  if (rows > 0) {
    float acc0 = 0, acc1 = 0;
    for (int c0 = lane; c0 < chunks; c0 += 32 * kChunks) {
      if (c0 != lane) load_rows(c0);
      bf16x8 hv[kChunks];
#pragma unroll
      for (int u = 0; u < kChunks; ++u) {
        const int c = c0 + 32 * u;
        if (c < chunks) hv[u] = load8(hs + 8 * c);
      }
#pragma unroll
      for (int u = 0; u < kChunks; ++u) {
        if (c0 + 32 * u >= chunks) break;
        acc0 = router_chunk_dot(w0[u], hv[u], acc0);
        acc1 = router_chunk_dot(w1[u], hv[u], acc1);
      }
    }
    acc0 = warp_sum(acc0);
    acc1 = warp_sum(acc1);
    if (lane == 0) {
      logits[static_cast<int64_t>(i) * n_experts + e0] = acc0;
      if (rows > 1) logits[static_cast<int64_t>(i) * n_experts + e0 + 1] = acc1;
    }
  }
  if (!ids) return;  // block-uniform
  __threadfence();   // this block's logits reach L2 before its count does
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(&g_wide_done[i], 1u) == gridDim.y - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  for (int e = threadIdx.x; e < n_experts; e += kThreads) s_logits[e] = __ldcg(logits + static_cast<int64_t>(i) * n_experts + e);
  if (threadIdx.x == 0) g_wide_done[i] = 0;  // the next launch on the stream starts from zero
  topk_of_block(s_logits, i, n_experts, k, ids, weights, renormalise);
}
}  // namespace

bool norm_router_wide_supported(int n, int hidden, int n_experts, int k, const void* gate, const void* h) {
  return n >= 1 && n <= kMaxTokens && hidden > 0 && hidden % 8 == 0 && hidden <= kWideMaxHidden &&
         n_experts >= kWideMinExperts && n_experts <= kWideMaxExperts && k >= 1 && k <= 8 && k <= n_experts &&
         aligned16(gate) &&
         aligned16(h);
}

bool norm_router_supported(int n, int hidden, int n_experts, int k, const void* gate, const void* h) {
  return n >= 1 && n <= kMaxTokens && hidden > 0 && hidden % 8 == 0 && n_experts >= 1 && n_experts <= kMaxExperts &&
         k >= 1 && k <= 8 && k <= n_experts && aligned16(gate) && aligned16(h);
}

void norm_router(const float* x, const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate, __nv_bfloat16* h,
                 float* logits, int32_t* ids, float* weights, int n, int hidden, int n_experts, int k,
                 cudaStream_t stream, bool renormalise) {
  MB_NVTX_RANGE("norm_router");
  if (norm_router_wide_supported(n, hidden, n_experts, k, gate, h)) {
    if (norm_router_cluster_enabled() && norm_router_cluster_supported(n, hidden, n_experts, k, gate, h))
      return norm_router_cluster(x, norm_w, eps, gate, h, logits, ids, weights, n, hidden, n_experts, k, stream,
                                 renormalise);  // the same results (norm_router_cluster.h)
    const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(ceil_div(n_experts, kWideRows)));
    launch_pdl(norm_router_wide_kernel, grid, dim3(kThreads), static_cast<size_t>(hidden) * 2, stream, x, norm_w, eps,
               gate, h, logits, ids, weights, hidden, n_experts, k, renormalise);
    CUDA_CHECK_LAUNCH("norm_router_wide_kernel");
    return;
  }
  if (!norm_router_supported(n, hidden, n_experts, k, gate, h))
    fail_msg(msg("cuda::norm_router: ", n, " tokens, hidden ", hidden, ", ", n_experts, " experts, top-", k,
                 " not supported (<= 8 tokens, hidden % 8 == 0 (<= 16384 beyond 64 experts), <= 256 experts, k <= 8, "
                 "16-byte aligned gate and h)"));
  if (norm_router_regs_shape(hidden, n_experts)) {
    launch_pdl(norm_router_regs_kernel, dim3(static_cast<unsigned>(n)), dim3(kThreads), 0, stream, x, norm_w, eps, gate, h,
               logits, ids, weights, hidden, n_experts, k, renormalise);
    CUDA_CHECK_LAUNCH("norm_router_regs_kernel");
    return;
  }
  norm_router_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(x, norm_w, eps, gate, h, logits, ids, weights,
                                                                       hidden, n_experts, k, renormalise);
  CUDA_CHECK_LAUNCH("norm_router_kernel");
}

}  // namespace moebench::cuda
