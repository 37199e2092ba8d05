// ep_ops.h: the two kernels of expert parallelism's MoE block (engine/cuda/ep_ops.cu):
// the mark of the (token, slot) pairs whose expert another GPU holds, and the combine of
// the sorted (prefill, larger batch) path that skips them; and the count of the distinct
// experts a step's pairs chose (the mark's counters without the mark), which one GPU's
// batched decode takes for its bound. The fused decode kernels
// (moe_decode_fused) skip a pair whose id is negative by themselves. Host C++
// declarations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace moebench::cuda {

// ids (pairs) in place: an id whose expert is not held here (local[id] == 0; local has
// n_experts entries, one layer's) becomes -1. counters (device, 2 x int64, may be null):
// [0] += the distinct held experts the pairs chose, [1] += the pairs kept. One block.
void ep_mark_foreign(int32_t* ids, int pairs, const uint8_t* local, int n_experts, int64_t* counters,
                     cudaStream_t stream);

// The same counters for a model that holds every expert (one GPU): [0] += the distinct
// experts the pairs chose (ids outside 0 .. n_experts - 1 are not counted), [1] += the
// pairs counted; ids are only read. One block.
void count_step_experts(const int32_t* ids, int pairs, int n_experts, int64_t* counters, cudaStream_t stream);

// out (n, hidden) += sum over slots j in order of weights[t, j] * y[inv[t k + j]] for the
// pairs with ids >= 0 (fmaf from 0, then added: moe_combine_all's arithmetic); the pairs
// with a negative id add nothing and their inv is not read.
void moe_combine_held(const float* y, const int32_t* inv, const int32_t* ids, const float* weights, int n, int k,
                      float* out, int hidden, cudaStream_t stream);

}  // namespace moebench::cuda
