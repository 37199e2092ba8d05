// family_ops.cu: the small kernels the MoE families beyond Mixtral add to a layer
// (twins: the loops in engine/cpu_model.cpp): q/k/v bias, q/k RMSNorm in place on the
// fp32 projections, and the sigmoid-gated add of the shared expert; one launch each, so
// a decode step of a 48-layer model pays few extra launches.
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"

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

void add_sigmoid_gated(float* out, const float* y, const float* g, int n, int dim, cudaStream_t stream) {
  MB_NVTX_RANGE("add_sigmoid_gated");
  const int64_t count = static_cast<int64_t>(n) * dim;
  if (count <= 0) return;
  add_sigmoid_gated_kernel<<<static_cast<unsigned>(ceil_div(count, kThreads)), kThreads, 0, stream>>>(out, y, g,
                                                                                                     count, dim);
  CUDA_CHECK_LAUNCH("add_sigmoid_gated_kernel");
}

}  // namespace moebench::cuda
