// split_merge.cuh: the key split (flash-decoding) of the decode attention kernels
// (paged_attention.cu, decode_attention.cu), shared: a block's result for one (token,
// head) and dim is either the output (one split) or its split's unnormalised partial,
// and a second kernel merges the used splits in split order. Workspace layout: acc
// (n_splits, m, n_heads, hd) floats, then (max, sum) (n_splits, m, n_heads, 2). .cu only.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace moebench::cuda {

// The block's (max M, sum L, acc A) for head row qh (= token * n_heads + head), dim d:
// the output A / L when the token's keys were not split, else split `split`'s partial.
// per_split = m * n_heads.
__device__ __forceinline__ void split_result(float* __restrict__ part, __nv_bfloat16* __restrict__ out, bool whole,
                                             int split, int n_splits, int64_t per_split, int64_t qh, int hd, int d,
                                             float M, float L, float A) {
  if (whole) {
    out[qh * hd + d] = __float2bfloat16_rn(L > 0 ? A / L : 0.0f);
    return;
  }
  const int64_t slot = split * per_split + qh;
  part[slot * hd + d] = A;
  if (d == 0) {
    float* ml = part + n_splits * per_split * hd + slot * 2;
    ml[0] = M;
    ml[1] = L;
  }
}

// Merges the first `used` splits of head row qh in split order into out (bf16); threads
// t, t + nt, ... take the dims (by default the block's threads; a warp's lanes where each
// warp merges a head of its own). The same arithmetic per dim either way. The partials are read from L2 (__ldcg): a block of the
// kernel that wrote them may merge them (decode_attention's last split), and its L1 is not
// kept coherent with the other blocks' writes.
__device__ __forceinline__ void merge_splits(const float* __restrict__ part, __nv_bfloat16* __restrict__ out,
                                             int64_t qh, int used, int n_splits, int64_t per_split, int hd,
                                             int t = threadIdx.x, int nt = blockDim.x) {
  const float* ml = part + n_splits * per_split * hd;
  float M = -INFINITY;
  for (int s = 0; s < used; ++s) M = fmaxf(M, __ldcg(ml + (s * per_split + qh) * 2));
  for (int d = t; d < hd; d += nt) {
    float L = 0, A = 0;
    for (int s = 0; s < used; ++s) {
      const float ms = __ldcg(ml + (s * per_split + qh) * 2);
      if (ms == -INFINITY) continue;
      const float f = __expf(ms - M);
      L = fmaf(__ldcg(ml + (s * per_split + qh) * 2 + 1), f, L);
      A = fmaf(__ldcg(part + (s * per_split + qh) * hd + d), f, A);
    }
    out[qh * hd + d] = __float2bfloat16_rn(L > 0 ? A / L : 0.0f);
  }
}

}  // namespace moebench::cuda
