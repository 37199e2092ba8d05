// norm_router_cluster.h: the many-expert decode norm + router (norm_router.h's wide
// launch: OLMoE's 64, Qwen3-30B-A3B's 128 experts) with its two slow steps on the
// dependent chain of a decode step taken out. Each token's blocks (16 expert rows each,
// at most 8 blocks) form one thread block cluster: every block writes its logits into
// the first block's shared memory and a cluster barrier replaces the wide launch's
// handoff (a fence, a global counter, a fence and a read of the logits back from L2);
// and each thread's share of x is loaded once, with the norm weights loaded before the
// wait on the previous kernel, instead of the norm's two passes over x after it. The
// same h, logits, ids and weights, bit for bit, as the wide launch (the norm's sums and
// each logit's sum in its order, the same top-k routine on the same logits). Host C++
// declarations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace moebench::cuda {

// n tokens <= 8, 32 <= n_experts <= 128 (a cluster of at most 8 blocks), k <= 8, hidden a
// multiple of 256 up to 2048 (x in registers, the gate rows in one load each), gate and h
// 16-byte aligned, on Hopper or later (thread-block clusters).
bool norm_router_cluster_supported(int n, int hidden, int n_experts, int k, const void* gate, const void* h);
// Whether norm_router() takes this launch where it applies: MOEBENCH_NORM_ROUTER_CLUSTER=0
// keeps the wide launch (1 or unset: this one), to measure one build both ways. Measured
// on an H200 (Qwen3-30B-A3B shape, batch 1, 50-token prompt, 64 new tokens): 336.5 tok/s
// against 327.7-328.3 with the wide launch.
bool norm_router_cluster_enabled();
// Sets for the process what norm_router() takes (tests run both launches in one process).
void set_norm_router_cluster(bool on);

// Whether the cluster launch takes its top-k with the whole first block (each expert's
// thread counts the experts ahead of it) instead of one warp's k rounds of argmax: the same
// ids and weights. MOEBENCH_ROUTER_TOPK_RANK=1 (0 or unset: the warp's rounds).
bool router_topk_by_rank_enabled();
// Sets it for the process (tests run both in one process).
void set_router_topk_by_rank(bool on);

// norm_router's arguments and results (norm_router.h).
void norm_router_cluster(const float* x, const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate,
                         __nv_bfloat16* h, float* logits, int32_t* ids, float* weights, int n, int hidden,
                         int n_experts, int k, cudaStream_t stream, bool renormalise = true);

}  // namespace moebench::cuda
