// moe_dispatch.cu: the small kernels behind the non-fused MoE dispatch and combine
// variants (engine/cuda/moe_layer.cpp). The CPU reference for all of them together is
// CpuModel::moe (engine/cpu_model.cpp): group the (token, slot) pairs by expert, run
// each expert on its rows, then out[t] = sum_j weights[t,j] * y[t,j] in slot order.
//
// A "pair" is p = t * k + j (token t, routing slot j). Sorted order lists the pairs by
// (expert, p): perm[r] = p, inv[p] = r. Expert outputs y live in sorted order (row r);
// `inv == nullptr` means y is in pair order (the fused decode dispatch writes it so).
//   moe_sort_by_expert  one block, a warp per expert, ballot-based: stable, no atomics;
//   moe_select_expert   serial dispatch's mask select of one expert (one warp);
//   moe_gather_rows     xin[r] = x[perm[r] / k] (bf16 rows);
//   moe_combine_pair    loop combine: out[t] += w[p] * y[row(p)] for ONE pair per launch;
//   moe_combine_all     index_add / fused combine: out[t] += sum_j w[t,j] * y[row(t,j)],
//                       slot order, one launch (the deterministic gather form of index_add).
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda {

namespace {
constexpr int kSortThreads = 512;

__global__ void sort_kernel(const int32_t* __restrict__ ids, int n_pairs, int n_experts, int32_t* __restrict__ perm,
                            int32_t* __restrict__ inv, int32_t* __restrict__ offsets) {
  extern __shared__ int s_base[];  // (n_experts)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = blockDim.x >> 5;
  for (int e = warp; e < n_experts; e += n_warps) {
    int c = 0;
    for (int p0 = 0; p0 < n_pairs; p0 += 32) {
      const int p = p0 + lane;
      c += __popc(__ballot_sync(0xffffffffu, p < n_pairs && ids[p] == e));
    }
    if (lane == 0) s_base[e] = c;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int s = 0;
    for (int e = 0; e < n_experts; ++e) {
      const int c = s_base[e];
      s_base[e] = s;
      offsets[e] = s;
      s += c;
    }
    offsets[n_experts] = s;
  }
  __syncthreads();
  for (int e = warp; e < n_experts; e += n_warps) {
    int base = s_base[e];
    for (int p0 = 0; p0 < n_pairs; p0 += 32) {
      const int p = p0 + lane;
      const bool hit = p < n_pairs && ids[p] == e;
      const unsigned b = __ballot_sync(0xffffffffu, hit);
      if (hit) {
        const int r = base + __popc(b & ((1u << lane) - 1u));
        perm[r] = p;
        inv[p] = r;
      }
      base += __popc(b);
    }
  }
}

__global__ void select_kernel(const int32_t* __restrict__ ids, int n_pairs, int expert, int base,
                              int32_t* __restrict__ perm, int32_t* __restrict__ inv, int32_t* __restrict__ count) {
  const int lane = threadIdx.x;
  int c = 0;
  for (int p0 = 0; p0 < n_pairs; p0 += 32) {
    const int p = p0 + lane;
    const bool hit = p < n_pairs && ids[p] == expert;  // the mask
    const unsigned b = __ballot_sync(0xffffffffu, hit);
    if (hit) {
      const int r = base + c + __popc(b & ((1u << lane) - 1u));
      perm[r] = p;
      inv[p] = r;
    }
    c += __popc(b);
  }
  if (lane == 0) *count = c;
}

__global__ void gather_kernel(const bf16* __restrict__ x, const int32_t* __restrict__ perm, int k, bf16* __restrict__ xin,
                              int hidden) {
  const int r = blockIdx.y;
  const bf16* src = x + static_cast<int64_t>(perm[r] / k) * hidden;
  bf16* dst = xin + static_cast<int64_t>(r) * hidden;
  for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < hidden; d += gridDim.x * blockDim.x) dst[d] = src[d];
}

__global__ void combine_pair_kernel(const float* __restrict__ y, const int32_t* __restrict__ inv,
                                    const float* __restrict__ weights, int p, int k, float* __restrict__ out,
                                    int hidden) {
  const int row = inv ? inv[p] : p;
  const float w = weights[p];
  const float* yr = y + static_cast<int64_t>(row) * hidden;
  float* o = out + static_cast<int64_t>(p / k) * hidden;
  for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < hidden; d += gridDim.x * blockDim.x) o[d] = fmaf(w, yr[d], o[d]);
}

__global__ void combine_all_kernel(const float* __restrict__ y, const int32_t* __restrict__ inv,
                                   const float* __restrict__ weights, int k, float* __restrict__ out, int hidden) {
  const int t = blockIdx.y;
  for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < hidden; d += gridDim.x * blockDim.x) {
    float s = 0;
    for (int j = 0; j < k; ++j) {
      const int p = t * k + j;
      const int row = inv ? inv[p] : p;
      s = fmaf(weights[p], y[static_cast<int64_t>(row) * hidden + d], s);
    }
    out[static_cast<int64_t>(t) * hidden + d] += s;
  }
}

unsigned col_blocks(int hidden) { return static_cast<unsigned>(ceil_div(hidden, 256 * 4) > 0 ? ceil_div(hidden, 256 * 4) : 1); }
}  // namespace

void moe_sort_by_expert(const int32_t* ids, int n_pairs, int n_experts, int32_t* perm, int32_t* inv, int32_t* offsets,
                        cudaStream_t stream) {
  MB_NVTX_RANGE("moe_sort_by_expert");
  if (n_experts <= 0 || n_experts > 1024) fail_msg(msg("cuda::moe_sort_by_expert: n_experts ", n_experts, " not in 1..1024"));
  sort_kernel<<<1, kSortThreads, n_experts * sizeof(int), stream>>>(ids, n_pairs, n_experts, perm, inv, offsets);
  CUDA_CHECK_LAUNCH("moe_sort_kernel");
}

void moe_select_expert(const int32_t* ids, int n_pairs, int expert, int base, int32_t* perm, int32_t* inv,
                       int32_t* count, cudaStream_t stream) {
  MB_NVTX_RANGE("moe_select_expert");
  select_kernel<<<1, 32, 0, stream>>>(ids, n_pairs, expert, base, perm, inv, count);
  CUDA_CHECK_LAUNCH("moe_select_kernel");
}

void moe_gather_rows(const bf16* x, const int32_t* perm, int k, bf16* xin, int rows, int hidden, cudaStream_t stream) {
  MB_NVTX_RANGE("moe_gather_rows");
  if (rows <= 0) return;
  gather_kernel<<<dim3(col_blocks(hidden), rows), 256, 0, stream>>>(x, perm, k, xin, hidden);
  CUDA_CHECK_LAUNCH("moe_gather_kernel");
}

void moe_combine_pair(const float* y, const int32_t* inv, const float* weights, int p, int k, float* out, int hidden,
                      cudaStream_t stream) {
  combine_pair_kernel<<<col_blocks(hidden), 256, 0, stream>>>(y, inv, weights, p, k, out, hidden);
  CUDA_CHECK_LAUNCH("moe_combine_pair_kernel");
}

void moe_combine_all(const float* y, const int32_t* inv, const float* weights, int n, int k, float* out, int hidden,
                     cudaStream_t stream) {
  MB_NVTX_RANGE("moe_combine_all");
  if (n <= 0) return;
  combine_all_kernel<<<dim3(col_blocks(hidden), n), 256, 0, stream>>>(y, inv, weights, k, out, hidden);
  CUDA_CHECK_LAUNCH("moe_combine_all_kernel");
}

}  // namespace moebench::cuda
