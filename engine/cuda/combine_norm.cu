// combine_norm.cu: see combine_norm.h.
#include "engine/cuda/combine_norm.h"

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/rmsnorm_row.cuh"

namespace moebench::cuda {

namespace {
constexpr int kThreads = 256;  // rmsnorm()'s block: the norm's sums are ordered alike
constexpr int kMaxTokens = 64;

__global__ void __launch_bounds__(kThreads)
    combine_norm_kernel(const float* __restrict__ y, const float* __restrict__ weights, int k, float* __restrict__ x,
                        const __nv_bfloat16* __restrict__ norm_w, float eps, __nv_bfloat16* __restrict__ h,
                        int hidden) {
  const int t = blockIdx.x;
  float* xt = x + static_cast<int64_t>(t) * hidden;
  // The thread that adds element d is the one that reads it in rmsnorm_row (the same
  // stride): no barrier between the two.
  for (int d = threadIdx.x; d < hidden; d += kThreads) {
    float s = 0;
    for (int j = 0; j < k; ++j) {
      const int p = t * k + j;
      s = fmaf(weights[p], y[static_cast<int64_t>(p) * hidden + d], s);
    }
    xt[d] += s;
  }
  rmsnorm_row<kThreads>(xt, norm_w, h + static_cast<int64_t>(t) * hidden, hidden, eps);
}
}  // namespace

bool combine_norm_supported(int n) { return n >= 1 && n <= kMaxTokens; }

void combine_norm(const float* y, const float* weights, int k, float* x, const __nv_bfloat16* norm_w, float eps,
                  __nv_bfloat16* h, int n, int hidden, cudaStream_t stream) {
  MB_NVTX_RANGE("combine_norm");
  if (!combine_norm_supported(n) || k <= 0 || hidden <= 0)
    fail_msg(msg("cuda::combine_norm: ", n, " tokens of ", hidden, " with top-", k, " (expected 1..", kMaxTokens,
                 " tokens, positive hidden and k)"));
  combine_norm_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(y, weights, k, x, norm_w, eps, h, hidden);
  CUDA_CHECK_LAUNCH("combine_norm_kernel");
}

}  // namespace moebench::cuda
