// moe_small_experts.cu: see moe_small_experts.h.
#include "engine/cuda/moe_small_experts.h"

#include <iterator>

#include "engine/cuda/check.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/pdl.cuh"

namespace moebench::cuda {

namespace {
using detail::silu;
constexpr int kMinExperts = 32;   // below, the fused kernels' blocks per expert are long enough
constexpr int kMaxExperts = 256;  // the expert table in shared memory: 2 x 2 KiB
constexpr int kMaxSlots = 8;
constexpr int kMaxRowsPerWarp = 4;

// Warp w of the grid takes rows [R w, R w + R) of the flat list of the k slots' inter rows
// (inter % R == 0: one slot per warp) and writes h[slot][row] = silu(w1 x) * (w3 x) in
// bf16: moe_gate_up_kernel's warp at one token (gemv_dot over 2R rows, U deep, the same
// lane order), without its bookkeeping (at one token pair j is slot j).
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
  const int row0 = flat - slot * N;
  const bf16* wr[2 * R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    wr[r] = s_w1[e] + static_cast<int64_t>(row0 + r) * K;
    wr[R + r] = s_w3[e] + static_cast<int64_t>(row0 + r) * K;
  }
  const bf16* xr[1] = {x};
  float acc[2 * R][1];
  detail::gemv_dot<2 * R, 1, U>(wr, xr, 1, K / 8, lane, acc);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float g = warp_sum(acc[r][0]), u = warp_sum(acc[R + r][0]);
    if (lane == 0) h[static_cast<int64_t>(slot) * N + row0 + r] = __float2bfloat16_rn(silu(g) * u);
  }
}

// A warp per output row: for the slots in groups of G (G rows of w2 in flight, U chunks
// deep), each slot's dot with h[slot] in gemv_warp's lane order (chunks c = lane, lane +
// 32, ... ascending, acc += dot8), warp_sum, then total = fmaf(weight, dot, total) in slot
// order and out = out + total: moe_down_grouped_kernel's bits. The first iteration's
// weight loads are issued before the wait on gate/up (they read no h).
template <int G, int U, int W>
__global__ void __launch_bounds__(W * 32) small_down_kernel(const bf16* __restrict__ h,
                                                            const int32_t* __restrict__ ids,
                                                            const float* __restrict__ weights,
                                                            const bf16* const* __restrict__ w2s,
                                                            float* __restrict__ out, int k, int K, int N) {
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
  const int K8 = K / 8;
  bool waited = false;
  if (lane >= K8) {  // no chunk of its own (K < 256): waits here, not in the loop
    pdl_wait();
    pdl_trigger();
    waited = true;
  }
  float total = 0;
  for (int j0 = 0; j0 < k; j0 += G) {
    float acc[G];
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g] = 0;
    for (int c0 = lane; c0 < K8; c0 += 32 * U) {
      bf16x8 wv[U][G];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + 32 * u;
#pragma unroll
        for (int g = 0; g < G; ++g)
          if (c < K8 && j0 + g < k)
            wv[u][g] = load8_stream(s_w2[j0 + g] + static_cast<int64_t>(row) * K + 8 * static_cast<int64_t>(c));
      }
      if (!waited) {  // h comes from gate/up
        pdl_wait();
        pdl_trigger();
        waited = true;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + 32 * u;
        if (c >= K8) break;
#pragma unroll
        for (int g = 0; g < G; ++g) {
          if (j0 + g >= k) break;
          float wf[8], xf[8];
          to_float8(wv[u][g], wf);
          to_float8(load8(h + static_cast<int64_t>(j0 + g) * K + 8 * c), xf);
          acc[g] += dot8(wf, xf);
        }
      }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (j0 + g >= k) break;
      total = fmaf(s_wt[j0 + g], warp_sum(acc[g]), total);
    }
  }
  if (lane == 0) out[row] = old + total;
}

struct GateUpShape {
  int R, U, W;
  void (*kernel)(const bf16*, const int32_t*, const bf16* const*, const bf16* const*, bf16*, int, int, int, int);
};
struct DownShape {
  int G, U, W;
  void (*kernel)(const bf16*, const int32_t*, const float*, const bf16* const*, float*, int, int, int);
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
             weights, w2s, out, k, inter, hidden);
  CUDA_CHECK_LAUNCH("small_down_kernel");
}

void moe_decode_small(const bf16* x, const int32_t* ids, const float* weights, const bf16* const* w1s,
                      const bf16* const* w3s, const bf16* const* w2s, bf16* h, float* out, int k, int n_experts,
                      int hidden, int inter, cudaStream_t stream) {
  moe_decode_small(x, ids, weights, w1s, w3s, w2s, h, out, k, n_experts, hidden, inter, stream,
                   small_expert_shape_from_env());
}

}  // namespace moebench::cuda
