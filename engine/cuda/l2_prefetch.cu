// l2_prefetch.cu: see l2_prefetch.h. One thread per chunk of kL2PrefetchChunkBytes of the
// ranges laid end to end, each a single bulk prefetch into L2 (common.cuh l2_prefetch_bulk:
// Hopper's TMA, no registers held and no completion to wait for).
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/l2_prefetch.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda {

namespace {
// Four warps per block (MOEBENCH_L2_PREFETCH_WARPS, launch_env.h: or one, so that a
// range's requests spread over 4x the SMs, each SM's TMA unit issuing fewer: o_proj's
// 32 MiB over 128 blocks of 32 x 8 KiB instead of 32 blocks of 128).
constexpr int kMaxThreads = 128;

struct Ranges {
  const char* p[kL2PrefetchMaxRanges];
  size_t bytes[kL2PrefetchMaxRanges];
  int64_t first_chunk[kL2PrefetchMaxRanges + 1];  // range r: chunks [first_chunk[r], first_chunk[r + 1])
  int n;
};

__global__ void __launch_bounds__(kMaxThreads) l2_prefetch_kernel(Ranges rg) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int r = 0;
  while (r < rg.n && c >= rg.first_chunk[r + 1]) ++r;
  if (r == rg.n) return;
  const size_t at = static_cast<size_t>(c - rg.first_chunk[r]) * kL2PrefetchChunkBytes;
  const size_t left = rg.bytes[r] - at;
  const unsigned n = static_cast<unsigned>(left < kL2PrefetchChunkBytes ? left : kL2PrefetchChunkBytes);
  const char* p = rg.p[r] + at;
  l2_prefetch_bulk(p, n);
}
// Thread t: block-range t % ranges of w1 (t < ranges) or of w3, of the expert ranked first:
// rows (t % ranges) * range_rows .. + range_rows - 1, the first `bytes` of them.
__global__ void __launch_bounds__(kMaxThreads) l2_prefetch_predicted_kernel(const float* __restrict__ pred, int n_experts,
                                                                            const void* const* __restrict__ tables,
                                                                            size_t w3_offset, int rows, int range_rows,
                                                                            size_t row_bytes,
                                                                            unsigned bytes) {
  const int e = detail::predicted_expert(pred, n_experts, 0);
  const int ranges = (rows + range_rows - 1) / range_rows;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < 0 || t >= 2 * static_cast<int64_t>(ranges)) return;
  const int mat = t < ranges ? 0 : 1, r = static_cast<int>(t - static_cast<int64_t>(mat) * ranges);
  const char* w = static_cast<const char*>(w3_offset ? tables[e] : tables[mat * n_experts + e]);
  if (w && w3_offset && mat == 1) w += w3_offset;
  const size_t left = static_cast<size_t>(rows - r * range_rows) * row_bytes;
  if (w) l2_prefetch_bulk(w + static_cast<size_t>(r) * range_rows * row_bytes, static_cast<unsigned>(left < bytes ? left : bytes));
}
}  // namespace

void l2_prefetch_predicted(const float* pred, int n_experts, const void* const* tables, size_t w3_offset, int rows,
                           int range_rows, size_t row_bytes, unsigned bytes, cudaStream_t stream) {
  if (n_experts <= 0 || n_experts > kExpertPredictMax || bytes % 16 != 0 || row_bytes % 16 != 0 || range_rows <= 0 ||
      w3_offset % 16 != 0)
    fail_msg(msg("cuda::l2_prefetch_predicted: ", n_experts, " experts, ", bytes, " bytes of ", range_rows,
                 " rows of ", row_bytes, " bytes, w3 at +", w3_offset, " (expected 1..", kExpertPredictMax,
                 " experts, multiples of 16 bytes, rows)"));
  if (rows <= 0 || bytes == 0) return;
  MB_NVTX_RANGE("l2_prefetch_predicted");
  // One warp a block: the requests spread over many SMs' copy engines (an SM issues them slowly).
  const int64_t threads = 2 * ceil_div(rows, range_rows);
  l2_prefetch_predicted_kernel<<<static_cast<unsigned>(ceil_div(threads, 32)), 32, 0, stream>>>(
      pred, n_experts, tables, w3_offset, rows, range_rows, row_bytes, bytes);
  CUDA_CHECK_LAUNCH("l2_prefetch_predicted_kernel");
}

void l2_prefetch(const L2Range* ranges, int n, cudaStream_t stream) {
  if (n < 0 || n > kL2PrefetchMaxRanges)
    fail_msg(msg("cuda::l2_prefetch: ", n, " ranges, expected 0..", kL2PrefetchMaxRanges));
  Ranges rg{};
  rg.first_chunk[0] = 0;
  for (int i = 0; i < n; ++i) {
    const size_t bytes = ranges[i].bytes & ~static_cast<size_t>(15);
    if (bytes > 0 && !aligned16(ranges[i].p))
      fail_msg(msg("cuda::l2_prefetch: range ", i, " does not start 16-byte aligned"));
    rg.p[rg.n] = static_cast<const char*>(ranges[i].p);
    rg.bytes[rg.n] = bytes;
    rg.first_chunk[rg.n + 1] = rg.first_chunk[rg.n] + static_cast<int64_t>(ceil_div(static_cast<int64_t>(bytes),
                                                                                     kL2PrefetchChunkBytes));
    if (bytes > 0) ++rg.n;
  }
  const int64_t chunks = rg.first_chunk[rg.n];
  if (chunks == 0) return;
  MB_NVTX_RANGE("l2_prefetch");
  const int threads = 32 * l2_prefetch_warps_from_env();
  l2_prefetch_kernel<<<static_cast<unsigned>(ceil_div(chunks, threads)), threads, 0, stream>>>(rg);
  CUDA_CHECK_LAUNCH("l2_prefetch_kernel");
}

}  // namespace moebench::cuda
