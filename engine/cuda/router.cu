// router.cu: MoE router top-k (twin: engine/ops/router.cpp). One warp per token:
// softmax in fp32 (max subtracted), k rounds of a warp argmax (ties to the lower
// expert index), weights renormalised over the k chosen in j order (or left as the
// softmax's probabilities: norm_topk_prob false).
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda {

namespace {
constexpr int kMaxPerLane = 8;  // 256 experts
__global__ void router_kernel(const float* __restrict__ logits, int32_t* __restrict__ ids, float* __restrict__ weights,
                              int n, int n_experts, int k, bool renormalise) {
  const int i = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (i >= n) return;
  const float* li = logits + static_cast<int64_t>(i) * n_experts;
  float v[kMaxPerLane];
  float mx = -INFINITY;
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int e = lane + 32 * c;
    v[c] = e < n_experts ? li[e] : -INFINITY;
    mx = fmaxf(mx, v[c]);
  }
  mx = warp_max(mx);
  float sum = 0;
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int e = lane + 32 * c;
    v[c] = e < n_experts ? expf(v[c] - mx) : 0.0f;
    sum += v[c];
  }
  sum = warp_sum(sum);
  bool taken[kMaxPerLane];
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) {
    v[c] = v[c] / sum;
    taken[c] = lane + 32 * c >= n_experts;
  }
  float wsum = 0;
  int32_t* ids_i = ids + static_cast<int64_t>(i) * k;
  float* w_i = weights + static_cast<int64_t>(i) * k;
  for (int j = 0; j < k; ++j) {
    float best = -1.0f;
    int best_e = 0x7fffffff;
#pragma unroll
    for (int c = 0; c < kMaxPerLane; ++c)
      if (!taken[c] && v[c] > best) {  // c ascending: first max wins within the lane
        best = v[c];
        best_e = lane + 32 * c;
      }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oe = __shfl_xor_sync(0xffffffffu, best_e, o);
      if (ob > best || (ob == best && oe < best_e)) {
        best = ob;
        best_e = oe;
      }
    }
#pragma unroll
    for (int c = 0; c < kMaxPerLane; ++c)
      if (lane + 32 * c == best_e) taken[c] = true;
    if (lane == 0) {
      ids_i[j] = best_e;
      w_i[j] = best;
    }
    wsum += best;
  }
  if (lane == 0 && renormalise)
    for (int j = 0; j < k; ++j) w_i[j] = w_i[j] / wsum;
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
