// moe_small_experts.cu: see moe_small_experts.h.
#include "engine/cuda/moe_small_experts.h"

#include <iterator>

#include "engine/cuda/async_copy.cuh"
#include "engine/cuda/check.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/moe_small_rows.cuh"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/pdl.cuh"

namespace moebench::cuda {

namespace {
constexpr int kMinExperts = 32;   // below, the fused kernels' blocks per expert are long enough
constexpr int kMaxExperts = 256;  // the expert table in shared memory: 2 x 2 KiB
constexpr int kMaxSlots = 8;
constexpr int kMaxRowsPerWarp = 4;

// Warp w of the grid takes rows [R w, R w + R) of the flat list of the k slots' inter rows
// (inter % R == 0: one slot per warp) and writes h[slot][row] = silu(w1 x) * (w3 x) in
// bf16: moe_gate_up_kernel's warp at one token (small_rows::gate_up_warp), without its
// bookkeeping (at one token pair j is slot j).
template <int R, int U, int W>
__global__ void __launch_bounds__(W * 32) small_gate_up_kernel(const bf16* __restrict__ x,
                                                               const int32_t* __restrict__ ids,
                                                               const bf16* const* __restrict__ w1s,
                                                               const bf16* const* __restrict__ w3s,
                                                               bf16* __restrict__ h, int k, int K, int N,
                                                               int n_experts) {
  __shared__ const bf16* s_w1[kMaxExperts];
  __shared__ const bf16* s_w3[kMaxExperts];
  for (int t = threadIdx.x; t < n_experts; t += W * 32) {  // the table: written before the router began
    s_w1[t] = w1s[t];
    s_w3[t] = w3s[t];
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int flat = (blockIdx.x * W + warp) * R;
  const bool active = flat < k * N;
  pdl_wait();  // ids and x come from the router
  pdl_trigger();
  const int slot = active ? flat / N : 0;
  const int e = active ? ids[slot] : 0;
  __syncthreads();  // the table
  if (!active) return;
  small_rows::gate_up_warp<R, U>(x, s_w1[e], s_w3[e], h, slot, flat - slot * N, K, N, lane);
}

// A warp per output row (small_rows::down_row: G slots' rows of w2 in flight, U chunks
// deep, the routing-weighted sum in slot order), then out = out + total:
// moe_down_grouped_kernel's bits. The first group's weight loads are issued before the
// wait on gate/up (they read no h).
template <int G, int U, int W>
__global__ void __launch_bounds__(W * 32) small_down_kernel(const bf16* __restrict__ h,
                                                            const int32_t* __restrict__ ids,
                                                            const float* __restrict__ weights,
                                                            const bf16* const* __restrict__ w2s,
                                                            float* __restrict__ out, int k, int K, int N,
                                                            bool late_trigger) {
  __shared__ const bf16* s_w2[kMaxSlots];
  __shared__ float s_wt[kMaxSlots];
  // ids, weights, the table and out were written before gate/up began (pdl.cuh): read
  // before the wait.
  if (threadIdx.x < k) {
    s_w2[threadIdx.x] = w2s[ids[threadIdx.x]];
    s_wt[threadIdx.x] = weights[threadIdx.x];
  }
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * W + warp;
  if (row >= N) return;
  const float old = lane == 0 ? out[row] : 0.0f;
  bool waited = false;
  auto wait_once = [&](int, int) {  // h comes from gate/up
    if (!waited) {
      pdl_wait();
      if (!late_trigger) pdl_trigger();
      waited = true;
    }
  };
  if (lane >= K / 8) wait_once(0, 0);  // no chunk of its own (K < 256): waits here, not in the loop
  const float total = small_rows::down_row<G, U, false>(h, s_w2, s_wt, row, k, K, lane, wait_once);
  if (late_trigger) pdl_trigger();  // the next kernel's blocks start as down's warps finish
  if (lane == 0) out[row] = old + total;
}

// The one-launch form's counters, each in its own 128-byte line (index j * kLine): rows done
// per slot (gate/up warps add R each), the ticket (a block's tile in the order blocks start)
// and the blocks out; zero between launches.
constexpr int kLine = 32;
constexpr int kTicket = kMaxSlots, kOut = kMaxSlots + 1;
__device__ unsigned int g_small_one[(kMaxSlots + 2) * kLine];


// gate/up and down in one launch. Each block takes a ticket as it starts: tickets below
// gu_tiles are small_gate_up_kernel's blocks, the rest small_down_kernel's. A gate/up warp
// counts its R rows done on its slot's counter (after a fence); a down warp, after issuing
// a group's first w2 loads, waits until that group's slots have all N rows, so its first
// slots' dot products overlap the last slots' gate/up and no kernel boundary separates the
// two. A down tile waits only on tiles with smaller tickets, which run already: no
// deadlock whatever the grid's residency. The same per-warp bodies as the two launches:
// the same bits.
template <int R, int U, int G, int UD, int W, int kSleepNs, bool kLateTrigger = false>
__global__ void __launch_bounds__(W * 32) small_one_kernel(const bf16* __restrict__ x,
                                                           const int32_t* __restrict__ ids,
                                                           const float* __restrict__ weights,
                                                           const bf16* const* __restrict__ w1s,
                                                           const bf16* const* __restrict__ w3s,
                                                           const bf16* const* __restrict__ w2s, bf16* h,
                                                           float* __restrict__ out, int k, int hidden, int inter,
                                                           int n_experts, unsigned gu_tiles) {
  __shared__ const bf16* s_w1[kMaxExperts];
  __shared__ const bf16* s_w3[kMaxExperts];
  __shared__ const bf16* s_w2t[kMaxExperts];
  __shared__ const bf16* s_w2[kMaxSlots];
  __shared__ int s_ids[kMaxSlots];
  __shared__ float s_wt[kMaxSlots];
  __shared__ unsigned s_tile;
  // The ticket, the expert tables (written before the router began) and, after the wait,
  // the ids and weights are requested side by side: a block that starts late (the down
  // tiles past what the SMs hold beside gate/up) pays one round trip before its w2 loads.
  // The ticket is the one write before the wait: the counters are this kernel's alone, and
  // the previous launch of it completed before the kernel this one follows began (pdl.cuh).
  if (threadIdx.x == 0) s_tile = atomicAdd(&g_small_one[kTicket * kLine], 1u);
  for (int t = threadIdx.x; t < n_experts; t += W * 32) {
    s_w1[t] = w1s[t];
    s_w3[t] = w3s[t];
    s_w2t[t] = w2s[t];
  }
  pdl_wait();  // ids, weights and x come from the router, out from before
  // The next kernel's blocks may start now, or (kLateTrigger) only once every gate/up row is
  // done: where the two launches let them, after the down kernel's wait (they would take
  // the SMs of retiring gate/up tiles while down still streams).
  if (!kLateTrigger) pdl_trigger();
  if (threadIdx.x < k) {
    s_ids[threadIdx.x] = ids[threadIdx.x];
    s_wt[threadIdx.x] = weights[threadIdx.x];
  }
  __syncthreads();
  const unsigned tile = s_tile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (tile < gu_tiles) {
    const int flat = (static_cast<int>(tile) * W + warp) * R;
    if (flat < k * inter) {
      const int slot = flat / inter, e = s_ids[slot];
      small_rows::gate_up_warp<R, U>(x, s_w1[e], s_w3[e], h, slot, flat - slot * inter, hidden, inter, lane);
      if (lane == 0) {
        __threadfence();
        atomicAdd(&g_small_one[slot * kLine], static_cast<unsigned>(R));
      }
    }
  } else {
    if (threadIdx.x < k) s_w2[threadIdx.x] = s_w2t[s_ids[threadIdx.x]];
    __syncthreads();
    const int row = static_cast<int>(tile - gu_tiles) * W + warp;
    if (row < hidden) {
      const float old = lane == 0 ? out[row] : 0.0f;
      auto slots_done = [&](int j0, int count) {
        for (int g = 0; g < count; ++g)
          while (async::ld_acquire_u32(&g_small_one[(j0 + g) * kLine]) < static_cast<unsigned>(inter))
            if (kSleepNs > 0) __nanosleep(kSleepNs);
        if (kLateTrigger && j0 + count == k) pdl_trigger();  // every slot done
      };
      const float total = small_rows::down_row<G, UD, true>(h, s_w2, s_wt, row, k, inter, lane, slots_done);
      if (lane == 0) out[row] = old + total;
    }
  }
  // The last block out zeroes the counters: every block has its ticket and has read the
  // slot counters for the last time.
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(&g_small_one[kOut * kLine], 1u) == gridDim.x - 1) {
      for (int j = 0; j < kMaxSlots + 2; ++j) g_small_one[j * kLine] = 0;
      __threadfence();
    }
  }
}

struct GateUpShape {
  int R, U, W;
  void (*kernel)(const bf16*, const int32_t*, const bf16* const*, const bf16* const*, bf16*, int, int, int, int);
};
struct DownShape {
  int G, U, W;
  void (*kernel)(const bf16*, const int32_t*, const float*, const bf16* const*, float*, int, int, int, bool);
};
// 16 loads in flight per lane (2R rows x U; G x U) in the first of each, fewer or more after.
// The first of each list is the default: measured on an H200 (Qwen3-30B-A3B shape, batch 1,
// 50-token prompt, 64 new tokens, q/k norm inside the attention), gate/up R 4 U 2 gave 287.2 tok/s single-sequence against
// 281.1 (R 1 U 8), 275.1 (R 1 U 8, 4 warps); down G 4 gave 281.1 against 276.6 (G 2) and
// 257.2 (G 4, 4 warps); standalone (moe_small/qwen3) R 4 U 2 + G 4 took 34.1 us, the fused
// kernels 35.4.
const GateUpShape kGateUpShapes[] = {
    {4, 2, 8, small_gate_up_kernel<4, 2, 8>}, {1, 8, 8, small_gate_up_kernel<1, 8, 8>},
    {2, 4, 8, small_gate_up_kernel<2, 4, 8>}, {1, 4, 8, small_gate_up_kernel<1, 4, 8>},
    {1, 8, 4, small_gate_up_kernel<1, 8, 4>},
};
const DownShape kDownShapes[] = {
    {4, 4, 8, small_down_kernel<4, 4, 8>},
    {2, 4, 8, small_down_kernel<2, 4, 8>},
    {8, 2, 8, small_down_kernel<8, 2, 8>},
    {4, 4, 4, small_down_kernel<4, 4, 4>},
};
static_assert(kMaxRowsPerWarp == 4, "small_experts_supported's inter % 4");

const GateUpShape& find_gate_up(const SmallExpertShape& s) {
  for (const GateUpShape& g : kGateUpShapes)
    if (g.R == s.gu_rows && g.U == s.gu_depth && g.W == s.gu_warps) return g;
  fail_msg(msg("cuda::moe_decode_small: no compiled gate/up shape with ", s.gu_rows, " rows per warp, depth ",
               s.gu_depth, ", ", s.gu_warps, " warps"));
}
const DownShape& find_down(const SmallExpertShape& s) {
  for (const DownShape& d : kDownShapes)
    if (d.G == s.down_slots && d.W == s.down_warps) return d;
  fail_msg(msg("cuda::moe_decode_small: no compiled down shape with ", s.down_slots, " slots in flight, ",
               s.down_warps, " warps"));
}
}  // namespace

const std::vector<SmallExpertShape>& small_expert_shapes() {
  static const std::vector<SmallExpertShape> shapes = [] {
    std::vector<SmallExpertShape> v;
    for (const GateUpShape& g : kGateUpShapes)
      for (const DownShape& d : kDownShapes) v.push_back(SmallExpertShape{g.R, g.U, g.W, d.G, d.W});
    return v;
  }();
  return shapes;
}

SmallExpertShape small_expert_shape_from_env() {
  static const SmallExpertShape s = [] {
    static_assert(std::size(kGateUpShapes) == 5 && std::size(kDownShapes) == 4, "the lists below");
    const GateUpShape& g = kGateUpShapes[env_choice("MOEBENCH_SMALL_GATE_UP_SHAPE", {0, 1, 2, 3, 4}, 0)];
    const DownShape& d = kDownShapes[env_choice("MOEBENCH_SMALL_DOWN_SHAPE", {0, 1, 2, 3}, 0)];
    return SmallExpertShape{g.R, g.U, g.W, d.G, d.W};
  }();
  return s;
}

// The down kernel lets the next kernel's blocks start only as its warps finish their sums
// (1 or unset); MOEBENCH_SMALL_DOWN_TRIGGER=0: right after its wait on gate/up, so the next
// layer's q/k/v blocks take SMs and ask L2 for their rows while down streams. Measured on an
// H200 (Qwen3-30B-A3B shape, batch 1, 128 new tokens): 342.2 and 342.4 tok/s single-sequence
// against 325.1-327.4 with 0; the batched path within 0.1 %.
namespace {
bool small_down_late_trigger() {
  static const bool on = env_choice("MOEBENCH_SMALL_DOWN_TRIGGER", {0, 1}, 1) == 1;
  return on;
}
}  // namespace

bool small_experts_enabled() {
  static const bool on = env_choice("MOEBENCH_SMALL_EXPERTS", {0, 1}, 1) == 1;
  return on;
}

bool small_experts_supported(int n, int k, int n_experts, int hidden, int inter) {
  return n == 1 && k >= 1 && k <= kMaxSlots && k <= n_experts && n_experts >= kMinExperts &&
         n_experts <= kMaxExperts && hidden > 0 && hidden % 8 == 0 && inter > 0 && inter % 8 == 0 &&
         inter % kMaxRowsPerWarp == 0;
}

void moe_decode_small(const bf16* x, const int32_t* ids, const float* weights, const bf16* const* w1s,
                      const bf16* const* w3s, const bf16* const* w2s, bf16* h, float* out, int k, int n_experts,
                      int hidden, int inter, cudaStream_t stream, SmallExpertShape shape) {
  MB_NVTX_RANGE("moe_decode_small");
  if (!small_experts_supported(1, k, n_experts, hidden, inter) || !aligned16(x) || !aligned16(h))
    fail_msg(msg("cuda::moe_decode_small: top-", k, " of ", n_experts, " experts, hidden ", hidden, ", inter ", inter,
                 " not supported (k <= 8, ", kMinExperts, "..", kMaxExperts,
                 " experts, hidden % 8 == 0, inter % 8 == 0, 16-byte aligned x and h)"));
  const GateUpShape& gu = find_gate_up(shape);
  const int rows = k * inter;
  launch_pdl(gu.kernel, dim3(static_cast<unsigned>(ceil_div(rows, gu.W * gu.R))), dim3(gu.W * 32), 0, stream, x, ids,
             w1s, w3s, h, k, hidden, inter, n_experts);
  CUDA_CHECK_LAUNCH("small_gate_up_kernel");
  const DownShape& dn = find_down(shape);
  launch_pdl(dn.kernel, dim3(static_cast<unsigned>(ceil_div(hidden, dn.W))), dim3(dn.W * 32), 0, stream, h, ids,
             weights, w2s, out, k, inter, hidden,
             small_down_late_trigger());
  CUDA_CHECK_LAUNCH("small_down_kernel");
}

namespace {
int small_one_mode() {
  static const int mode = env_choice("MOEBENCH_SMALL_ONE_LAUNCH", {0, 1, 2, 3, 4}, 0);
  return mode;
}
}  // namespace

bool small_one_launch_enabled() { return small_one_mode() != 0; }

void moe_decode_small_one(const bf16* x, const int32_t* ids, const float* weights, const bf16* const* w1s,
                          const bf16* const* w3s, const bf16* const* w2s, bf16* h, float* out, int k, int n_experts,
                          int hidden, int inter, cudaStream_t stream) {
  MB_NVTX_RANGE("moe_decode_small_one");
  if (!small_experts_supported(1, k, n_experts, hidden, inter) || !aligned16(x) || !aligned16(h))
    fail_msg(msg("cuda::moe_decode_small_one: top-", k, " of ", n_experts, " experts, hidden ", hidden, ", inter ",
                 inter, " not supported (k <= 8, ", kMinExperts, "..", kMaxExperts,
                 " experts, hidden % 8 == 0, inter % 8 == 0, 16-byte aligned x and h)"));
  // The default shapes of the two launches (gate/up R 4 U 2, down G 4 U 4, 8 warps), spinning
  // on the slot counters; MOEBENCH_SMALL_ONE_LAUNCH=2 polling every 200 ns; =3 gate/up R 2 U 4
  // (twice the tiles, Qwen3's 192 in 384: the SMs' shares of gate/up more even); =4 as 1 with
  // the next kernel let start only by down tiles that saw every slot done.
  constexpr int G = 4, UD = 4, W = 8;
  const int mode = small_one_mode();
  const int R = mode == 3 ? 2 : 4;
  const unsigned gu_tiles = static_cast<unsigned>(ceil_div(k * inter, W * R));
  const unsigned down_tiles = static_cast<unsigned>(ceil_div(hidden, W));
  auto kernel = mode == 4   ? small_one_kernel<4, 2, G, UD, W, 0, true>
                : mode == 3 ? small_one_kernel<2, 4, G, UD, W, 0>
                : mode == 2 ? small_one_kernel<4, 2, G, UD, W, 200>
                            : small_one_kernel<4, 2, G, UD, W, 0>;
  launch_pdl(kernel, dim3(gu_tiles + down_tiles), dim3(W * 32), 0, stream, x, ids, weights, w1s, w3s, w2s, h, out, k,
             hidden, inter, n_experts, gu_tiles);
  CUDA_CHECK_LAUNCH("small_one_kernel");
}

void moe_decode_small(const bf16* x, const int32_t* ids, const float* weights, const bf16* const* w1s,
                      const bf16* const* w3s, const bf16* const* w2s, bf16* h, float* out, int k, int n_experts,
                      int hidden, int inter, cudaStream_t stream) {
  if (small_one_launch_enabled()) {
    moe_decode_small_one(x, ids, weights, w1s, w3s, w2s, h, out, k, n_experts, hidden, inter, stream);
    return;
  }
  moe_decode_small(x, ids, weights, w1s, w3s, w2s, h, out, k, n_experts, hidden, inter, stream,
                   small_expert_shape_from_env());
}

}  // namespace moebench::cuda
