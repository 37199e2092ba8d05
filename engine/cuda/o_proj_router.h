// o_proj_router.h: decode's step from the attention output to the experts' input in one
// launch, for one token of the Mixtral shape: x += att @ wo^T (the one-row GEMV, the same
// rows per warp as gemv() takes for `hidden` rows, bit for bit its y), then, in the last of
// the launch's blocks to finish its rows (a counter, reset by that block), h = rmsnorm(x) *
// norm_w, the router logits and the softmax top-k, bit for bit norm_router()'s one-block
// launch. Replaces the o_proj GEMV and norm_router (two launches, and the router's wait for
// the whole o_proj grid) where o_proj_norm_router_supported says so; MOEBENCH_OPROJ_ROUTER
// (launch_env.h) switches it. One such launch runs on a device at a time (the counter is
// the device's): the model's launches on one stream never overlap. Host C++ declarations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace moebench::cuda {

// q_dim % 8 == 0, hidden a multiple of 256 up to 4096, n_experts <= 8, 1 <= k <= n_experts,
// att, wo, gate and h 16-byte aligned, and gemv()'s shape for `hidden` rows one the launch
// has compiled (8 warps, 1, 2 or 4 rows per warp, no prefetch).
bool o_proj_norm_router_supported(int q_dim, int hidden, int n_experts, int k, const void* att, const void* wo,
                                  const void* gate, const void* h);

// att (q_dim) bf16, wo (hidden, q_dim) bf16: x (hidden) fp32 += att @ wo^T; then norm_w
// (hidden) bf16, gate (n_experts, hidden) bf16 -> h (hidden) bf16, logits (n_experts) fp32
// and (ids non-null) ids, weights (k). An unsupported shape is an Error.
void o_proj_norm_router(const __nv_bfloat16* att, const __nv_bfloat16* wo, int q_dim, float* x,
                        const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate, __nv_bfloat16* h,
                        float* logits, int32_t* ids, float* weights, int hidden, int n_experts, int k,
                        cudaStream_t stream, bool renormalise = true);

}  // namespace moebench::cuda
