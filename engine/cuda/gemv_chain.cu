// gemv_chain.cu: a chain of dependent one-row GEMVs in one persistent launch, or one launch
// an op (gemv_chain.h).
#include <algorithm>
#include <string>
#include <vector>

#include "engine/cuda/async_copy.cuh"
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/gemv_chain.h"
#include "engine/cuda/pdl.cuh"

namespace moebench::cuda {

namespace {

using bf16 = __nv_bfloat16;
constexpr int kMaxSlots = 32;
constexpr int kAccRows = kGemvChainMaxRowsPerBlock;

// A block's share of `rows`: rows / grid each, one more for the first rows % grid blocks.
struct Share {
  int r0, nr;
};
__host__ __device__ inline Share share_of(int rows, int grid, int b) {
  const int base = rows / grid, extra = rows % grid;
  return Share{b * base + (b < extra ? b : extra), base + (b < extra ? 1 : 0)};
}
// How many blocks hold rows of an op of `rows` (each increments its counter once).
[[maybe_unused]] __host__ __device__ inline int holders(int rows, int grid) { return rows < grid ? rows : grid; }

// acc += w . x over 8 inputs, in order.
[[maybe_unused]] __device__ __forceinline__ void fma8(const bf16x8& w, const bf16x8& x, float& acc) {
  float wf[8], xf[8];
  to_float8(w, wf);
  to_float8(x, xf);
#pragma unroll
  for (int i = 0; i < 8; ++i) acc = fmaf(wf[i], xf[i], acc);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
template <int W>
__device__ __forceinline__ void compute_sync() {  // the compute warps only (the copy warp has left)
  asm volatile("bar.sync 1, %0;" ::"n"(W * 32) : "memory");
}
#endif

// ops[op_begin .. op_end): the persistent launch takes them all, the per-op launches one
// each; W compute warps, ring slots of CH bytes. Dynamic shared memory: `slots` ring slots,
// then max_cols bf16 of x, then the compute warps' partial sums (W x kAccRows fp32).
template <int W, int CH>
__global__ void __launch_bounds__((W + 1) * 32, 1)
    gemv_chain_kernel(const GemvChainOp* __restrict__ ops, int op_begin, int op_end, const float* __restrict__ x0,
                      uint32_t* counters, int n_ops, int slots, int max_cols, int persistent) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int kS = CH / 2048;  // runs of 1024 inputs a chunk
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ __align__(8) uint64_t full[kMaxSlots], empty[kMaxSlots];
  __shared__ uint32_t s_epoch;
  unsigned char* ring = smem;
  bf16* xs = reinterpret_cast<bf16*>(smem + static_cast<size_t>(slots) * CH);
  float* acc = reinterpret_cast<float*>(smem + static_cast<size_t>(slots) * CH + static_cast<size_t>(max_cols) * 2);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int grid = static_cast<int>(gridDim.x), b = static_cast<int>(blockIdx.x);
  // Each compute warp has its own per_warp slots, which it takes in turn: it waits on a slot's
  // next phase only after it waited on the one before, so a wait never skips a phase.
  const int per_warp = slots / W;
  if (threadIdx.x == 0) {
    for (int s = 0; s < slots; ++s) {
      async::mbar_init(&full[s]);
      async::mbar_init(&empty[s]);  // its warp
    }
    async::mbar_fence_init();
    const uint32_t e = persistent ? async::ld_acquire_u32(counters + n_ops) : 0u;
    s_epoch = e;  // runs of this chain completed before this one
  }
  __syncthreads();
  if (warp == W) {  // the copy warp: every op's share, in order, as fast as slots free up
    if (lane == 0) {
      uint32_t taken[W] = {};  // chunks each compute warp has been given so far
      for (int i = op_begin; i < op_end; ++i) {
        const GemvChainOp op = ops[i];
        const Share sh = share_of(op.rows, grid, b);
        const char* src = reinterpret_cast<const char*>(op.w + static_cast<int64_t>(sh.r0) * op.cols);
        const int64_t bytes = static_cast<int64_t>(sh.nr) * op.cols * 2;
        int c = 0;
        for (int64_t off = 0; off < bytes; off += CH, ++c) {
          const int w = c % W;
          const uint32_t k = taken[w]++;
          const int slot = w * per_warp + static_cast<int>(k % static_cast<uint32_t>(per_warp));
          const uint32_t use = k / static_cast<uint32_t>(per_warp);
          if (use > 0) async::mbar_wait_bounded(&empty[slot], (use - 1) & 1u);
          const unsigned n = static_cast<unsigned>(bytes - off < CH ? bytes - off : CH);
          async::mbar_arrive_expect(&full[slot], n);
          async::bulk_copy(ring + static_cast<size_t>(slot) * CH, src + off, n, &full[slot]);
        }
      }
    }
    return;
  }
  const uint32_t epoch = s_epoch;
  uint32_t q = 0;  // chunks this warp has taken so far
  float* my_acc = acc + warp * kAccRows;
  for (int i = op_begin; i < op_end; ++i) {
    const GemvChainOp op = ops[i];
    const Share sh = share_of(op.rows, grid, b);
    const float* xsrc = x0;
    if (op.dep >= 0) {
      const GemvChainOp& d = ops[op.dep];
      xsrc = d.y;
      if (persistent && threadIdx.x == 0)
        async::wait_count_bounded(counters + op.dep, (epoch + 1) * static_cast<uint32_t>(holders(d.rows, grid)));
    }
    if (!persistent && i == op_begin) pdl_wait();  // x comes from the launches before
    compute_sync<W>();
    // x: fp32 from L2 (written by other SMs in this launch), rounded to bf16 into shared memory.
    for (int c = threadIdx.x * 8; c < op.cols; c += W * 32 * 8) {
      const float4 a = __ldcg(reinterpret_cast<const float4*>(xsrc + c));
      const float4 bb = __ldcg(reinterpret_cast<const float4*>(xsrc + c + 4));
      bf16x8 v;
      v.h[0] = __floats2bfloat162_rn(a.x, a.y);
      v.h[1] = __floats2bfloat162_rn(a.z, a.w);
      v.h[2] = __floats2bfloat162_rn(bb.x, bb.y);
      v.h[3] = __floats2bfloat162_rn(bb.z, bb.w);
      *reinterpret_cast<bf16x8*>(xs + c) = v;
    }
    for (int r = lane; r < sh.nr; r += 32) my_acc[r] = 0.0f;
    compute_sync<W>();
    const int64_t bytes = static_cast<int64_t>(sh.nr) * op.cols * 2;
    const int cols = op.cols;
    // Warp w takes the op's chunks w, w + W, ... (so that eight chunks are in hand at
    // once, not one), a lane its 16-byte vectors lane + 32 k of each 1024 inputs (one row:
    // cols % 1024 == 0); a row's sum goes to the warp's partial when the row ends or the
    // chunk does. The chunks a warp takes depend only on the op, never on the launch mode.
    const int n_chunks = static_cast<int>((bytes + CH - 1) / CH);
    for (int c = warp; c < n_chunks; c += W, ++q) {
      const int slot = warp * per_warp + static_cast<int>(q % static_cast<uint32_t>(per_warp));
      async::mbar_wait_bounded(&full[slot], (q / static_cast<uint32_t>(per_warp)) & 1u);
      const int64_t off = static_cast<int64_t>(c) * CH;
      // Runs of 1024 inputs in the chunk (rows are multiples of 2 KiB, so whole runs).
      const int n_sub = static_cast<int>((bytes - off < CH ? bytes - off : CH) / 2048);
      const bf16x8* wv = reinterpret_cast<const bf16x8*>(ring + static_cast<size_t>(slot) * CH);
      const int e = c * (CH / 2);  // the chunk's first input in the block's rows (under 2^24)
      int row = e / cols, col = e - row * cols;
      float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      auto flush = [&] {
        const float sum = warp_sum((a0 + a1) + (a2 + a3));
        if (lane == 0) my_acc[row] += sum;
        a0 = a1 = a2 = a3 = 0;
      };
      if (CH == 8192 && n_sub == kS) {
        // A whole chunk: its weights into registers first (16 loads in flight, not 4), the
        // slot handed back before the sums. The same sums in the same order as below.
        bf16x8 wr[kS][4];
#pragma unroll
        for (int j = 0; j < kS; ++j)
#pragma unroll
          for (int k = 0; k < 4; ++k) wr[j][k] = wv[j * 128 + lane + 32 * k];
        __syncwarp();
        if (lane == 0) async::mbar_arrive(&empty[slot]);
#pragma unroll
        for (int j = 0; j < kS; ++j) {
          if (col == cols) {  // warp-uniform
            flush();
            ++row;
            col = 0;
          }
          const bf16x8* x8 = reinterpret_cast<const bf16x8*>(xs + col) + lane;
          fma8(wr[j][0], x8[0], a0);
          fma8(wr[j][1], x8[32], a1);
          fma8(wr[j][2], x8[64], a2);
          fma8(wr[j][3], x8[96], a3);
          col += 1024;
        }
        flush();
        continue;
      }
      for (int j = 0; j < n_sub; ++j) {
        if (col == cols) {  // warp-uniform
          flush();
          ++row;
          col = 0;
        }
        const bf16x8* w8 = wv + j * 128 + lane;
        const bf16x8* x8 = reinterpret_cast<const bf16x8*>(xs + col) + lane;
        fma8(w8[0], x8[0], a0);
        fma8(w8[32], x8[32], a1);
        fma8(w8[64], x8[64], a2);
        fma8(w8[96], x8[96], a3);
        col += 1024;
      }
      flush();
      __syncwarp();
      if (lane == 0) async::mbar_arrive(&empty[slot]);
    }
    compute_sync<W>();
    for (int r = threadIdx.x; r < sh.nr; r += W * 32) {
      float s = 0;
#pragma unroll
      for (int w = 0; w < W; ++w) s += acc[w * kAccRows + r];
      op.y[sh.r0 + r] = s;
    }
    compute_sync<W>();
    if (persistent && threadIdx.x == 0 && sh.nr > 0) {
      __threadfence();
      atomicAdd(counters + i, 1u);
    }
  }
  if (!persistent) {
    pdl_trigger();
    return;
  }
  if (threadIdx.x == 0) {  // the last block of the launch to get here advances the run count
    __threadfence();
    const uint32_t done = atomicAdd(counters + n_ops + 1, 1u);
    if (done == (epoch + 1) * static_cast<uint32_t>(grid) - 1) {
      __threadfence();
      atomicExch(counters + n_ops, epoch + 1);
    }
  }
#endif
}

// The device's figures the chain needs: its multiprocessors, whether it is Hopper or later,
// and the dynamic shared memory a block may ask for beyond the kernels' own (static) shared
// memory, which is the same for every compiled shape (the limit is raised on first use).
struct ChainDevice {
  int sms = 0, smem_dynamic = 0;
  bool hopper = false;
};
ChainDevice chain_device() {
  const DeviceInfo& info = device_info_cached();
  ChainDevice d{info.sm_count, 0, info.cc_major >= 9};
  if (!d.hopper) return d;
  d.smem_dynamic = allow_dynamic_smem(reinterpret_cast<const void*>(gemv_chain_kernel<8, 8192>));
  for (auto* k : {gemv_chain_kernel<8, 16384>, gemv_chain_kernel<4, 16384>, gemv_chain_kernel<4, 32768>})
    set_dynamic_smem(reinterpret_cast<const void*>(k), d.smem_dynamic, "gemv_chain_kernel");
  return d;
}

int max_cols_of(const GemvChainOp* ops, int n_ops) {
  int m = 256;
  for (int i = 0; i < n_ops; ++i) m = std::max(m, ops[i].cols);
  return m;
}

// Ring slots the dynamic shared memory a block may have leaves beside x and the partial sums.
int ring_slots(const ChainDevice& d, int max_cols, GemvChainShape sh) {
  const int left = d.smem_dynamic - max_cols * 2 - sh.warps * kAccRows * 4;
  return std::min(kMaxSlots, left / (sh.chunk_kib * 1024)) / sh.warps * sh.warps;  // the same number a compute warp
}

bool shape_compiled(GemvChainShape sh) {
  return (sh.warps == 8 && (sh.chunk_kib == 8 || sh.chunk_kib == 16)) ||
         (sh.warps == 4 && (sh.chunk_kib == 16 || sh.chunk_kib == 32));
}

template <int W, int CH>
void launch_chain(const GemvChainOp* ops_dev, int n_ops, const float* x0, uint32_t* counters, GemvChainMode mode,
                  cudaStream_t stream, int slots, int max_cols, int sms) {
  const size_t smem = static_cast<size_t>(slots) * CH + static_cast<size_t>(max_cols) * 2 + W * kAccRows * 4;
  const dim3 grid(static_cast<unsigned>(sms)), block((W + 1) * 32);
  if (mode == GemvChainMode::per_op) {
    for (int i = 0; i < n_ops; ++i)
      launch_pdl(gemv_chain_kernel<W, CH>, grid, block, smem, stream, ops_dev, i, i + 1, x0, counters, n_ops, slots,
                 max_cols, 0);
    CUDA_CHECK_LAUNCH("gemv_chain_kernel (per op)");
    return;
  }
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_chain_kernel<W, CH>, block.x, smem));
  if (per_sm < 1)
    fail_msg(msg("cuda::gemv_chain_run: a block of ", smem, " bytes of shared memory does not fit an SM"));
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;  // every block resident at once: the waits cannot deadlock
  attr[0].val.cooperative = 1;
  launch_with(gemv_chain_kernel<W, CH>, grid, block, smem, stream, attr, 1u, ops_dev, 0, n_ops, x0, counters, n_ops,
              slots, max_cols, 1);
  CUDA_CHECK_LAUNCH("gemv_chain_kernel (persistent)");
}

}  // namespace

bool gemv_chain_supported(const GemvChainOp* ops, int n_ops, std::string* why, GemvChainShape shape) {
  auto no = [&](std::string m) {
    if (why) *why = std::move(m);
    return false;
  };
  const ChainDevice d = chain_device();
  if (!d.hopper) return no("the chain needs Hopper or later (bulk copies, programmatic launch)");
  if (!shape_compiled(shape))
    return no("shape of " + std::to_string(shape.warps) + " warps and " + std::to_string(shape.chunk_kib) +
              " KiB chunks (expected 8 warps with 8 or 16, or 4 with 16 or 32)");
  if (n_ops <= 0) return no("no ops");
  for (int i = 0; i < n_ops; ++i) {
    const GemvChainOp& o = ops[i];
    const std::string at = "op " + std::to_string(i) + ": ";
    if (!o.w || !o.y || !aligned16(o.w) || !aligned16(o.y))
      return no(at + "w and y must be 16-byte aligned device pointers");
    if (o.cols <= 0 || o.cols % 1024 != 0 || o.cols > kGemvChainMaxCols)
      return no(at + "cols " + std::to_string(o.cols) + " (expected a multiple of 1024 up to " +
                std::to_string(kGemvChainMaxCols) + ")");
    if (o.rows <= 0 || share_of(o.rows, d.sms, 0).nr > kGemvChainMaxRowsPerBlock)
      return no(at + "rows " + std::to_string(o.rows) + " (expected 1 to " +
                std::to_string(kGemvChainMaxRowsPerBlock) + " a block over " + std::to_string(d.sms) + " blocks)");
    if (o.dep >= i) return no(at + "dep " + std::to_string(o.dep) + " is not an earlier op");
    if (o.dep >= 0 && ops[o.dep].rows < o.cols)
      return no(at + "its input is op " + std::to_string(o.dep) + "'s " + std::to_string(ops[o.dep].rows) +
                " rows, fewer than its " + std::to_string(o.cols) + " cols");
  }
  if (ring_slots(d, max_cols_of(ops, n_ops), shape) < shape.warps)
    return no("shared memory holds less than a ring slot a warp");
  return true;
}

void gemv_chain_upload(const GemvChainOp* ops, int n_ops, GemvChainOp* ops_dev) {
  CUDA_CHECK(cudaMemcpy(ops_dev, ops, sizeof(GemvChainOp) * static_cast<size_t>(n_ops), cudaMemcpyHostToDevice));
}

void gemv_chain_run(const GemvChainOp* ops, int n_ops, const float* x0, const GemvChainOp* ops_dev,
                    uint32_t* counters, GemvChainMode mode, cudaStream_t stream, GemvChainShape shape) {
  MB_NVTX_RANGE("gemv_chain");
  std::string why;
  if (!gemv_chain_supported(ops, n_ops, &why, shape)) fail_msg(msg("cuda::gemv_chain_run: ", why));
  const ChainDevice d = chain_device();
  const int max_cols = max_cols_of(ops, n_ops), slots = ring_slots(d, max_cols, shape);
  const auto run = [&](auto launch) { launch(ops_dev, n_ops, x0, counters, mode, stream, slots, max_cols, d.sms); };
  if (shape.warps == 8 && shape.chunk_kib == 8) return run(launch_chain<8, 8192>);
  if (shape.warps == 8) return run(launch_chain<8, 16384>);
  if (shape.chunk_kib == 16) return run(launch_chain<4, 16384>);
  return run(launch_chain<4, 32768>);
}

}  // namespace moebench::cuda
