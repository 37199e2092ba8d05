// common.cuh: small device helpers shared by the kernels (.cu only): warp
// reductions, 16-byte bf16x8 loads, grid-size arithmetic.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace moebench::cuda {

__host__ __device__ constexpr inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// 8 bf16 in one 16-byte load (the pointer must be 16-byte aligned).
struct alignas(16) bf16x8 {
  __nv_bfloat162 h[4];
};
__device__ __forceinline__ bf16x8 load8(const __nv_bfloat16* p) { return *reinterpret_cast<const bf16x8*>(p); }
// Weights are read once: keep them out of L1 (ld.global.nc.L1::no_allocate).
__device__ __forceinline__ bf16x8 load8_stream(const __nv_bfloat16* p) {
  int4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  bf16x8 out;
  memcpy(&out, &r, 16);
  return out;
}
__device__ __forceinline__ void to_float8(const bf16x8& v, float f[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 t = __bfloat1622float2(v.h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
// Sum over 8 lanes of a*b, in fp32.
__device__ __forceinline__ float dot8(const float a[8], const float b[8]) {
  float s = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) s = fmaf(a[i], b[i], s);
  return s;
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace moebench::cuda
