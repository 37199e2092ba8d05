// router_reweight.cu: see router_reweight.h.
#include "engine/cuda/router_reweight.h"

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"

namespace moebench::cuda {

namespace {
__global__ void router_reweight_kernel(const float* __restrict__ logits, const int32_t* __restrict__ chosen,
                                       int32_t* __restrict__ ids, float* __restrict__ weights, int n, int n_experts,
                                       int k, bool renormalise) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float* li = logits + static_cast<int64_t>(i) * n_experts;
  float mx = li[0];
  for (int e = 1; e < n_experts; ++e) mx = fmaxf(mx, li[e]);
  float sum = 0;
  for (int e = 0; e < n_experts; ++e) sum = __fadd_rn(sum, expf(li[e] - mx));
  float wsum = 0;
  const int64_t row = static_cast<int64_t>(i) * k;
  for (int j = 0; j < k; ++j) {
    const int32_t id = chosen[row + j];
    const float p = __fdiv_rn(expf(li[id] - mx), sum);
    ids[row + j] = id;
    weights[row + j] = p;
    wsum = __fadd_rn(wsum, p);
  }
  if (renormalise)
    for (int j = 0; j < k; ++j) weights[row + j] = __fdiv_rn(weights[row + j], wsum);
}
}  // namespace

void router_reweight(const float* logits, const int32_t* chosen, int32_t* ids, float* weights, int n, int n_experts,
                     int k, bool renormalise, cudaStream_t stream) {
  MB_NVTX_RANGE("router_reweight");
  if (n <= 0) return;
  if (n_experts <= 0 || k <= 0 || k > n_experts)
    fail_msg(msg("cuda::router_reweight: n_experts ", n_experts, " / k ", k, " out of range (1 <= k <= n_experts)"));
  constexpr int kThreads = 128;
  router_reweight_kernel<<<static_cast<unsigned>(ceil_div(n, kThreads)), kThreads, 0, stream>>>(logits, chosen, ids,
                                                                                                weights, n, n_experts, k,
                                                                                                renormalise);
  CUDA_CHECK_LAUNCH("router_reweight_kernel");
}

}  // namespace moebench::cuda
