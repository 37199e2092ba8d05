// rope.cu: rotary embedding, rotate-half (twin: engine/ops/rope.cpp), and kv_store
// (fp32 keys/values of new tokens -> bf16 cache rows). inv_freq and the angle are
// computed in fp32 exactly as the reference: 1 / powf(theta, 2j/d), pos * inv_freq.
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda {

namespace {
// grid (n), block over (j in half) x heads.
__global__ void rope_kernel(float* __restrict__ x, const int32_t* __restrict__ pos, int heads, int head_dim,
                            float theta) {
  const int i = blockIdx.x, half = head_dim / 2;
  float* xi = x + static_cast<int64_t>(i) * heads * head_dim;
  const float p = static_cast<float>(pos[i]);
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const RopeAngle t = rope_angle(p, j, head_dim, theta);
    for (int h = 0; h < heads; ++h) {
      float* v = xi + h * head_dim;
      const float2 r = rope_rotate(v[j], v[j + half], t);
      v[j] = r.x;
      v[j + half] = r.y;
    }
  }
}

__global__ void kv_store_kernel(const float* __restrict__ k, const float* __restrict__ v, bf16* __restrict__ kc,
                                bf16* __restrict__ vc, int64_t row_elems, int pos0) {
  const int i = blockIdx.y;
  const float* ki = k + i * row_elems;
  const float* vi = v + i * row_elems;
  bf16* kd = kc + (static_cast<int64_t>(pos0) + i) * row_elems;
  bf16* vd = vc + (static_cast<int64_t>(pos0) + i) * row_elems;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < row_elems;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    kd[e] = __float2bfloat16_rn(ki[e]);
    vd[e] = __float2bfloat16_rn(vi[e]);
  }
}
}  // namespace

void rope(float* x, const int32_t* pos, int n, int heads, int head_dim, float theta, cudaStream_t stream) {
  MB_NVTX_RANGE("rope");
  if (n <= 0) return;
  const int half = head_dim / 2;
  const int threads = half >= 128 ? 128 : ((half + 31) / 32) * 32;
  rope_kernel<<<n, threads, 0, stream>>>(x, pos, heads, head_dim, theta);
  CUDA_CHECK_LAUNCH("rope_kernel");
}

void kv_store(const float* k, const float* v, bf16* k_cache, bf16* v_cache, int n, int pos0, int n_kv, int head_dim,
              cudaStream_t stream) {
  MB_NVTX_RANGE("kv_store");
  if (n <= 0) return;
  const int64_t row = static_cast<int64_t>(n_kv) * head_dim;
  dim3 grid(static_cast<unsigned>(ceil_div(row, 256)), n);
  kv_store_kernel<<<grid, 256, 0, stream>>>(k, v, k_cache, v_cache, row, pos0);
  CUDA_CHECK_LAUNCH("kv_store_kernel");
}

}  // namespace moebench::cuda
