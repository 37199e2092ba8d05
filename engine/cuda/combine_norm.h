// combine_norm.h: the end of a layer's MoE block and the start of the next layer in one
// launch, for decode: x[t] += sum_j w[t, j] * y[t * k + j] (fp32, slot order, as
// moe_combine_all adds into the residual) and then h[t] = rmsnorm(x[t]) * norm_w (bf16,
// rmsnorm_row.cuh): bit for bit what moe_combine_all + rmsnorm() give, one launch and
// one gap less. One block per token. Host C++ declarations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace moebench::cuda {

// y (n * k, hidden) fp32, pairs in (token, slot) order; weights (n, k); x (n, hidden) fp32
// in place; norm_w (hidden) bf16 -> h (n, hidden) bf16. n <= 64 tokens.
bool combine_norm_supported(int n);
void combine_norm(const float* y, const float* weights, int k, float* x, const __nv_bfloat16* norm_w, float eps,
                  __nv_bfloat16* h, int n, int hidden, cudaStream_t stream);

}  // namespace moebench::cuda
