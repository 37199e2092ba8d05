// moe_small_block.h: the whole decode MoE block of one token over many small experts in
// ONE launch: rmsnorm of the residual, the router logits, the softmax top-k, gate/up with
// SiLU, down and the routed sum added to the residual. norm_router's wide kernel then
// moe_decode_small (three launches) compute the same, bit for bit: the same block-wide
// norm, each logit in the same lane order, the same warp top-k, and moe_decode_small's
// default gate/up shape and down arithmetic. Phases are separated by two grid-wide
// barriers (counters in global memory) instead of kernel boundaries, so the grid is sized
// to be resident at once (occupancy x SMs, at most the warps the largest phase needs):
//   A: every block norms the token into shared memory; warp w (of the grid) takes router
//      row w, its weight loads issued before the wait on the previous kernel;
//   B: every block takes the top-k of the logits (the same warp routine, so every block
//      agrees), then the k slots' gate/up rows as moe_decode_small's warps do; each warp
//      then requests its first down row's k weight rows into L2 (the ids are known now);
//   C: a warp per output row over all k slots, added to the residual.
// The counters are the device's (one launch at a time per device, as the model's single
// stream runs them); the last block out resets them, so launches follow each other in a
// stream and in graph replays. Host C++ declarations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace moebench::cuda {

// MOEBENCH_SMALL_MOE_BLOCK=1 takes this launch where moe_small_block_supported (and the
// layer routes with its own gate, resident experts), a grid of every block the SMs hold
// at once; 2 the same with one block per SM (the phases loop over their rows; room on
// each SM for the next kernel's early blocks); 3 as 1 with the attention's output
// projection in the same launch (moe_small_block_o_proj); 4 as 3 and the decode step
// skips its side-stream L2 prefetch of o_proj's weights and the gate (the launch asks L2
// for them itself, and a concurrent kernel would hold SMs its grid waits for); 0 or
// unset: the three launches.
bool moe_small_block_enabled();
bool moe_small_block_o_proj_enabled();
bool moe_small_block_skips_side_prefetch();
// One token, the shapes small_experts_supported takes, hidden <= 16384, gate and h
// 16-byte aligned.
bool moe_small_block_supported(int n, int k, int n_experts, int hidden, int inter, const void* gate, const void* h);

// x_in (hidden, fp32) the residual the norm reads; norm_w (hidden) and eps; gate
// (n_experts x hidden); h (hidden, bf16) receives the normed token, logits (n_experts),
// ids/weights (k) the routing; w1s/w3s/w2s tables of n_experts expert pointers; moe_h
// scratch (k x inter bf16); out (hidden, fp32) += the routed sum (may be x_in).
// renormalise: the top-k weights over their sum (norm_topk_prob).
void moe_small_block(const float* x_in, const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate,
                     __nv_bfloat16* h, float* logits, int32_t* ids, float* weights,
                     const __nv_bfloat16* const* w1s, const __nv_bfloat16* const* w3s,
                     const __nv_bfloat16* const* w2s, __nv_bfloat16* moe_h, float* out, int k, int n_experts,
                     int hidden, int inter, bool renormalise, cudaStream_t stream);

// The same launch with the attention's output projection first, x += wo att (att: q_dim
// bf16, wo: hidden x q_dim), as o_proj's GEMV computes it (the same bits), a third
// barrier before the norm; x is the residual read and written (x_in and out above).
bool moe_small_block_o_proj_supported(int q_dim, const void* att, const void* wo);
void moe_small_block_o_proj(const __nv_bfloat16* att, const __nv_bfloat16* wo, int q_dim, float* x,
                            const __nv_bfloat16* norm_w, float eps, const __nv_bfloat16* gate, __nv_bfloat16* h,
                            float* logits, int32_t* ids, float* weights, const __nv_bfloat16* const* w1s,
                            const __nv_bfloat16* const* w3s, const __nv_bfloat16* const* w2s, __nv_bfloat16* moe_h,
                            int k, int n_experts, int hidden, int inter, bool renormalise, cudaStream_t stream);

}  // namespace moebench::cuda
