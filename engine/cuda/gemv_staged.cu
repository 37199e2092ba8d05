// gemv_staged.cu: the one-row GEMV with its weights staged in shared memory before the
// programmatic wait (gemv_staged.h).
#include <algorithm>
#include <mutex>
#include <set>

#include "engine/cuda/async_copy.cuh"
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/gemv_staged.h"
#include "engine/cuda/pdl.cuh"

namespace moebench::cuda {

namespace {

using bf16 = __nv_bfloat16;
constexpr int kRows = 8;                    // rows of a chunk: one a warp
constexpr int kStageBytes = 192 * 1024;     // shared memory a block stages at most
constexpr int kMaxChunksStaged = 8;

// The blocks' tickets: every launch takes exactly one a block, so the gridDim.x tickets of
// one launch are consecutive and their residues mod gridDim.x are a permutation of the
// ranks, whatever the launches before left (no reset; 64 bits do not wrap).
__device__ unsigned long long g_staged_ticket = 0;


// Row `row` of y += this warp's dot product: lane l holds chunks l + 32 j of the row (wv)
// and of x (xv), added in j order from zero as gemv_warp adds them, then the warp sum.
template <int J>
__device__ __forceinline__ void finish_row(const bf16x8 (&wv)[J], const bf16x8 (&xv)[J], float* y, int row, int lane) {
  float acc = 0;
#pragma unroll
  for (int j = 0; j < J; ++j) {
    float wf[8], xf[8];
    to_float8(wv[j], wf);
    to_float8(xv[j], xf);
    acc += dot8(wf, xf);
  }
  const float s = warp_sum(acc);
  if (lane == 0) y[row] = y[row] + s;
}

// The rows of chunk c of this warp (its warp-th row), from global memory, into wv.
template <int J>
__device__ __forceinline__ void load_row(const bf16* w, int row, int lane, bf16x8 (&wv)[J]) {
  constexpr int K = 256 * J;
  const bf16* wr = w + static_cast<int64_t>(row) * K;
#pragma unroll
  for (int j = 0; j < J; ++j) wv[j] = load8_stream(wr + 8 * (lane + 32 * j));
}

// J 16-byte chunks a lane per row: K = 256 J inputs. A block's rank (its ticket mod the
// grid: blocks that reach the SMs first take the low ranks) gives it a share of the chunks,
// n_chunks / grid and one more for the first n_chunks % grid ranks, consecutive: the first
// `stage` of them into shared memory and the next into registers (a row a warp) before the
// wait, any more from global memory after it.
template <int J>
__global__ void __launch_bounds__(kRows * 32, 1)
    gemv_staged_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, float* __restrict__ y, int N,
                       int stage) {
  constexpr int K8 = 32 * J;
  [[maybe_unused]] constexpr int K = 8 * K8;  // unreferenced where the Hopper path compiles out
  extern __shared__ __align__(128) unsigned char smem[];
  [[maybe_unused]] __shared__ __align__(8) uint64_t bar;
  __shared__ int s_rank;
  const int n_chunks = (N + kRows - 1) / kRows, grid = static_cast<int>(gridDim.x);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Before the wait only the weights are read (and the ticket, which only these launches
  // touch, one at a time).
  if (threadIdx.x == 0) s_rank = static_cast<int>(atomicAdd(&g_staged_ticket, 1ull) % static_cast<unsigned>(grid));
  __syncthreads();
  const int rank = s_rank, base = n_chunks / grid, extra = n_chunks % grid;
  const int first = rank * base + min(rank, extra), count = base + (rank < extra ? 1 : 0);
  int in_smem = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  in_smem = min(count, stage);
  if (threadIdx.x == 0 && in_smem > 0) {
    const int rows = min(in_smem * kRows, N - first * kRows);
    async::mbar_init(&bar);
    async::mbar_fence_init();
    async::mbar_arrive_expect(&bar, static_cast<unsigned>(rows) * K * 2u);
    for (int c = 0; c < in_smem; ++c) {
      const int r0 = (first + c) * kRows, n = min(kRows, N - r0);
      async::bulk_copy(smem + static_cast<size_t>(c) * kRows * K * 2, w + static_cast<int64_t>(r0) * K,
                       static_cast<unsigned>(n) * K * 2u, &bar);
    }
  }
  __syncthreads();  // the barrier's init before any thread waits on it
#endif
  const int reg_row = (first + in_smem) * kRows + warp;  // the chunk after the staged ones, a row a warp
  const bool in_regs = in_smem < count && reg_row < N;
  bf16x8 wreg[J];
  if (in_regs) load_row<J>(w, reg_row, lane, wreg);
  pdl_wait();  // x and y come from the kernels before
  pdl_trigger();
  bf16x8 xv[J];
#pragma unroll
  for (int j = 0; j < J; ++j) xv[j] = load8(x + 8 * (lane + 32 * j));
  if (in_smem > 0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    async::mbar_wait(&bar, 0);
#endif
    const int rows = min(in_smem * kRows, N - first * kRows);
    for (int r = warp; r < rows; r += kRows) {
      const bf16x8* wr = reinterpret_cast<const bf16x8*>(smem) + static_cast<size_t>(r) * K8;
      bf16x8 wv[J];
#pragma unroll
      for (int j = 0; j < J; ++j) wv[j] = wr[lane + 32 * j];
      finish_row<J>(wv, xv, y, first * kRows + r, lane);
    }
  }
  if (in_regs) finish_row<J>(wreg, xv, y, reg_row, lane);
  for (int c = first + in_smem + 1; c < first + count; ++c) {  // past what a block holds: global memory
    const int row = c * kRows + warp;
    if (row >= N) break;
    bf16x8 wv[J];
    load_row<J>(w, row, lane, wv);
    finish_row<J>(wv, xv, y, row, lane);
  }
}

template <int J>
void launch(const bf16* x, const bf16* w, float* y, int N, cudaStream_t stream) {
  const DeviceInfo& d = device_info_cached();
  const bool hopper = d.cc_major >= 9;
  const int stage = hopper ? gemv_staged_chunks(256 * J) : 0;
  const size_t smem = static_cast<size_t>(stage) * kRows * 256 * J * 2;
  {
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    static std::mutex mu;
    static std::set<int> set_on;  // devices whose limit for this kernel is raised
    std::lock_guard<std::mutex> lock(mu);
    if (hopper && set_on.insert(dev).second)  // before Hopper nothing is staged
      set_dynamic_smem(reinterpret_cast<const void*>(gemv_staged_kernel<J>),
                       static_cast<int>(static_cast<size_t>(gemv_staged_chunks(256 * J)) * kRows * 256 * J * 2),
                       "gemv_staged_kernel");
  }
  launch_pdl(gemv_staged_kernel<J>, dim3(static_cast<unsigned>(d.sm_count)), dim3(kRows * 32), smem, stream, x, w, y,
             N, stage);
  CUDA_CHECK_LAUNCH("gemv_staged_kernel");
}

}  // namespace

int gemv_staged_chunks(int K) {
  const int chunk = kRows * K * 2;
  return chunk <= 0 ? 0 : std::max(1, std::min(kMaxChunksStaged, kStageBytes / chunk));
}

bool gemv_staged_holds_all(int K, int N) {
  const DeviceInfo& d = device_info_cached();
  return d.cc_major >= 9 &&
         (static_cast<int64_t>(N) + kRows - 1) / kRows <= static_cast<int64_t>(d.sm_count) * gemv_staged_chunks(K);
}

bool gemv_staged_supported(const void* x, const void* w, int K, int N) {
  const int j = K / 256;
  return K % 256 == 0 && (j == 1 || j == 2 || j == 4 || j == 8 || j == 16) && N >= 1 && aligned16(x) && aligned16(w);
}

void gemv_staged(const bf16* x, const bf16* w, float* y, int K, int N, cudaStream_t stream) {
  MB_NVTX_RANGE("gemv_staged");
  if (!gemv_staged_supported(x, w, K, N))
    fail_msg(msg("cuda::gemv_staged: K ", K, ", N ", N,
                 " not supported (K 256, 512, 1024, 2048 or 4096, N >= 1, x and w 16-byte aligned)"));
  switch (K / 256) {
    case 1: return launch<1>(x, w, y, N, stream);
    case 2: return launch<2>(x, w, y, N, stream);
    case 4: return launch<4>(x, w, y, N, stream);
    case 8: return launch<8>(x, w, y, N, stream);
    case 16: return launch<16>(x, w, y, N, stream);
    default: return launch<16>(x, w, y, N, stream);  // K == 4096 (gemv_staged_supported)
  }
}

}  // namespace moebench::cuda
