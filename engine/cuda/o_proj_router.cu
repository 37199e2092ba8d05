// o_proj_router.cu: see o_proj_router.h.
#include "engine/cuda/o_proj_router.h"

#include "engine/cuda/check.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/norm_router_block.cuh"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/pdl.cuh"

namespace moebench::cuda {

namespace {
using detail::kGemvWarps;
static_assert(kGemvWarps * 32 == kNormRouterThreads, "the router's block is the GEMV's block");

__device__ unsigned int g_o_proj_done;

// R rows per warp, U chunks deep: gemv_kernel<1, R, U, kGemvWarps> for o_proj (the same
// gemv_rows, so the same y), then the last block takes the norm + router of the new x.
// Launched programmatically (pdl.cuh) as gemv_kernel is: the wait covers att and x.
template <int R, int U>
__global__ void __launch_bounds__(kGemvWarps * 32)
    o_proj_router_kernel(const __nv_bfloat16* __restrict__ att, const __nv_bfloat16* __restrict__ wo, int q_dim,
                         float* __restrict__ x, const __nv_bfloat16* __restrict__ norm_w, float eps,
                         const __nv_bfloat16* __restrict__ gate, __nv_bfloat16* __restrict__ h,
                         float* __restrict__ logits, int32_t* __restrict__ ids, float* __restrict__ weights, int hidden,
                         int n_experts, int k, bool renormalise) {
  __shared__ bool s_last;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (static_cast<int>(blockIdx.x) * kGemvWarps + warp) * R;
  // Every block loads the gate rows before its wait, as the one-block router launch does:
  // only the last block to finish uses them, and none knows beforehand that it is last.
  bf16x8 gw[kNormRouterRegsPer];
  norm_router_gate_rows(gate, hidden, n_experts, gw);
  pdl_wait();  // att and x come from the kernels before
  pdl_trigger();
  if (row0 < hidden) detail::gemv_rows<1, R, U>(att, wo, x, 1, q_dim, hidden, row0, lane, true);
  __threadfence();  // this block's rows of x reach L2 before its count does
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(&g_o_proj_done, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!s_last) return;  // block-uniform
  __threadfence();
  if (threadIdx.x == 0) g_o_proj_done = 0;  // the next launch starts from zero
  norm_router_from_regs<true>(x, norm_w, eps, gw, h, logits, ids, weights, 0, hidden, n_experts, k, renormalise);
}

using Launch = void (*)(const __nv_bfloat16*, const __nv_bfloat16*, int, float*, const __nv_bfloat16*, float,
                        const __nv_bfloat16*, __nv_bfloat16*, float*, int32_t*, float*, int, int, int, bool);
// The kernel for gemv()'s shape of `hidden` rows; null where none is compiled.
Launch kernel_for(int hidden, int* rows_per_warp) {
  const GemvShape s = gemv_default_shape(hidden);
  *rows_per_warp = s.rows_per_warp;
  if (s.warps != kGemvWarps || s.prefetch != 0 || s.depth * s.rows_per_warp != 8) return nullptr;
  switch (s.rows_per_warp) {
    case 1: return o_proj_router_kernel<1, 8>;
    case 2: return o_proj_router_kernel<2, 4>;
    case 4: return o_proj_router_kernel<4, 2>;
    default: return nullptr;
  }
}
}  // namespace

bool o_proj_norm_router_supported(int q_dim, int hidden, int n_experts, int k, const void* att, const void* wo,
                                  const void* gate, const void* h) {
  int rows = 0;
  return q_dim > 0 && q_dim % 8 == 0 && norm_router_regs_shape(hidden, n_experts) && k >= 1 && k <= n_experts &&
         aligned16(att) && aligned16(wo) && aligned16(gate) && aligned16(h) && kernel_for(hidden, &rows) != nullptr;
}

void o_proj_norm_router(const __nv_bfloat16* att, const __nv_bfloat16* wo, int q_dim, float* x,
                        const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate, __nv_bfloat16* h,
                        float* logits, int32_t* ids, float* weights, int hidden, int n_experts, int k,
                        cudaStream_t stream, bool renormalise) {
  MB_NVTX_RANGE("o_proj_norm_router");
  int R = 1;
  const Launch kernel = kernel_for(hidden, &R);
  launch_pdl(kernel, dim3(static_cast<unsigned>(ceil_div(hidden, kGemvWarps * R))), dim3(kGemvWarps * 32), 0, stream,
             att, wo, q_dim, x, norm_w, eps, gate, h, logits, ids, weights, hidden, n_experts, k, renormalise);
  CUDA_CHECK_LAUNCH("o_proj_router_kernel");
}

}  // namespace moebench::cuda
