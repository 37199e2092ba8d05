// family_ops.h: the one-launch attention entry of a decode step for models with per-head q/k
// RMSNorm (Qwen3-MoE): the input rmsnorm, the q/k/v GEMV, the q/k norm, RoPE and the KV store
// in one launch instead of two (family_ops.cu; the other family kernels are declared in
// ops.cuh). Host C++ declarations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace moebench::cuda {

// hidden a multiple of 8 (the normed token in shared memory: hidden * 2 <= 48 KiB),
// head_dim a multiple of 32 (a head's rows in whole blocks), at most 512 heads (q, k and v
// together), h and the weights 16-byte aligned.
bool qkv_qk_norm_rope_supported(int hidden, int n_heads, int n_kv, int head_dim, const void* h,
                                const __nv_bfloat16* wq, const __nv_bfloat16* wk, const __nv_bfloat16* wv);
// MOEBENCH_QKV_QK_NORM=1: a one-token decode step takes qkv_qk_norm_rope (=2: its next
// kernel let start only once every block has written its rows; 0 or unset:
// rmsnorm_linear_multi, then qk_norm_rope_kv_store_paged).
bool qkv_qk_norm_rope_enabled();

// One token: h (hidden) bf16 = rmsnorm(x) * norm_w, q (n_heads x head_dim), k, v (n_kv x
// head_dim) fp32 = h @ w^T; then q normed per head (q_norm) and rotated in place, the key
// normed (k_norm), rotated and stored in bf16 at k_pool row slot[0], the value at v_pool's:
// bit for bit rmsnorm_linear_multi followed by qk_norm_rope_kv_store_paged (m = 1), except
// that k keeps the projection (as there). Programmatic launch (pdl.cuh).
void qkv_qk_norm_rope(const float* x, const __nv_bfloat16* norm_w, float eps, __nv_bfloat16* h,
                      const __nv_bfloat16* wq, const __nv_bfloat16* wk, const __nv_bfloat16* wv, float* q, float* k,
                      float* v, const __nv_bfloat16* q_norm, const __nv_bfloat16* k_norm, const int32_t* pos,
                      const int32_t* slot, __nv_bfloat16* k_pool, __nv_bfloat16* v_pool, int hidden, int n_heads,
                      int n_kv, int head_dim, float theta, cudaStream_t stream);

}  // namespace moebench::cuda
