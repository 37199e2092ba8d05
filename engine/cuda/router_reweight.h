// router_reweight.h: the CUDA twin of cpu::router_reweight (engine/ops/router.cpp), for a
// routing source whose choice was taken on the host before the forward and uploaded in
// one copy: the gate's softmax (fp32, max subtracted, summed in expert order) weighs the
// chosen experts, renormalised over the k in slot order when renormalise (a family's
// norm_topk_prob) and left as the softmax's probabilities otherwise. One thread per token,
// the CPU's order of operations. Host C++ declarations.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace moebench::cuda {

// logits (n, n_experts) fp32; chosen (n, k) expert ids in 0..n_experts-1 -> ids (n, k)
// (a copy of chosen) and weights (n, k).
void router_reweight(const float* logits, const int32_t* chosen, int32_t* ids, float* weights, int n, int n_experts,
                     int k, bool renormalise, cudaStream_t stream);

}  // namespace moebench::cuda
