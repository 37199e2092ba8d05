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
// Weights are read once: keep them out of L1 (ld.global.nc.L1::no_allocate). 16 bytes
// (16-byte aligned) as four 32-bit words, or as 8 bf16.
__device__ __forceinline__ uint4 load16_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}
__device__ __forceinline__ bf16x8 load8_stream(const __nv_bfloat16* p) {
  const uint4 r = load16_stream(p);
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

// Rotate-half RoPE as engine/ops/rope.cpp computes it in fp32: the pair j's angle at
// position p is p * inv_freq with inv_freq = 1 / powf(theta, 2j/d); the pair (a, b) =
// (x[j], x[j + d/2]) becomes (a cos - b sin, b cos + a sin). rope.cu and paged_kv.cu
// share these, so their results are bit-identical.
struct RopeAngle {
  float s, c;
};
__device__ __forceinline__ RopeAngle rope_angle(float p, int j, int head_dim, float theta) {
  const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * j) / static_cast<float>(head_dim));
  RopeAngle r;
  sincosf(p * inv_freq, &r.s, &r.c);
  return r;
}
// The fused multiply-adds are spelled out: left to the compiler, contraction of
// `a * c - b * s` may differ between kernels (and did), and the kernels must agree
// bit for bit.
__device__ __forceinline__ float2 rope_rotate(float a, float b, RopeAngle t) {
  return make_float2(fmaf(a, t.c, -(b * t.s)), fmaf(b, t.c, a * t.s));
}

// Ask L2 for [p, p + bytes) (p 16-byte aligned, bytes a multiple of 16) without waiting:
// one bulk prefetch (cp.async.bulk.prefetch.L2, Hopper); nothing before Hopper.
__device__ __forceinline__ void l2_prefetch_bulk(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

__host__ __device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace moebench::cuda
