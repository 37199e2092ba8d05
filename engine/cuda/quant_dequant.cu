// quant_dequant.cu: see quant_dequant.h.
#include <cuda_fp8.h>

#include <algorithm>

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/quant_dequant.h"

namespace moebench::cuda {

namespace {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float f32_at(const uint8_t* p, int64_t i) { return reinterpret_cast<const float*>(p)[i]; }
__device__ __forceinline__ float bf16_at(const uint8_t* p, int64_t i) {
  return __bfloat162float(reinterpret_cast<const bf16*>(p)[i]);
}

// The nibble of the paired word order (int4_pair_words) that holds code i (0 .. 7) of a word.
__host__ __device__ __forceinline__ int paired_nibble(int i) { return (i & 1) ? 4 + (i >> 1) : i >> 1; }

// One thread per element (grid-stride): the value of element (r, c) as quant.cpp defines it.
template <QuantFormat F, bool kPaired = false>
__global__ void dequantize_kernel(int64_t rows, int64_t cols, const uint8_t* __restrict__ q,
                                  const uint8_t* __restrict__ scale, const uint8_t* __restrict__ zero,
                                  bf16* __restrict__ out) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    float v;
    if constexpr (F == QuantFormat::fp8) {
      __nv_fp8_e4m3 e;
      e.__x = q[i];
      v = static_cast<float>(e) * f32_at(scale, (r / kFp8Block) * ceil_div(cols, kFp8Block) + c / kFp8Block);
    } else if constexpr (F == QuantFormat::int8) {
      v = static_cast<float>(static_cast<int8_t>(q[i])) * f32_at(scale, r);
    } else {  // int4
      const int64_t g = r * ceil_div(cols, kInt4Group) + c / kInt4Group;
      int u;
      if constexpr (kPaired) {  // code c % 8 of the row's word c / 8, at its paired nibble
        const uint32_t w = reinterpret_cast<const uint32_t*>(q + r * (cols / 2))[c / 8];
        u = static_cast<int>(w >> (4 * paired_nibble(static_cast<int>(c % 8)))) & 0xf;
      } else {
        const uint8_t b = q[r * (cols / 2) + c / 2];
        u = (c & 1) ? b >> 4 : b & 0xf;
      }
      const int z = zero ? zero[g] : 8;
      v = static_cast<float>(u - z) * bf16_at(scale, g);
    }
    out[i] = __float2bfloat16_rn(v);
  }
}

__global__ void int4_pair_kernel(uint32_t* __restrict__ q, int64_t words) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < words;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t w = q[i];
    uint32_t p = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) p |= ((w >> (4 * j)) & 0xfu) << (4 * paired_nibble(j));
    q[i] = p;
  }
}

__global__ void silu_mul_kernel(const float* __restrict__ g, const float* __restrict__ u, bf16* __restrict__ h,
                                int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float a = g[i];
    h[i] = __float2bfloat16_rn(a / (1.0f + __expf(-a)) * u[i]);
  }
}

unsigned grid_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(ceil_div(n, 256), 8192)); }

}  // namespace

void dequantize_bf16(QuantFormat f, int64_t rows, int64_t cols, const uint8_t* q, const uint8_t* scale,
                     const uint8_t* zero, bf16* out, cudaStream_t stream, bool int4_paired) {
  const int64_t n = rows * cols;
  if (n <= 0) return;
  if (f == QuantFormat::int4 && cols % 8 != 0) fail_msg(msg("dequantize_bf16: int4 needs cols % 8 == 0, got ", cols));
  const unsigned grid = grid_for(n);
  switch (f) {
    case QuantFormat::bf16:
      CUDA_CHECK(cudaMemcpyAsync(out, q, static_cast<size_t>(n) * sizeof(bf16), cudaMemcpyDeviceToDevice, stream));
      return;
    case QuantFormat::fp8:
      dequantize_kernel<QuantFormat::fp8><<<grid, 256, 0, stream>>>(rows, cols, q, scale, zero, out);
      break;
    case QuantFormat::int8:
      dequantize_kernel<QuantFormat::int8><<<grid, 256, 0, stream>>>(rows, cols, q, scale, zero, out);
      break;
    case QuantFormat::int4:
      if (int4_paired)
        dequantize_kernel<QuantFormat::int4, true><<<grid, 256, 0, stream>>>(rows, cols, q, scale, zero, out);
      else
        dequantize_kernel<QuantFormat::int4><<<grid, 256, 0, stream>>>(rows, cols, q, scale, zero, out);
      break;
  }
  CUDA_CHECK_LAUNCH("dequantize_kernel");
}

void int4_pair_words(uint8_t* q, int64_t bytes, cudaStream_t stream) {
  if (bytes <= 0) return;
  if (bytes % 4 != 0 || reinterpret_cast<uintptr_t>(q) % 4 != 0)
    fail_msg(msg("int4_pair_words: ", bytes, " bytes at a 4-byte boundary expected (whole 32-bit words)"));
  int4_pair_kernel<<<grid_for(bytes / 4), 256, 0, stream>>>(reinterpret_cast<uint32_t*>(q), bytes / 4);
  CUDA_CHECK_LAUNCH("int4_pair_kernel");
}

bool int4_paired_from_env() {
  static const bool on = env_choice("MOEBENCH_INT4_PAIRED", {0, 1}, kDefaultInt4Paired ? 1 : 0) == 1;
  return on;
}

void silu_mul_bf16(const float* g, const float* u, bf16* h, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  silu_mul_kernel<<<grid_for(n), 256, 0, stream>>>(g, u, h, n);
  CUDA_CHECK_LAUNCH("silu_mul_kernel");
}

}  // namespace moebench::cuda
