// gemv_staged.h: y += x @ W^T for one activation row with the weights staged in shared
// memory before the programmatic wait (pdl.h): the decode step's o_proj.
//
// The one-row GEMV (linear.cu) can ask for its weights only once its blocks are on the
// SMs, and those arrive when the kernel before it lets them (after that kernel's own wait),
// so o_proj's 33.5 MB (Mixtral) stream after attention, latency-bound at a few warps an
// SM. Here a grid of one block per SM splits the rows into chunks of 8 (a row a warp);
// a block's rank (a ticket from a device counter: the blocks that reach the SMs first take
// the low ranks) gives it a consecutive share of the chunks. Before its wait each block
// copies the first `stage` chunks of its share into shared memory with one bulk copy a
// chunk (cp.async.bulk, completed on an mbarrier) and loads the next into registers (a row
// a warp): those bytes stream while the kernels before still run (Mixtral's o_proj: 512
// chunks over 132 SMs, 3 staged and 1 in registers a block: all of it). After the wait
// each warp holds its lanes' activation chunks in registers and takes its rows from
// shared memory and registers; chunks past what a block holds come from global memory
// after the wait. Per row the same lane order and the same sums as gemv (gemv_core.cuh:
// lane l adds chunks l, l + 32, ... in order from zero, then the warp sum, then y += s), so
// the same bits as gemv with accumulate. The tickets of one launch are consecutive (one a
// block, one launch at a time per device, as the model's stream runs them), so their
// residues are the ranks, with no reset. Before Hopper nothing is staged. Host C++
// declarations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace moebench::cuda {

// K one of 256, 512, 1024, 2048, 4096; N >= 1; x and w 16-byte aligned, a CUDA device present.
bool gemv_staged_supported(const void* x, const void* w, int K, int N);
// y (N, fp32) += x (K, bf16) @ W (N x K, bf16, row-major)^T, launched with programmatic
// launch where pdl.h enables it. Fails for shapes gemv_staged_supported refuses.
void gemv_staged(const __nv_bfloat16* x, const __nv_bfloat16* w, float* y, int K, int N, cudaStream_t stream);
// Whether a launch on this device holds the whole (N, K) matrix before its wait: the rows'
// chunks of 8 no more than the SMs' staged chunks (Hopper; false before).
bool gemv_staged_holds_all(int K, int N);
// Chunks (of 8 rows) a block stages for rows of K inputs (the shared memory it asks for is
// that times 16 K bytes).
int gemv_staged_chunks(int K);

}  // namespace moebench::cuda
