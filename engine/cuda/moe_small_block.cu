// moe_small_block.cu: see moe_small_block.h.
#include "engine/cuda/moe_small_block.h"

#include <algorithm>

#include "engine/cuda/async_copy.cuh"
#include "engine/cuda/check.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/moe_small_experts.h"
#include "engine/cuda/moe_small_rows.cuh"
#include "engine/cuda/pdl.cuh"
#include "engine/cuda/rmsnorm_row.cuh"
#include "engine/cuda/router_topk.cuh"

namespace moebench::cuda {

namespace {
constexpr int kThreads = 256;  // norm_router's block: the norm's sums are ordered alike
constexpr int kWarps = kThreads / 32;
constexpr int kMaxExperts = kRouterMaxPerLane * 32;
constexpr int kMaxSlots = 8;
constexpr int kMaxHidden = 16384;  // the normed token in shared memory: 32 KiB
constexpr int kGateChunks = 8;     // router row chunks per lane issued before the wait
constexpr int kGuRows = 4, kGuDepth = 2;   // moe_decode_small's default gate/up shape
constexpr int kDnSlots = 4, kDnDepth = 4;  // and its down slots in flight
constexpr int kOprojDepth = 8;             // o_proj chunks in flight per lane

// Barrier counters (arrivals after A, after B, after the o_proj phase, blocks done), zero
// between launches.
__device__ unsigned int g_block_bar[4];

// Every block of the grid (all resident) arrives; none leaves before all have arrived.
// What blocks wrote before is read after it through L2 (__ldcg), not L1.
__device__ __forceinline__ void grid_barrier(unsigned* count, unsigned blocks) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(count, 1u);
    while (async::ld_acquire_u32(count) < blocks) {
    }
    __threadfence();
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads, 2)
    moe_small_block_kernel(float* x_in, const __nv_bfloat16* att, const __nv_bfloat16* __restrict__ wo, int q_dim,
                           const __nv_bfloat16* __restrict__ norm_w, float eps,
                           const __nv_bfloat16* __restrict__ gate, __nv_bfloat16* __restrict__ h,
                           float* __restrict__ logits, int32_t* __restrict__ ids, float* __restrict__ weights,
                           const __nv_bfloat16* const* __restrict__ w1s, const __nv_bfloat16* const* __restrict__ w3s,
                           const __nv_bfloat16* const* __restrict__ w2s, __nv_bfloat16* __restrict__ moe_h,
                           float* out, int k, int n_experts, int hidden, int inter, bool renormalise) {
  extern __shared__ __align__(16) unsigned char block_smem[];
  __nv_bfloat16* hs = reinterpret_cast<__nv_bfloat16*>(block_smem);
  __shared__ float s_logits[kMaxExperts];
  __shared__ int32_t s_ids[kMaxSlots];
  __shared__ float s_wts[kMaxSlots];
  __shared__ const __nv_bfloat16* s_w2[kMaxSlots];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gwarp = blockIdx.x * kWarps + warp, total_warps = gridDim.x * kWarps;
  const unsigned blocks = gridDim.x;
  const int chunks = hidden / 8;

  // 0 (att given): x_in[row] += wo[row] . att, a warp per row (gemv_kernel's sums: the same
  // bits as o_proj's launch), its rows asked of L2 before the wait; x_in read through L2
  // only, so no L1 of this kernel holds a line of it when A reads the updated rows.
  if (att && gwarp < hidden && lane < 4) {
    const int quarter = q_dim / 4;
    l2_prefetch_bulk(wo + static_cast<int64_t>(gwarp) * q_dim + lane * quarter, static_cast<unsigned>(quarter) * 2u);
  }
  // A: the router row of this warp (its first chunks before the wait: weights), the norm.
  const bool routes = gwarp < n_experts;
  const __nv_bfloat16* g = gate + static_cast<int64_t>(routes ? gwarp : 0) * hidden;
  bf16x8 gw[kGateChunks];
#pragma unroll
  for (int u = 0; u < kGateChunks; ++u) {
    const int c = lane + 32 * u;
    if (routes && c < chunks) gw[u] = load8_stream(g + 8 * c);
  }
  pdl_wait();  // x_in (and att) come from the previous kernel
  if (att) {
    for (int row = gwarp; row < hidden; row += total_warps) {
      const __nv_bfloat16* wr[1] = {wo + static_cast<int64_t>(row) * q_dim};
      const __nv_bfloat16* ar[1] = {att};
      float acc[1][1];
      detail::gemv_dot<1, 1, kOprojDepth>(wr, ar, 1, q_dim / 8, lane, acc);
      const float sum = warp_sum(acc[0][0]);
      if (lane == 0) __stcg(x_in + row, __ldcg(x_in + row) + sum);
    }
    grid_barrier(&g_block_bar[2], blocks);
  }
  rmsnorm_row<kThreads>(x_in, norm_w, hs, hidden, eps);
  __syncthreads();
  if (blockIdx.x == 0)
    for (int c = threadIdx.x; c < chunks; c += kThreads) *reinterpret_cast<bf16x8*>(h + 8 * c) = load8(hs + 8 * c);
  if (routes) {
    float acc = 0;  // chunks c = lane, lane + 32, ... ascending: the wide router's order
#pragma unroll
    for (int u = 0; u < kGateChunks; ++u) {
      const int c = lane + 32 * u;
      if (c < chunks) acc = router_chunk_dot(gw[u], load8(hs + 8 * c), acc);
    }
    for (int c = lane + 32 * kGateChunks; c < chunks; c += 32)
      acc = router_chunk_dot(load8_stream(g + 8 * c), load8(hs + 8 * c), acc);
    acc = warp_sum(acc);
    if (lane == 0) logits[gwarp] = acc;
  }
  grid_barrier(&g_block_bar[0], blocks);
  pdl_trigger();  // every block is resident now: the next kernel's blocks cannot crowd one out

  // B: the top-k (every block the same), then the slots' gate/up rows.
  for (int e = threadIdx.x; e < n_experts; e += kThreads) s_logits[e] = __ldcg(logits + e);
  __syncthreads();
  if (warp == 0) router_topk_warp(s_logits, n_experts, k, s_ids, s_wts, renormalise);
  __syncthreads();
  if (threadIdx.x < k) {
    s_w2[threadIdx.x] = w2s[s_ids[threadIdx.x]];
    if (blockIdx.x == 0) {
      ids[threadIdx.x] = s_ids[threadIdx.x];
      weights[threadIdx.x] = s_wts[threadIdx.x];
    }
  }
  for (int t = gwarp; t * kGuRows < k * inter; t += total_warps) {
    const int flat = t * kGuRows, slot = flat / inter;
    const int e = s_ids[slot];
    small_rows::gate_up_warp<kGuRows, kGuDepth>(hs, w1s[e], w3s[e], moe_h, slot, flat - slot * inter, hidden, inter,
                                                lane);
  }
  // The first down row's k slot rows (weights) requested into L2 before the barrier: lane
  // j takes slot j's row, one bulk prefetch each, no registers held across the wait.
  __syncthreads();  // s_w2
  if (gwarp < hidden && lane < k)
    l2_prefetch_bulk(s_w2[lane] + static_cast<int64_t>(gwarp) * inter, static_cast<unsigned>(inter) * 2u);
  grid_barrier(&g_block_bar[1], blocks);

  // C: a warp per output row over all k slots (small_down_kernel's sums), into out.
  for (int row = gwarp; row < hidden; row += total_warps) {
    const float old = lane == 0 ? out[row] : 0.0f;
    const float total =
        small_rows::down_row<kDnSlots, kDnDepth, true>(moe_h, s_w2, s_wts, row, k, inter, lane, [](int, int) {});
    if (lane == 0) out[row] = old + total;
  }

  // The last block out zeroes the counters: every block has passed both barriers.
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(&g_block_bar[3], 1u) == blocks - 1) {
      g_block_bar[0] = 0;
      g_block_bar[1] = 0;
      g_block_bar[2] = 0;
      g_block_bar[3] = 0;
      __threadfence();
    }
  }
}

// Blocks of the kernel one SM holds at once with `smem` bytes of dynamic shared memory,
// times the SMs: the most blocks the grid barrier can wait on. Per device, cached.
int resident_blocks(size_t smem) {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  constexpr int kMaxDevices = 64;
  static int cached[kMaxDevices] = {};
  static size_t cached_smem[kMaxDevices] = {};
  if (dev < kMaxDevices && cached[dev] > 0 && cached_smem[dev] == smem) return cached[dev];
  int per_sm = 0, sms = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, moe_small_block_kernel, kThreads, smem));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const int n = per_sm * sms;
  if (dev < kMaxDevices) {
    cached[dev] = n;
    cached_smem[dev] = smem;
  }
  return n;
}
}  // namespace

namespace {
int block_mode() {
  static const int mode = env_choice("MOEBENCH_SMALL_MOE_BLOCK", {0, 1, 2, 3, 4}, 0);
  return mode;
}

void launch_block(float* x_in, const __nv_bfloat16* att, const __nv_bfloat16* wo, int q_dim,
                  const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate, __nv_bfloat16* h, float* logits,
                  int32_t* ids, float* weights, const __nv_bfloat16* const* w1s, const __nv_bfloat16* const* w3s,
                  const __nv_bfloat16* const* w2s, __nv_bfloat16* moe_h, float* out, int k, int n_experts, int hidden,
                  int inter, bool renormalise, cudaStream_t stream) {
  if (!moe_small_block_supported(1, k, n_experts, hidden, inter, gate, h) || !aligned16(moe_h))
    fail_msg(msg("cuda::moe_small_block: top-", k, " of ", n_experts, " experts, hidden ", hidden, ", inter ", inter,
                 " not supported (k <= 8, 32..256 experts, hidden % 8 == 0 and <= ", kMaxHidden,
                 ", inter % 8 == 0, 16-byte aligned gate, h and moe_h)"));
  if (att && !moe_small_block_o_proj_supported(q_dim, att, wo))
    fail_msg(msg("cuda::moe_small_block_o_proj: q_dim ", q_dim,
                 " not supported (a multiple of 32, 16-byte aligned att and wo)"));
  const size_t smem = static_cast<size_t>(hidden) * sizeof(__nv_bfloat16);
  const int64_t warps_needed = std::max<int64_t>({n_experts, ceil_div(static_cast<int64_t>(k) * inter, kGuRows), hidden});
  int resident = resident_blocks(smem);
  if (block_mode() == 2) {  // one block per SM: room beside it for the next kernel's early blocks
    int dev = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    resident = std::min(resident, sms);
  }
  const int grid = static_cast<int>(std::min<int64_t>(ceil_div(warps_needed, kWarps), resident));
  if (grid * kWarps < n_experts)
    fail_msg(msg("cuda::moe_small_block: ", resident, " resident blocks of ", kWarps, " warps cannot take ", n_experts,
                 " router rows"));
  launch_pdl(moe_small_block_kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads), smem, stream, x_in, att, wo,
             q_dim, norm_w, eps, gate, h, logits, ids, weights, w1s, w3s, w2s, moe_h, out, k, n_experts, hidden, inter,
             renormalise);
  CUDA_CHECK_LAUNCH("moe_small_block_kernel");
}
}  // namespace

bool moe_small_block_enabled() { return block_mode() != 0; }
bool moe_small_block_o_proj_enabled() { return block_mode() >= 3; }
bool moe_small_block_skips_side_prefetch() { return block_mode() == 4; }

bool moe_small_block_supported(int n, int k, int n_experts, int hidden, int inter, const void* gate, const void* h) {
  return small_experts_supported(n, k, n_experts, hidden, inter) && k <= kMaxSlots && n_experts <= kMaxExperts &&
         hidden <= kMaxHidden && inter % kGuRows == 0 && aligned16(gate) && aligned16(h);
}

bool moe_small_block_o_proj_supported(int q_dim, const void* att, const void* wo) {
  return q_dim > 0 && q_dim % 32 == 0 && aligned16(att) && aligned16(wo);
}

void moe_small_block(const float* x_in, const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate,
                     __nv_bfloat16* h, float* logits, int32_t* ids, float* weights, const __nv_bfloat16* const* w1s,
                     const __nv_bfloat16* const* w3s, const __nv_bfloat16* const* w2s, __nv_bfloat16* moe_h,
                     float* out, int k, int n_experts, int hidden, int inter, bool renormalise, cudaStream_t stream) {
  MB_NVTX_RANGE("moe_small_block");
  // Without att the kernel only reads x_in.
  launch_block(const_cast<float*>(x_in), nullptr, nullptr, 0, norm_w, eps, gate, h, logits, ids, weights, w1s, w3s,
               w2s, moe_h, out, k, n_experts, hidden, inter, renormalise, stream);
}

void moe_small_block_o_proj(const __nv_bfloat16* att, const __nv_bfloat16* wo, int q_dim, float* x,
                            const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate, __nv_bfloat16* h,
                            float* logits, int32_t* ids, float* weights, const __nv_bfloat16* const* w1s,
                            const __nv_bfloat16* const* w3s, const __nv_bfloat16* const* w2s, __nv_bfloat16* moe_h,
                            int k, int n_experts, int hidden, int inter, bool renormalise, cudaStream_t stream) {
  MB_NVTX_RANGE("moe_small_block_o_proj");
  launch_block(x, att, wo, q_dim, norm_w, eps, gate, h, logits, ids, weights, w1s, w3s, w2s, moe_h, x, k, n_experts,
               hidden, inter, renormalise, stream);
}

}  // namespace moebench::cuda
