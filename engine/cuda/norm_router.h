// norm_router.h: the MoE block's entry for decode in one launch: h = rmsnorm(x) * norm_w
// (bf16, the experts' input: rmsnorm_row.cuh, bit for bit what rmsnorm() gives), the
// router logits of h against the gate (fp32: each warp one expert's row, 16-byte loads,
// lanes' partial sums then the warp's), and, when ids is given, the softmax top-k of
// router_topk (router_topk.cuh). One block of 8 warps per token; with at most 8 experts
// and hidden a multiple of 256 up to 4096 (Mixtral), a kernel that issues all its loads
// (gate rows, x, the norm weights) before using any, with the same results. Replaces rmsnorm +
// linear + router_topk (three launches and the gaps between them) where
// norm_router_supported says so. Host C++ declarations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace moebench::cuda {

// n tokens <= 8, n_experts <= 64, k <= 8, hidden % 8 == 0, gate and h 16-byte aligned.
bool norm_router_supported(int n, int hidden, int n_experts, int k, const void* gate, const void* h);
// The many-expert launch (OLMoE 64, Qwen3-30B-A3B 128 experts, top-8): 32 <= n_experts <=
// 256, as above otherwise, hidden <= 16384. One block per token and 16 expert rows (two
// per warp), each block norming its token itself (the same h); the last block of a token
// to finish takes its top-k. The same h, logits (each row summed in the one-block kernel's
// order) and router_topk, bit for bit, as the one-block kernel where both apply; norm_router
// takes this launch wherever it applies (or, where that applies and is enabled, its
// cluster form: norm_router_cluster.h, the same results), else the one-block kernel.
bool norm_router_wide_supported(int n, int hidden, int n_experts, int k, const void* gate, const void* h);

// x (n, hidden) fp32; norm_w (hidden) bf16; gate (n_experts, hidden) bf16 -> h (n, hidden)
// bf16, logits (n, n_experts) fp32, and (ids non-null) ids, weights (n, k).
void norm_router(const float* x, const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate, __nv_bfloat16* h,
                 float* logits, int32_t* ids, float* weights, int n, int hidden, int n_experts, int k,
                 cudaStream_t stream, bool renormalise = true);

}  // namespace moebench::cuda
