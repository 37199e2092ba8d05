// quant_gemv.cu: see quant_gemv.h. Each warp owns kR weight rows; each lane streams
// 16-byte chunks of them (16 fp8/int8 values or 32 int4 nibbles), bypassing L1,
// dequantises them to fp32 with the row's / block's / group's scale and multiplies
// with the bf16 activations of up to kMaxM pairs, so a weight chunk is read once for
// all the pairs that chose the expert. Partial sums are reduced across the warp.
#include <cuda_fp8.h>

#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/quant_gemv.h"

namespace moebench::cuda {

namespace {
using detail::kGemvWarps;
constexpr int kMaxM = 8;       // pairs per pass over the weights
constexpr int kMaxPairs = 64;  // pairs per launch
constexpr int kR = 2;          // weight rows per warp

template <QuantFormat F>
struct Chunk {
  static constexpr int kValues = F == QuantFormat::int4 ? 32 : 16;  // values in 16 bytes
};

// Chunk c (16 bytes, loaded as raw) of row `row` dequantised into w (Chunk<F>::kValues floats).
template <QuantFormat F>
__device__ __forceinline__ void dequant_chunk(const bf16x8& raw, int row, int c, int K, const uint8_t* scale,
                                              const uint8_t* zero, float* w) {
  uint8_t b[16];
  memcpy(b, &raw, 16);
  if constexpr (F == QuantFormat::int8) {
    const float s = reinterpret_cast<const float*>(scale)[row];
#pragma unroll
    for (int i = 0; i < 16; ++i) w[i] = static_cast<float>(static_cast<int8_t>(b[i])) * s;
  } else if constexpr (F == QuantFormat::fp8) {
    const int cb = (K + static_cast<int>(kFp8Block) - 1) / static_cast<int>(kFp8Block);
    const float s = reinterpret_cast<const float*>(scale)[(row / kFp8Block) * cb + (c * 16) / kFp8Block];
#pragma unroll
    for (int i = 0; i < 16; i += 2) {
      const __nv_fp8x2_storage_t v = static_cast<__nv_fp8x2_storage_t>(b[i] | (b[i + 1] << 8));
      const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(v, __NV_E4M3)));
      w[i] = f.x * s;
      w[i + 1] = f.y * s;
    }
  } else {  // int4: element 2i in the low nibble of byte i, 2i + 1 in the high one
    const int groups = (K + static_cast<int>(kInt4Group) - 1) / static_cast<int>(kInt4Group);
    const int g = row * groups + (c * 32) / static_cast<int>(kInt4Group);
    const float s = __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(scale)[g]);
    const int z = zero ? zero[g] : 8;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      w[2 * i] = static_cast<float>((b[i] & 0xf) - z) * s;
      w[2 * i + 1] = static_cast<float>((b[i] >> 4) - z) * s;
    }
  }
}

template <QuantFormat F>
__global__ void __launch_bounds__(kGemvWarps * 32)
    quant_moe_gemv_kernel(QuantExperts w, const bf16* __restrict__ x, int x_per_pair, const int32_t* __restrict__ ids,
                          int n_pairs, int k, int N, int K, float* __restrict__ out) {
  constexpr int V = Chunk<F>::kValues;
  const int e = blockIdx.y;
  __shared__ int s_pair[kMaxPairs], s_cnt;
  if (threadIdx.x == 0) {
    int cnt = 0;
    for (int p = 0; p < n_pairs; ++p)
      if (ids[p] == e) s_pair[cnt++] = p;
    s_cnt = cnt;
  }
  __syncthreads();
  const int cnt = s_cnt;
  if (cnt == 0) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kGemvWarps + warp) * kR;
  if (row0 >= N) return;
  const uint8_t* q = w.q[e];
  const uint8_t* scale = w.scale[e];
  const uint8_t* zero = w.zero ? w.zero[e] : nullptr;
  const int64_t row_bytes = F == QuantFormat::int4 ? K / 2 : K;
  const int chunks = static_cast<int>(row_bytes / 16);
  for (int p0 = 0; p0 < cnt; p0 += kMaxM) {
    const int m = min(kMaxM, cnt - p0);
    const bf16* xr[kMaxM];
#pragma unroll
    for (int mm = 0; mm < kMaxM; ++mm) {
      const int p = s_pair[p0 + min(mm, m - 1)];
      xr[mm] = x + static_cast<int64_t>(x_per_pair ? p : p / k) * K;
    }
    float acc[kR][kMaxM];
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
      for (int mm = 0; mm < kMaxM; ++mm) acc[r][mm] = 0;
    for (int c = lane; c < chunks; c += 32) {
      bf16x8 raw[kR];  // 16 bytes of quantised values each, streamed past L1
#pragma unroll
      for (int r = 0; r < kR; ++r)
        raw[r] = load8_stream(
            reinterpret_cast<const bf16*>(q + static_cast<int64_t>(min(row0 + r, N - 1)) * row_bytes + 16 * c));
      float wf[kR][V];
#pragma unroll
      for (int r = 0; r < kR; ++r) dequant_chunk<F>(raw[r], min(row0 + r, N - 1), c, K, scale, zero, wf[r]);
#pragma unroll
      for (int mm = 0; mm < kMaxM; ++mm) {
        if (mm >= m) break;
#pragma unroll
        for (int j = 0; j < V / 8; ++j) {
          float xf[8];
          to_float8(load8(xr[mm] + static_cast<int64_t>(c) * V + 8 * j), xf);
#pragma unroll
          for (int r = 0; r < kR; ++r) acc[r][mm] += dot8(&wf[r][8 * j], xf);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
      for (int mm = 0; mm < kMaxM; ++mm) {
        const float v = warp_sum(acc[r][mm]);
        if (lane == 0 && mm < m && row0 + r < N) out[static_cast<int64_t>(s_pair[p0 + mm]) * N + row0 + r] = v;
      }
  }
}

}  // namespace

void quant_moe_gemv(const QuantExperts& w, const bf16* x, bool x_per_pair, const int32_t* ids, int n_pairs, int k,
                    int N, int K, int n_experts, float* out, cudaStream_t stream) {
  MB_NVTX_RANGE("quant_moe_gemv");
  if (n_pairs <= 0 || n_pairs > kMaxPairs) fail_msg(msg("quant_moe_gemv: ", n_pairs, " pairs, expected 1..", kMaxPairs));
  const int align = w.format == QuantFormat::int4 ? 32 : 16;
  if (K % align != 0)
    fail_msg(msg("quant_moe_gemv: ", K, " inputs is not a multiple of ", align, " (", quant_format_name(w.format),
                 " rows are read 16 bytes at a time)"));
  if (N <= 0 || n_experts <= 0 || k <= 0)
    fail_msg(msg("quant_moe_gemv: N ", N, ", experts ", n_experts, ", k ", k, " must be positive"));
  const dim3 grid(static_cast<unsigned>(ceil_div(N, kGemvWarps * kR)), static_cast<unsigned>(n_experts));
  const int per_pair = x_per_pair ? 1 : 0;
  switch (w.format) {
    case QuantFormat::int8:
      quant_moe_gemv_kernel<QuantFormat::int8><<<grid, kGemvWarps * 32, 0, stream>>>(w, x, per_pair, ids, n_pairs, k, N, K, out);
      break;
    case QuantFormat::int4:
      quant_moe_gemv_kernel<QuantFormat::int4><<<grid, kGemvWarps * 32, 0, stream>>>(w, x, per_pair, ids, n_pairs, k, N, K, out);
      break;
    case QuantFormat::fp8:
      quant_moe_gemv_kernel<QuantFormat::fp8><<<grid, kGemvWarps * 32, 0, stream>>>(w, x, per_pair, ids, n_pairs, k, N, K, out);
      break;
    default:
      fail_msg(msg("quant_moe_gemv: format ", quant_format_name(w.format), " is not quantised (bf16 experts use moe_fused)"));
  }
  CUDA_CHECK_LAUNCH("quant_moe_gemv");
}

}  // namespace moebench::cuda
