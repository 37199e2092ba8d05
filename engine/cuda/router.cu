// router.cu: MoE router top-k (twin: engine/ops/router.cpp). One warp per token:
// softmax in fp32 (max subtracted), k rounds of a warp argmax (ties to the lower
// expert index), weights renormalised over the k chosen in j order (or left as the
// softmax's probabilities: norm_topk_prob false).
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/router_topk.cuh"

namespace moebench::cuda {

namespace {
__global__ void router_kernel(const float* __restrict__ logits, int32_t* __restrict__ ids, float* __restrict__ weights,
                              int n, int n_experts, int k, bool renormalise) {
  const int i = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
  if (i >= n) return;
  router_topk_warp(logits + static_cast<int64_t>(i) * n_experts, n_experts, k, ids + static_cast<int64_t>(i) * k,
                   weights + static_cast<int64_t>(i) * k, renormalise);
}
}  // namespace

void router_topk(const float* logits, int32_t* ids, float* weights, int n, int n_experts, int k, cudaStream_t stream,
                 bool renormalise) {
  MB_NVTX_RANGE("router_topk");
  if (n_experts > 256 || k > 8 || k > n_experts || k <= 0)
    fail_msg(msg("cuda::router_topk: n_experts ", n_experts, " / k ", k, " out of range (n_experts <= 256, 1 <= k <= min(8, n_experts))"));
  if (n <= 0) return;
  constexpr int kWarps = 4;
  router_kernel<<<static_cast<unsigned>(ceil_div(n, kWarps)), kWarps * 32, 0, stream>>>(logits, ids, weights, n,
                                                                                        n_experts, k, renormalise);
  CUDA_CHECK_LAUNCH("router_kernel");
}

}  // namespace moebench::cuda
