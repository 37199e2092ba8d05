// quant_dequant.cu: see quant_dequant.h.
#include <cuda_fp8.h>

#include <algorithm>

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/quant_codes.cuh"
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

// The same values 8 codes at a time (rows whose cols % 8 == 0, 8-byte aligned q rows for
// the 8-bit formats, 4-byte for int4, 16-byte aligned out; fewer than 2^31 runs of 8, so
// that no 32-bit index below wraps): a thread's run shares one fp8 block, int8 row or int4
// group (8 divides 128), so one scale (and zero point), one load of its codes and one
// 16-byte store of bf16, consecutive threads on consecutive runs (a warp reads 256 and
// writes 512 contiguous bytes), kUnroll runs a grid stride apart loaded before any is
// converted. Each element is the scalar kernel's fp32 product, rounded the same way: the
// same bits.
constexpr int kUnroll = 4;
template <QuantFormat F, bool kPaired = false>
__global__ void dequantize8_kernel(uint32_t runs, uint32_t runs_per_row, int cols, const uint8_t* __restrict__ q,
                                   const uint8_t* __restrict__ scale, const uint8_t* __restrict__ zero,
                                   bf16* __restrict__ out) {
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t i0 = blockIdx.x * blockDim.x + threadIdx.x; i0 < runs; i0 += kUnroll * stride) {
    uint2 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t i = i0 + u * stride;
      if (i >= runs) break;
      if constexpr (F == QuantFormat::int4)
        raw[u].x = reinterpret_cast<const uint32_t*>(q)[i];
      else
        raw[u] = reinterpret_cast<const uint2*>(q)[i];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t i = i0 + u * stride;
      if (i >= runs) break;
      const uint32_t r = i / runs_per_row;
      const int c = static_cast<int>(i - r * runs_per_row) * 8;
      float v[8];
      if constexpr (F == QuantFormat::fp8) {
        const float s =
            f32_at(scale, static_cast<int64_t>(r / kFp8Block) * ceil_div(cols, kFp8Block) + c / kFp8Block);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          __nv_fp8_e4m3 e;
          e.__x = static_cast<__nv_fp8_storage_t>(((k < 4 ? raw[u].x : raw[u].y) >> (8 * (k % 4))) & 0xffu);
          v[k] = static_cast<float>(e) * s;
        }
      } else if constexpr (F == QuantFormat::int8) {
        const float s = f32_at(scale, r);
#pragma unroll
        for (int k = 0; k < 8; ++k)
          v[k] = static_cast<float>(static_cast<int8_t>(((k < 4 ? raw[u].x : raw[u].y) >> (8 * (k % 4))) & 0xffu)) * s;
      } else {  // int4: one 32-bit word, code k at its paired nibble or in byte order
        const int64_t g = static_cast<int64_t>(r) * ceil_div(cols, kInt4Group) + c / kInt4Group;
        const int z = zero ? zero[g] : 8;
        const float s = bf16_at(scale, g);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const int nib = kPaired ? paired_nibble(k) : k;
          v[k] = static_cast<float>((static_cast<int>(raw[u].x >> (4 * nib)) & 0xf) - z) * s;
        }
      }
      uint4 o;
      o.x = qcodes::pack_bf16x2(v[0], v[1]);
      o.y = qcodes::pack_bf16x2(v[2], v[3]);
      o.z = qcodes::pack_bf16x2(v[4], v[5]);
      o.w = qcodes::pack_bf16x2(v[6], v[7]);
      reinterpret_cast<uint4*>(out)[i] = o;
    }
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

bool aligned_to(const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

// MOEBENCH_DEQUANT8 = 0: every matrix one element a thread (for measuring one build both ways).
bool dequantize8_enabled() {
  static const bool on = env_choice("MOEBENCH_DEQUANT8", {0, 1}, 1) == 1;
  return on;
}

unsigned grid_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(ceil_div(n, 256), 8192)); }

}  // namespace

void dequantize_bf16(QuantFormat f, int64_t rows, int64_t cols, const uint8_t* q, const uint8_t* scale,
                     const uint8_t* zero, bf16* out, cudaStream_t stream, bool int4_paired) {
  const int64_t n = rows * cols;
  if (n <= 0) return;
  if (f == QuantFormat::int4 && cols % 8 != 0) fail_msg(msg("dequantize_bf16: int4 needs cols % 8 == 0, got ", cols));
  const int64_t runs = n / 8;
  if (f != QuantFormat::bf16 && dequantize8_enabled() && cols % 8 == 0 && runs < (int64_t{1} << 31) &&
      aligned_to(q, f == QuantFormat::int4 ? 4 : 8) && aligned16(out)) {
    const unsigned grid = static_cast<unsigned>(
        std::min<int64_t>(ceil_div(runs, 256 * kUnroll), 8 * static_cast<int64_t>(device_info_cached().sm_count)));
    const auto R = static_cast<uint32_t>(runs), per_row = static_cast<uint32_t>(cols / 8);
    const int c = static_cast<int>(cols);
    switch (f) {
      case QuantFormat::fp8:
        dequantize8_kernel<QuantFormat::fp8><<<grid, 256, 0, stream>>>(R, per_row, c, q, scale, zero, out);
        break;
      case QuantFormat::int8:
        dequantize8_kernel<QuantFormat::int8><<<grid, 256, 0, stream>>>(R, per_row, c, q, scale, zero, out);
        break;
      default:
        if (int4_paired)
          dequantize8_kernel<QuantFormat::int4, true><<<grid, 256, 0, stream>>>(R, per_row, c, q, scale, zero, out);
        else
          dequantize8_kernel<QuantFormat::int4><<<grid, 256, 0, stream>>>(R, per_row, c, q, scale, zero, out);
        break;
    }
    CUDA_CHECK_LAUNCH("dequantize8_kernel");
    return;
  }
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
