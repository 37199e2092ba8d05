// paged_kv.cu: rope + store of new keys/values into the paged KV pool (twin:
// engine/ops/paged_kv.cpp), and the row gather that picks the sampled tokens' hidden
// states. The rope arithmetic is rope.cu's (1 / powf(theta, 2j/d), sincosf of pos *
// inv_freq), so results are bit-identical to rope() followed by kv_store().
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/pdl.cuh"

namespace moebench::cuda {

namespace {
// grid (m, n_heads + 2 * n_kv): block (i, y) handles one head of token i — y < n_heads a
// query head (rotated in place), then the n_kv key heads (rotated on their way to the
// pool), then the n_kv value heads (copied). Each thread rotates one (j, j + half) pair:
// no serial loop over heads, so the launch is one short dependent load per thread.
__global__ void rope_kv_store_paged_kernel(float* __restrict__ q, const float* __restrict__ k,
                                           const float* __restrict__ v, const int32_t* __restrict__ pos,
                                           const int32_t* __restrict__ slot, bf16* __restrict__ kp,
                                           bf16* __restrict__ vp, int n_heads, int n_kv, int head_dim, float theta) {
  const int i = blockIdx.x, y = blockIdx.y, half = head_dim / 2;
  const int64_t row = static_cast<int64_t>(n_kv) * head_dim;
  // Before the wait: the step's inputs (positions and slots, copied before its first
  // kernel) and this thread's first angle; only q, k, v come from the previous kernel.
  const float p = static_cast<float>(pos[i]);
  const int64_t at = static_cast<int64_t>(slot[i]) * row;
  const bool rotates = y < n_heads + n_kv;
  RopeAngle first{};
  if (rotates && static_cast<int>(threadIdx.x) < half) first = rope_angle(p, threadIdx.x, head_dim, theta);
  auto angle = [&](int j) { return j == static_cast<int>(threadIdx.x) ? first : rope_angle(p, j, head_dim, theta); };
  pdl_wait();  // q, k, v come from the previous kernel
  pdl_trigger();
  if (!rotates) {  // value head: copy
    const int h = y - n_heads - n_kv;
    const float* vi = v + i * row + static_cast<int64_t>(h) * head_dim;
    bf16* vd = vp + at + static_cast<int64_t>(h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) vd[d] = __float2bfloat16_rn(vi[d]);
    return;
  }
  if (y < n_heads) {  // query head, in place
    float* x = q + (static_cast<int64_t>(i) * n_heads + y) * head_dim;
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
      const float2 r = rope_rotate(x[j], x[j + half], angle(j));
      x[j] = r.x;
      x[j + half] = r.y;
    }
    return;
  }
  const int h = y - n_heads;  // key head
  const float* ki = k + i * row + static_cast<int64_t>(h) * head_dim;
  bf16* kd = kp + at + static_cast<int64_t>(h) * head_dim;
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const float2 r = rope_rotate(ki[j], ki[j + half], angle(j));
    kd[j] = __float2bfloat16_rn(r.x);
    kd[j + half] = __float2bfloat16_rn(r.y);
  }
  if (head_dim % 2 == 1 && threadIdx.x == 0) kd[head_dim - 1] = __float2bfloat16_rn(ki[head_dim - 1]);  // unrotated
}

__global__ void gather_rows_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows,
                                   float* __restrict__ out, int dim) {
  const float* src = x + static_cast<int64_t>(rows[blockIdx.x]) * dim;
  float* dst = out + static_cast<int64_t>(blockIdx.x) * dim;
  for (int d = threadIdx.x; d < dim; d += blockDim.x) dst[d] = src[d];
}
}  // namespace

void rope_kv_store_paged(float* q, const float* k, const float* v, const int32_t* pos, const int32_t* slot,
                         bf16* k_pool, bf16* v_pool, int m, int n_heads, int n_kv, int head_dim, float theta,
                         cudaStream_t stream) {
  MB_NVTX_RANGE("rope_kv_store_paged");
  if (m <= 0) return;
  const int half = head_dim / 2;
  const int threads = half >= 128 ? 128 : half <= 32 ? 32 : ((half + 31) / 32) * 32;
  const dim3 grid(static_cast<unsigned>(m), static_cast<unsigned>(n_heads + 2 * n_kv));
  launch_pdl(rope_kv_store_paged_kernel, grid, dim3(threads), 0, stream, q, k, v, pos, slot, k_pool, v_pool, n_heads, n_kv,
             head_dim, theta);
  CUDA_CHECK_LAUNCH("rope_kv_store_paged_kernel");
}

void gather_rows(const float* x, const int32_t* rows, float* out, int n, int dim, cudaStream_t stream) {
  MB_NVTX_RANGE("gather_rows");
  if (n <= 0) return;
  gather_rows_kernel<<<n, 256, 0, stream>>>(x, rows, out, dim);
  CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

}  // namespace moebench::cuda
