// moe_fused.cu: the "fused" MoE dispatch/combine for decode (n <= 8 tokens): all
// top-k experts of all tokens in two launches, no host round trip, deterministic.
// Reference: for each token i, sum_j weights[i,j] * swiglu_expert(ids[i,j]) in j order
// (engine/ops/swiglu.cpp + the CPU model's combine).
//   launch 1 (grid: inter row blocks x used-expert slots): the blocks of slot y take
//     the y-th distinct expert e of ids, gather the tokens that chose it, stream w1/w3
//     rows once for all of them and write h[(i,j)] = silu(g) * u in bf16;
//   launch 2 (grid: hidden row blocks): per token, per slot j in order, the w2 row dot
//     h[(i,j)], scaled by weights[i,j] and summed; out[i] += the sum. Two variants, bit-
//     identical: per_pair (each warp walks every (token, slot) pair in turn, w2 rows read
//     once per pair) and grouped (the default: w2 rows read once per used expert, the
//     (row group, expert) items spread over the block's warps).
// A pair whose id is negative (its expert is on another GPU: expert parallelism) is not
// computed and adds nothing.
#include <algorithm>

#include "engine/cuda/check.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/pdl.cuh"

namespace moebench::cuda {

namespace {
using detail::kGemvWarps;
using detail::silu;
constexpr int kMaxPairs = detail::kMaxSlotPairs;
constexpr int kSharedTableExperts = 64;  // gate/up keeps the expert table in shared memory up to this many experts

template <int M, int R>
__global__ void __launch_bounds__(kGemvWarps * 32) moe_gate_up_kernel(const bf16* __restrict__ x,
                                                                     const int32_t* __restrict__ ids,
                                                                     const bf16* const* __restrict__ w1s,
                                                                     const bf16* const* __restrict__ w3s,
                                                                     bf16* __restrict__ h, int n, int k, int K, int N,
                                                                     int n_experts, const float* __restrict__ pred,
                                                                     unsigned pred_bytes, int pred_blocks) {
  constexpr int U = 4 / R > 0 ? 4 / R : 1;
  __shared__ int s_tok[M], s_pair[M];
  // The expert table (written before the previous kernel began) before the wait; read
  // from shared memory once the expert is known (the bookkeeping's barrier orders it).
  __shared__ const bf16* s_w1[kSharedTableExperts];
  __shared__ const bf16* s_w3[kSharedTableExperts];
  const bool table_shared = n_experts <= kSharedTableExperts;
  if (table_shared)
    for (int t = threadIdx.x; t < n_experts; t += blockDim.x) {
      s_w1[t] = w1s[t];
      s_w3[t] = w3s[t];
    }
  if (pred_bytes > 0 && static_cast<int>(blockIdx.y * gridDim.x + blockIdx.x) < pred_blocks)
    detail::prefetch_predicted_block(pred, n_experts, static_cast<int>(blockIdx.y), w1s, w3s,
                                     static_cast<int>(blockIdx.x) * kGemvWarps * R, kGemvWarps * R, N, K, pred_bytes);
  pdl_wait();  // ids and x come from the kernels before
  pdl_trigger();
  int m = 0;
  const int e = detail::used_expert_pairs<M>(ids, n * k, k, blockIdx.y, s_tok, s_pair, m);
  if (e < 0 || m == 0) return;  // the whole block: fewer experts used than grid rows
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kGemvWarps + warp) * R;
  if (row0 >= N) return;
  const bf16* w1 = table_shared ? s_w1[e] : w1s[e];
  const bf16* w3 = table_shared ? s_w3[e] : w3s[e];
  const bf16* wr[2 * R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t row = min(row0 + r, N - 1);
    wr[r] = w1 + row * K;
    wr[R + r] = w3 + row * K;
  }
  const bf16* xr[M];
#pragma unroll
  for (int mm = 0; mm < M; ++mm) xr[mm] = x + static_cast<int64_t>(s_tok[min(mm, m - 1)]) * K;
  float acc[2 * R][M];
  detail::gemv_dot<2 * R, M, U>(wr, xr, m, K / 8, lane, acc);
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mm = 0; mm < M; ++mm) {
      const float g = warp_sum(acc[r][mm]), u = warp_sum(acc[R + r][mm]);
      if (lane == 0 && mm < m && row0 + r < N)
        h[static_cast<int64_t>(s_pair[mm]) * N + row0 + r] = __float2bfloat16_rn(silu(g) * u);
    }
}

template <int R>
__global__ void __launch_bounds__(kGemvWarps * 32) moe_down_combine_kernel(const bf16* __restrict__ h,
                                                                          const int32_t* __restrict__ ids,
                                                                          const float* __restrict__ weights,
                                                                          const bf16* const* __restrict__ w2s,
                                                                          float* __restrict__ out, int n, int k, int K,
                                                                          int N) {
  constexpr int U = 8 / R;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kGemvWarps + warp) * R;
  if (row0 >= N) return;
  for (int i = 0; i < n; ++i) {
    float total[R];
#pragma unroll
    for (int r = 0; r < R; ++r) total[r] = 0;
    for (int j = 0; j < k; ++j) {
      const int p = i * k + j;
      if (ids[p] < 0) continue;
      const bf16* w2 = w2s[ids[p]];
      const bf16* wr[R];
      detail::clamped_rows<R>(w2, row0, N, K, wr);
      const bf16* xr[1] = {h + static_cast<int64_t>(p) * K};
      float acc[R][1];
      detail::gemv_dot<R, 1, U>(wr, xr, 1, K / 8, lane, acc);
      const float wt = weights[p];
#pragma unroll
      for (int r = 0; r < R; ++r) total[r] = fmaf(wt, warp_sum(acc[r][0]), total[r]);
    }
    if (lane == 0)
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (row0 + r < N) out[static_cast<int64_t>(i) * N + row0 + r] += total[r];
  }
}

// The same result as moe_down_combine_kernel, bit for bit, with w2 read once per used
// expert instead of once per (token, slot) pair, and more warps per row. A block owns
// kDownRowGroups x R rows; its work items are (row group, used expert), shared
// round-robin by its warps; an item streams the expert's R rows of w2 once for the
// (up to M) pairs that chose the expert (the same lane order as the per-pair GEMV, so
// each dot is identical) into shared memory; then, per row and token, the slots are
// combined in j order (fmaf from 0) and added to out, as the per-pair kernel does.
// Preload (MOEBENCH_DOWN_PRELOAD, launch_env.h): each warp also loads its first item's
// first chunks into registers before the wait (gemv_dot_first), so these blocks, which
// enter while gate/up's last blocks still stream, keep HBM busy through gate/up's tail.
constexpr int kDownRowGroups = 4;
template <int M, int R, bool Preload>
__global__ void __launch_bounds__(kGemvWarps * 32) moe_down_grouped_kernel(const bf16* __restrict__ h,
                                                                          const int32_t* __restrict__ ids,
                                                                          const float* __restrict__ weights,
                                                                          const bf16* const* __restrict__ w2s,
                                                                          float* __restrict__ out, int n, int k, int K,
                                                                          int N, bool early_trigger) {
  constexpr int U = 8 / R;
  constexpr int kRows = kDownRowGroups * R;
  static_assert(kRows * M <= kGemvWarps * 32, "one (row, token) of the combine per thread");
  __shared__ int s_expert[kMaxPairs], s_cnt[kMaxPairs], s_pair[kMaxPairs][M];
  __shared__ const bf16* s_w2[kMaxPairs];
  __shared__ float s_wt[kMaxPairs], s_out[kRows * M];
  __shared__ int s_used;
  __shared__ unsigned long long s_held;  // bit p: pair p is computed here (its id is not negative)
  __shared__ float s_dot[kRows][kMaxPairs];
  const int pairs = n * k;
  // The prologue reads only what was written before the previous kernel (gate/up) began:
  // ids, the routing weights, the expert table and out (gate/up writes only h), so with a
  // programmatic launch it overlaps the end of gate/up. (No w2 prefetch here: these blocks
  // enter during gate/up's last block lifetime, up to ~100 MB of its stream before the
  // end, so prefetched lines could leave L2 before use.)
  const int row_base = blockIdx.x * kRows;
  if (threadIdx.x < 32) {  // used experts in first-use order, each with its pairs in order
    const int used = detail::group_pairs<M>(ids, pairs, s_expert, s_cnt, s_pair);
    __syncwarp();  // lane 0 wrote s_expert
    for (int u = threadIdx.x; u < used; u += 32) s_w2[u] = w2s[s_expert[u]];
    if (threadIdx.x == 0) s_used = used;
    unsigned long long held = 0;
#pragma unroll
    for (int w = 0; w < detail::kSlotWords; ++w) {
      const int p = 32 * w + static_cast<int>(threadIdx.x);
      held |= static_cast<unsigned long long>(__ballot_sync(0xffffffffu, p < pairs && ids[p] >= 0)) << (32 * w);
    }
    if (threadIdx.x == 0) s_held = held;
  }
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) s_wt[p] = weights[p];
  {  // this thread's (row, token) of the combine: out's value, kept in shared memory (no register held over the loop)
    const int c_row = threadIdx.x % kRows, c_tok = threadIdx.x / kRows;
    if (c_tok < n && row_base + c_row < N) s_out[threadIdx.x] = out[static_cast<int64_t>(c_tok) * N + row_base + c_row];
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Item it: (row group, used expert); false where its rows are past N.
  auto item_rows = [&](int it, const bf16* (&wr)[R]) {
    const int row0 = row_base + (it % kDownRowGroups) * R;
    if (row0 >= N) return false;
    detail::clamped_rows<R>(s_w2[it / kDownRowGroups], row0, N, K, wr);
    return true;
  };
  bf16x8 first[U][R];
  bool preloaded = false;
  if constexpr (Preload) {
    __syncthreads();  // the bookkeeping above, for every warp's first item
    const bf16* wr[R];
    preloaded = warp < kDownRowGroups * s_used && item_rows(warp, wr);
    if (preloaded) detail::gemv_loads<R, U>(wr, lane, K / 8, first);
  }
  pdl_wait();  // h comes from the previous kernel
  // Where the next kernel's blocks may start (launch_env.h MOEBENCH_DOWN_TRIGGER): right
  // here, or (the default) once this block's dot products are done, so that the next
  // layer's q/k/v blocks enter at this stream's tail, as its blocks retire, instead of
  // queueing from the start and taking the SMs that happen to finish first.
  if (early_trigger) pdl_trigger();
  __syncthreads();
  const int items = kDownRowGroups * s_used;
  for (int it = warp; it < items; it += kGemvWarps) {
    const int g = it % kDownRowGroups, u = it / kDownRowGroups;
    const bf16* wr[R];
    if (!item_rows(it, wr)) continue;
    const int m = s_cnt[u];
    const bf16* xr[M];
#pragma unroll
    for (int mm = 0; mm < M; ++mm) xr[mm] = h + static_cast<int64_t>(s_pair[u][min(mm, m - 1)]) * K;
    float acc[R][M];
    if (Preload && preloaded && it == warp) detail::gemv_dot_first<R, M, U>(wr, xr, m, K / 8, lane, first, acc);
    else detail::gemv_dot<R, M, U>(wr, xr, m, K / 8, lane, acc);
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int mm = 0; mm < M; ++mm) {
        const float d = warp_sum(acc[r][mm]);
        if (lane == 0 && mm < m) s_dot[g * R + r][s_pair[u][mm]] = d;
      }
  }
  if (!early_trigger) pdl_trigger();
  __syncthreads();
  const int c_row = threadIdx.x % kRows, c_tok = threadIdx.x / kRows;
  if (c_tok < n && row_base + c_row < N) {
    float total = 0;
    for (int j = 0; j < k; ++j)
      if ((s_held >> (c_tok * k + j)) & 1ull) total = fmaf(s_wt[c_tok * k + j], s_dot[c_row][c_tok * k + j], total);
    out[static_cast<int64_t>(c_tok) * N + row_base + c_row] = s_out[threadIdx.x] + total;
  }
}

template <int M>
void launch_down_grouped(const bf16* h, const int32_t* ids, const float* weights, const bf16* const* w2s, float* out,
                         int n, int k, int hidden, int inter, bool early_trigger, bool preload, cudaStream_t stream) {
  const int knob = down_rows_from_env();  // MOEBENCH_DOWN_ROWS (launch_env.h), 0: by size
  const int R = knob > 0 ? knob : hidden >= kGemvWarps * 2 * 132 ? 2 : 1;
  const unsigned blocks = static_cast<unsigned>(ceil_div(hidden, kDownRowGroups * R));
  using Kernel = void (*)(const bf16*, const int32_t*, const float*, const bf16* const*, float*, int, int, int, int, bool);
  const Kernel kernel = R == 2 ? (preload ? moe_down_grouped_kernel<M, 2, true> : moe_down_grouped_kernel<M, 2, false>)
                               : (preload ? moe_down_grouped_kernel<M, 1, true> : moe_down_grouped_kernel<M, 1, false>);
  launch_pdl(kernel, dim3(blocks), dim3(kGemvWarps * 32), 0, stream, h, ids, weights, w2s, out, n, k, inter, hidden,
             early_trigger);
  CUDA_CHECK_LAUNCH("moe_down_grouped_kernel");
}

// Like moe_down_combine_kernel but without the routing weights: y[p] = w2_{ids[p]} @ h[p].
template <int R>
__global__ void __launch_bounds__(kGemvWarps * 32) moe_down_pairs_kernel(const bf16* __restrict__ h,
                                                                        const int32_t* __restrict__ ids,
                                                                        const bf16* const* __restrict__ w2s,
                                                                        float* __restrict__ y, int n_pairs, int K,
                                                                        int N) {
  constexpr int U = 8 / R;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kGemvWarps + warp) * R;
  if (row0 >= N) return;
  for (int p = 0; p < n_pairs; ++p) {
    if (ids[p] < 0) {
      for (int r = 0; r < R; ++r)
        if (lane == 0 && row0 + r < N) y[static_cast<int64_t>(p) * N + row0 + r] = 0;
      continue;
    }
    const bf16* w2 = w2s[ids[p]];
    const bf16* wr[R];
    detail::clamped_rows<R>(w2, row0, N, K, wr);
    const bf16* xr[1] = {h + static_cast<int64_t>(p) * K};
    float acc[R][1];
    detail::gemv_dot<R, 1, U>(wr, xr, 1, K / 8, lane, acc);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float s = warp_sum(acc[r][0]);
      if (lane == 0 && row0 + r < N) y[static_cast<int64_t>(p) * N + row0 + r] = s;
    }
  }
}

// Blocks of `kernel` resident at once on this device: the blocks that can start before
// the launch's wait, i.e. while the router still runs.
template <typename Kernel>
int resident_blocks(Kernel kernel) {
  int per_sm = 0, device = 0, sms = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kGemvWarps * 32, 0));
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return per_sm * sms;
}

template <int M, int R>
void launch_gate_up_r(dim3 grid, const bf16* x, const int32_t* ids, const bf16* const* w1s, const bf16* const* w3s,
                      bf16* h, int n, int k, int n_experts, int hidden, int inter, const float* pred,
                      unsigned pred_bytes, cudaStream_t stream) {
  static const int pred_blocks = resident_blocks(moe_gate_up_kernel<M, R>);  // one device a process for these launches
  launch_pdl(moe_gate_up_kernel<M, R>, grid, dim3(kGemvWarps * 32), 0, stream, x, ids, w1s, w3s, h, n, k, hidden, inter,
             n_experts, pred, pred ? pred_bytes : 0u, pred_blocks);
}

int gate_up_rows_per_warp(int inter) {
  const int knob = gate_up_rows_from_env();  // MOEBENCH_GATEUP_ROWS (launch_env.h), 0: by size
  return knob > 0 ? knob : inter >= kGemvWarps * 2 * 132 / 2 ? 2 : 1;
}

template <int M>
void launch_gate_up(const bf16* x, const int32_t* ids, const bf16* const* w1s, const bf16* const* w3s, bf16* h, int n,
                    int k, int n_experts, int hidden, int inter, const float* pred, unsigned pred_bytes,
                    cudaStream_t stream) {
  // A block per (row block, used-expert slot): slot y computes the y-th distinct expert of ids.
  const int R = gate_up_rows_per_warp(inter);
  dim3 grid(static_cast<unsigned>(ceil_div(inter, kGemvWarps * R)), static_cast<unsigned>(std::min(n * k, n_experts)));
  if (R == 2) launch_gate_up_r<M, 2>(grid, x, ids, w1s, w3s, h, n, k, n_experts, hidden, inter, pred, pred_bytes, stream);
  else launch_gate_up_r<M, 1>(grid, x, ids, w1s, w3s, h, n, k, n_experts, hidden, inter, pred, pred_bytes, stream);
  CUDA_CHECK_LAUNCH("moe_gate_up_kernel");
}

void check_shape(const char* what, int n, int k, int hidden, int inter) {
  if (n > kGemvMaxRows || n * k > kMaxPairs || hidden % 8 != 0 || inter % 8 != 0)
    fail_msg(msg("cuda::", what, ": needs n <= ", kGemvMaxRows, " (got ", n, "), n*k <= ", kMaxPairs, " (got ",
                 n * k, "), hidden and inter multiples of 8 (got ", hidden, ", ", inter, ")"));
}

void gate_up_any(const bf16* x, const int32_t* ids, const bf16* const* w1s, const bf16* const* w3s, bf16* h, int n,
                 int k, int n_experts, int hidden, int inter, cudaStream_t stream, const float* pred = nullptr,
                 unsigned pred_bytes = 0) {
  if (n == 1) launch_gate_up<1>(x, ids, w1s, w3s, h, n, k, n_experts, hidden, inter, pred, pred_bytes, stream);
  else if (n == 2) launch_gate_up<2>(x, ids, w1s, w3s, h, n, k, n_experts, hidden, inter, nullptr, 0, stream);
  else if (n <= 4) launch_gate_up<4>(x, ids, w1s, w3s, h, n, k, n_experts, hidden, inter, nullptr, 0, stream);
  else launch_gate_up<8>(x, ids, w1s, w3s, h, n, k, n_experts, hidden, inter, nullptr, 0, stream);
}
}  // namespace

int moe_gate_up_block_rows(int inter) { return kGemvWarps * gate_up_rows_per_warp(inter); }

void moe_decode_fused(const bf16* x, const int32_t* ids, const float* weights, const bf16* const* w1s,
                      const bf16* const* w3s, const bf16* const* w2s, bf16* h, float* out, int n, int k,
                      int n_experts, int hidden, int inter, cudaStream_t stream, MoeDownAlgo down,
                      const float* pred_logits, unsigned pred_bytes) {
  MB_NVTX_RANGE("moe_decode_fused");
  if (n <= 0) return;
  check_shape("moe_decode_fused", n, k, hidden, inter);
  if (pred_logits && pred_bytes > 0 && (n != 1 || n_experts > kExpertPredictMax || pred_bytes % 16 != 0))
    fail_msg(msg("cuda::moe_decode_fused: a prediction for ", n, " tokens over ", n_experts, " experts, ", pred_bytes,
                  " bytes a block range (expected 1 token, at most ", kExpertPredictMax, " experts, a multiple of 16 bytes)"));
  gate_up_any(x, ids, w1s, w3s, h, n, k, n_experts, hidden, inter, stream, pred_logits, pred_bytes);
  const bool early = down == MoeDownAlgo::grouped_early_trigger ||
                     (down == MoeDownAlgo::grouped && down_early_trigger_from_env());
  const bool preload = down == MoeDownAlgo::grouped_preload || (down == MoeDownAlgo::grouped && down_preload_from_env());
  if (down != MoeDownAlgo::per_pair) {
    if (n == 1) launch_down_grouped<1>(h, ids, weights, w2s, out, n, k, hidden, inter, early, preload, stream);
    else if (n == 2) launch_down_grouped<2>(h, ids, weights, w2s, out, n, k, hidden, inter, early, preload, stream);
    else if (n <= 4) launch_down_grouped<4>(h, ids, weights, w2s, out, n, k, hidden, inter, early, preload, stream);
    else launch_down_grouped<8>(h, ids, weights, w2s, out, n, k, hidden, inter, early, preload, stream);
    return;
  }
  const int R = detail::gemv_rows_per_warp(hidden);
  const unsigned blocks = static_cast<unsigned>(ceil_div(hidden, kGemvWarps * R));
  switch (R) {
    case 4: moe_down_combine_kernel<4><<<blocks, kGemvWarps * 32, 0, stream>>>(h, ids, weights, w2s, out, n, k, inter, hidden); break;
    case 2: moe_down_combine_kernel<2><<<blocks, kGemvWarps * 32, 0, stream>>>(h, ids, weights, w2s, out, n, k, inter, hidden); break;
    default: moe_down_combine_kernel<1><<<blocks, kGemvWarps * 32, 0, stream>>>(h, ids, weights, w2s, out, n, k, inter, hidden); break;
  }
  CUDA_CHECK_LAUNCH("moe_down_combine_kernel");
}

void moe_decode_experts(const bf16* x, const int32_t* ids, const bf16* const* w1s, const bf16* const* w3s,
                        const bf16* const* w2s, bf16* h, float* y, int n, int k, int n_experts, int hidden, int inter,
                        cudaStream_t stream) {
  MB_NVTX_RANGE("moe_decode_experts");
  if (n <= 0) return;
  check_shape("moe_decode_experts", n, k, hidden, inter);
  gate_up_any(x, ids, w1s, w3s, h, n, k, n_experts, hidden, inter, stream);
  const int R = detail::gemv_rows_per_warp(hidden);
  const unsigned blocks = static_cast<unsigned>(ceil_div(hidden, kGemvWarps * R));
  switch (R) {
    case 4: moe_down_pairs_kernel<4><<<blocks, kGemvWarps * 32, 0, stream>>>(h, ids, w2s, y, n * k, inter, hidden); break;
    case 2: moe_down_pairs_kernel<2><<<blocks, kGemvWarps * 32, 0, stream>>>(h, ids, w2s, y, n * k, inter, hidden); break;
    default: moe_down_pairs_kernel<1><<<blocks, kGemvWarps * 32, 0, stream>>>(h, ids, w2s, y, n * k, inter, hidden); break;
  }
  CUDA_CHECK_LAUNCH("moe_down_pairs_kernel");
}

}  // namespace moebench::cuda
