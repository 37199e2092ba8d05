// norm_router_cluster.cu: see norm_router_cluster.h.
#include "engine/cuda/norm_router_cluster.h"

#include <cooperative_groups.h>

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/norm_router_block.cuh"
#include "engine/cuda/pdl.cuh"
#include "engine/cuda/rmsnorm_row.cuh"
#include "engine/cuda/router_topk.cuh"

namespace moebench::cuda {

namespace {
namespace cg = cooperative_groups;

constexpr int kThreads = 256;  // rmsnorm()'s block: the norm's sums in its order
constexpr int kWarps = kThreads / 32;
constexpr int kRows = 2 * kWarps;  // expert rows per block, two per warp (the wide launch's)
constexpr int kMaxTokens = 8;
constexpr int kMaxBlocks = 8;  // a portable cluster
constexpr int kMinExperts = 32;
constexpr int kMaxExperts = kRows * kMaxBlocks;
constexpr int kPer = 8;  // x elements per thread and gate chunks per lane: hidden <= 2048
constexpr int kMaxHidden = kThreads * kPer;

// Block-wide (every thread): the softmax top-k of one token's logits li, the same ids and
// weights as router_topk_warp. Warp 0 takes the softmax (router_softmax_warp: the same
// probabilities); then each expert's thread counts the experts ahead of it (a higher
// probability, or the same at a lower index: the order in which router_topk_warp's rounds
// take them) and, with fewer than k ahead, puts itself at that place; thread 0 writes the k
// out and sums their weights in place order, as the rounds do. One pass of comparisons side
// by side instead of k dependent rounds of warp reductions.
[[maybe_unused]] __device__ __forceinline__ void topk_by_rank(const float* li, int n_experts, int k, int32_t* __restrict__ ids_i,
                                             float* __restrict__ w_i, bool renormalise) {
  __shared__ float s_p[kMaxExperts];
  __shared__ int s_id[8];
  __shared__ float s_w[8];
  if (threadIdx.x < 32) {
    float v[kRouterMaxPerLane];
    router_softmax_warp(li, n_experts, v);
#pragma unroll
    for (int c = 0; c < kRouterMaxPerLane; ++c)
      if (threadIdx.x + 32 * c < n_experts) s_p[threadIdx.x + 32 * c] = v[c];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n_experts; e += kThreads) {
    const float pe = s_p[e];
    int ahead = 0;
#pragma unroll 4
    for (int o = 0; o < n_experts; ++o) {
      const float po = s_p[o];
      ahead += (po > pe || (po == pe && o < e)) ? 1 : 0;
    }
    if (ahead < k) {
      s_id[ahead] = e;
      s_w[ahead] = pe;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float wsum = 0;
    for (int j = 0; j < k; ++j) {
      ids_i[j] = s_id[j];
      wsum += s_w[j];
    }
    for (int j = 0; j < k; ++j) w_i[j] = renormalise ? s_w[j] / wsum : s_w[j];
  }
}

// Grid (n, ceil(n_experts / kRows)), clusters (1, gridDim.y): one cluster per token. Warp
// w of block y takes expert rows 16 y + 2 w and + 1 with both rows' chunks (lane + 32 u,
// u in order: the wide launch's single iteration at hidden <= 2048) and the norm weights
// loaded before the wait; then x (thread t: t + 256 u, rmsnorm_row's order), the norm into
// shared memory (block 0 also writes h out), the dots, and the logits into global memory
// and into block 0's shared memory; after the cluster barrier block 0's first warp takes
// the top-k from there.
__global__ void __launch_bounds__(kThreads)
    norm_router_cluster_kernel(const float* __restrict__ x, const __nv_bfloat16* __restrict__ norm_w, float eps,
                               const __nv_bfloat16* __restrict__ gate, __nv_bfloat16* __restrict__ h,
                               float* __restrict__ logits, int32_t* __restrict__ ids, float* __restrict__ weights,
                               int hidden, int n_experts, int k, bool renormalise, bool by_rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();  // clusters are Hopper's: never launched before it (norm_router_cluster_supported)
#else
  __shared__ __align__(16) __nv_bfloat16 s_h[kMaxHidden];
  __shared__ float s_logits[kMaxExperts];  // block 0's: the token's every logit
  cg::cluster_group cluster = cg::this_cluster();
  // A block may write into another's shared memory only once that block runs: every
  // thread arrives here and waits (long after, at no cost) before the first such write.
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  const int i = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int per = hidden / kThreads;  // also the gate chunks per lane
  const int e0 = blockIdx.y * kRows + 2 * warp;
  const int rows = max(0, min(2, n_experts - e0));  // warp-uniform
  const __nv_bfloat16* g0 = gate + static_cast<int64_t>(min(e0, n_experts - 1)) * hidden;
  const __nv_bfloat16* g1 = rows > 1 ? g0 + hidden : g0;
  bf16x8 w0[kPer], w1[kPer];
  __nv_bfloat16 nw[kPer];
  if (rows > 0) {
#pragma unroll
    for (int u = 0; u < kPer; ++u)
      if (u < per) {
        w0[u] = load8_stream(g0 + 8 * (lane + 32 * u));
        w1[u] = load8_stream(g1 + 8 * (lane + 32 * u));
      }
  }
  norm_weights_regs<kThreads>(norm_w, per, nw);
  pdl_wait();  // x comes from the previous kernel
  pdl_trigger();
  // x: plain loads (the previous kernel wrote it); block 0 writes h out.
  norm_row_regs<kThreads, false>(x + static_cast<int64_t>(i) * hidden, nw, per, hidden, eps, s_h,
                                 blockIdx.y == 0 ? h + static_cast<int64_t>(i) * hidden : nullptr);
  __syncthreads();
  float* lead = cluster.map_shared_rank(&s_logits[0], 0);
  float acc0 = 0, acc1 = 0;
  if (rows > 0) {
#pragma unroll
    for (int u = 0; u < kPer; ++u)
      if (u < per) {
        const bf16x8 hv = load8(s_h + 8 * (lane + 32 * u));
        acc0 = router_chunk_dot(w0[u], hv, acc0);
        acc1 = router_chunk_dot(w1[u], hv, acc1);
      }
    acc0 = warp_sum(acc0);
    acc1 = warp_sum(acc1);
  }
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");  // every block of the cluster runs
  if (rows > 0) {
    if (lane == 0) {
      logits[static_cast<int64_t>(i) * n_experts + e0] = acc0;
      lead[e0] = acc0;
      if (rows > 1) {
        logits[static_cast<int64_t>(i) * n_experts + e0 + 1] = acc1;
        lead[e0 + 1] = acc1;
      }
    }
  }
  cluster.sync();  // every block's logits in block 0's shared memory; no block leaves before
  if (!ids || cluster.block_rank() != 0) return;  // block-uniform
  if (by_rank)
    topk_by_rank(s_logits, n_experts, k, ids + static_cast<int64_t>(i) * k, weights + static_cast<int64_t>(i) * k,
                 renormalise);
  else if (threadIdx.x < 32)
    router_topk_warp(s_logits, n_experts, k, ids + static_cast<int64_t>(i) * k, weights + static_cast<int64_t>(i) * k,
                     renormalise);
#endif
}
}  // namespace

bool norm_router_cluster_supported(int n, int hidden, int n_experts, int k, const void* gate, const void* h) {
  return n >= 1 && n <= kMaxTokens && hidden > 0 && hidden % kThreads == 0 && hidden <= kMaxHidden &&
         n_experts >= kMinExperts && n_experts <= kMaxExperts && k >= 1 && k <= 8 && k <= n_experts &&
         aligned16(gate) && aligned16(h) && device_info_cached().cc_major >= 9;  // clusters: Hopper
}

namespace {
EnvSwitch g_cluster{"MOEBENCH_NORM_ROUTER_CLUSTER", 1};
EnvSwitch g_rank{"MOEBENCH_ROUTER_TOPK_RANK", 0};
}  // namespace

bool norm_router_cluster_enabled() { return g_cluster.get(); }
void set_norm_router_cluster(bool on) { g_cluster.set(on); }
bool router_topk_by_rank_enabled() { return g_rank.get(); }
void set_router_topk_by_rank(bool on) { g_rank.set(on); }

void norm_router_cluster(const float* x, const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate,
                         __nv_bfloat16* h, float* logits, int32_t* ids, float* weights, int n, int hidden,
                         int n_experts, int k, cudaStream_t stream, bool renormalise) {
  MB_NVTX_RANGE("norm_router_cluster");
  if (!norm_router_cluster_supported(n, hidden, n_experts, k, gate, h))
    fail_msg(msg("cuda::norm_router_cluster: ", n, " tokens, hidden ", hidden, ", ", n_experts, " experts, top-", k,
                 " not supported (<= 8 tokens, hidden a multiple of 256 up to 2048, 32..128 experts, k <= 8, "
                 "16-byte aligned gate and h)"));
  const unsigned blocks = static_cast<unsigned>(ceil_div(n_experts, kRows));
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 1;
  attr[0].val.clusterDim.y = blocks;
  attr[0].val.clusterDim.z = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(n), blocks);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled(stream) ? 2 : 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, norm_router_cluster_kernel, x, norm_w, eps, gate, h, logits, ids, weights, hidden,
                                n_experts, k, renormalise, router_topk_by_rank_enabled()));
  CUDA_CHECK_LAUNCH("norm_router_cluster_kernel");
}

}  // namespace moebench::cuda
