// quant_linear.cpp: see quant_linear.h.
#include "engine/cuda/quant_linear.h"

#include <algorithm>

#include "common/error.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/quant_dequant.h"
#include "engine/cuda/quant_gemv.h"

namespace moebench::cuda {

namespace {
constexpr int kPrefillSlices[] = {0, 16, 32, 64, 128, 256, 512};
constexpr int kByFormat = 1;  // unset: each format's measured crossover (not a value one can set)
EnvChoice g_prefill_slices{"MOEBENCH_QUANT_PREFILL_SLICES", kPrefillSlices, kByFormat};
constexpr int kDecodeTokens[] = {8, 16, 32, 64};
EnvChoice g_decode_tokens{"MOEBENCH_QUANT_DECODE_TOKENS", kDecodeTokens, 64};
}  // namespace

int quant_prefill_slices() {
  const int v = g_prefill_slices.get();
  return v == kByFormat ? -1 : v;
}

int quant_prefill_slices(QuantFormat f) {
  const int v = quant_prefill_slices();
  if (v >= 0) return v;
  return f == QuantFormat::int4 ? 128 : f == QuantFormat::bf16 ? 0 : 64;
}

void set_quant_prefill_slices(int tokens) { g_prefill_slices.set(tokens); }

int quant_decode_tokens() { return g_decode_tokens.get(); }

void set_quant_decode_tokens(int tokens) { g_decode_tokens.set(tokens); }

void linear_weight(const LinearWeight& w, const __nv_bfloat16* x, float* y, int n, int in, int out, bool accumulate,
                   __nv_bfloat16* scratch, cublasHandle_t blas, cudaStream_t stream) {
  if (w.format == QuantFormat::bf16) return linear(x, w.w, y, n, in, out, accumulate, blas, stream);
  if (n <= kGemvMaxRows) return quant_gemv(w.format, w.q, w.scale, x, n, in, out, y, accumulate, stream);
  if (n <= quant_prefill_slices()) {  // set: a short prefill through the decode GEMV, 8 tokens at a time
    for (int t0 = 0; t0 < n; t0 += kGemvMaxRows)
      quant_gemv(w.format, w.q, w.scale, x + static_cast<size_t>(t0) * in, std::min(kGemvMaxRows, n - t0), in, out,
                 y + static_cast<size_t>(t0) * out, accumulate, stream);
    return;
  }
  if (!scratch)
    fail("linear_weight: {} rows of a {} weight need a bf16 scratch of {} x {} to dequantise into", n,
         quant_format_name(w.format), out, in);
  dequantize_bf16(w.format, out, in, w.q, w.scale, nullptr, scratch, stream);
  linear(x, scratch, y, n, in, out, accumulate, blas, stream);
}

void linear_multi_weight(const LinearWeight* w, const __nv_bfloat16* x, float* const* y, const int* out, int n_mats,
                         int n, int in, __nv_bfloat16* scratch, cublasHandle_t blas, cudaStream_t stream) {
  if (n_mats < 1 || n_mats > 4) fail("linear_multi_weight: {} weights, expected 1..4", n_mats);
  const __nv_bfloat16* bf[4] = {};
  bool all_bf16 = true;
  for (int i = 0; i < n_mats; ++i) {
    bf[i] = w[i].w;
    all_bf16 = all_bf16 && w[i].format == QuantFormat::bf16;
  }
  if (all_bf16) return linear_multi(x, bf, y, out, n_mats, n, in, blas, stream);
  for (int i = 0; i < n_mats; ++i) linear_weight(w[i], x, y[i], n, in, out[i], false, scratch, blas, stream);
}

}  // namespace moebench::cuda
