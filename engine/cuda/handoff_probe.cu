// handoff_probe.cu: a chain of dependent hops, each waiting for the one before by stream
// order, the programmatic launch's wait, or a counter (handoff_probe.h).
#include <string>

#include "engine/cuda/async_copy.cuh"
#include "engine/cuda/check.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/device.h"
#include "engine/cuda/handoff_probe.h"
#include "engine/cuda/pdl.cuh"

namespace moebench::cuda {

namespace {

constexpr int kThreads = 256;

// Hops [h0, h1): hop h reads buf[h & 1] (all of it) and writes its slice of buf[(h + 1) & 1].
// wait: 0 none (stream order), 1 griddepcontrol.wait, 2 the counter of the hop before.
__global__ void __launch_bounds__(kThreads)
    handoff_hop_kernel(float* a, float* b, int n, uint32_t* counters, int h0, int h1, int wait) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __shared__ float red[kThreads / 32];
  const int tid = static_cast<int>(threadIdx.x), grid = static_cast<int>(gridDim.x), blk = static_cast<int>(blockIdx.x);
  for (int h = h0; h < h1; ++h) {
    if (wait == 1 && h == h0) pdl_wait();
    if (wait == 2 && h > 0) {
      if (tid == 0) async::wait_count_bounded(counters + h - 1, static_cast<uint32_t>(grid));
      __syncthreads();
    }
    if (h == h0) pdl_trigger();
    const float* in = (h & 1) ? b : a;
    float* out = (h & 1) ? a : b;
    // The whole input, as a GEMV reads its activation row: from L2 (other SMs wrote it).
    float s = 0;
    for (int i = 8 * tid; i < n; i += 8 * kThreads) {
      const float4 u = __ldcg(reinterpret_cast<const float4*>(in + i));
      const float4 v = __ldcg(reinterpret_cast<const float4*>(in + i + 4));
      s += ((u.x + u.y) + (u.z + u.w)) + ((v.x + v.y) + (v.z + v.w));
    }
    s = warp_sum(s);
    if ((tid & 31) == 0) red[tid >> 5] = s;
    __syncthreads();
    float total = 0;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) total += red[w];
    // The block's slice + 1 (the sum only keeps the reads: it is never below -1e30 here).
    const int per = (n + grid - 1) / grid, i0 = blk * per, i1 = min(n, i0 + per);
    for (int i = i0 + tid; i < i1; i += kThreads) out[i] = __ldcg(in + i) + (total < -1e30f ? 0.0f : 1.0f);
    __syncthreads();  // red is reused, and the block's stores precede its count
    if (wait == 2 && tid == 0) {
      __threadfence();
      atomicAdd(counters + h, 1u);
    }
  }
#endif
}

// The most dynamic shared memory a block may ask for: the opt-in limit less the kernel's static arrays (the
// attribute is refused above that), set once so any shape up to it launches.
int dynamic_smem_cap() {
  static const int cap = allow_dynamic_smem(reinterpret_cast<const void*>(handoff_hop_kernel));
  return cap;
}

bool fits_all_at_once(const HandoffShape& s, int sms, std::string* why) {
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, handoff_hop_kernel, kThreads,
                                                           static_cast<size_t>(s.smem_kib) * 1024));
  if (per_sm >= s.blocks_per_sm) return true;
  if (why)
    *why = msg("persistent: ", s.blocks_per_sm, " blocks an SM with ", s.smem_kib, " KiB each do not fit (", per_sm,
               " do) on ", sms, " SMs");
  return false;
}

}  // namespace

bool handoff_probe_supported(HandoffMode mode, const HandoffShape& shape, std::string* why) {
  auto no = [&](std::string m) {
    if (why) *why = std::move(m);
    return false;
  };
  if (shape.blocks_per_sm < 1 || shape.hops < 1 || shape.n < 8 || shape.n % 8 != 0 || shape.smem_kib < 0)
    return no(msg("shape: blocks_per_sm ", shape.blocks_per_sm, ", hops ", shape.hops, ", n ", shape.n, ", smem_kib ",
                  shape.smem_kib, " (expected >= 1, >= 1, a multiple of 8, >= 0)"));
  const DeviceInfo& info = device_info_cached();
  if (info.cc_major < 9 && mode != HandoffMode::stream)
    return no(msg("compute capability ", info.cc_major, ".", info.cc_minor, ": the programmatic launch needs 9.0"));
  if (shape.smem_kib * 1024 > dynamic_smem_cap())
    return no(msg("smem_kib ", shape.smem_kib, ": more than the ", dynamic_smem_cap() / 1024,
                  " KiB of dynamic shared memory a block may have"));
  if (mode == HandoffMode::persistent && !fits_all_at_once(shape, info.sm_count, why)) return false;
  return true;
}

void handoff_probe_run(HandoffMode mode, const HandoffShape& shape, float* a, float* b, uint32_t* counters,
                       cudaStream_t stream) {
  std::string why;
  if (!handoff_probe_supported(mode, shape, &why)) fail_msg(msg("cuda::handoff_probe_run: ", why));
  const DeviceInfo& info = device_info_cached();
  const size_t smem = static_cast<size_t>(shape.smem_kib) * 1024;
  CUDA_CHECK(cudaMemsetAsync(counters, 0, handoff_probe_counter_words(shape) * sizeof(uint32_t), stream));
  const dim3 grid(static_cast<unsigned>(info.sm_count * shape.blocks_per_sm)), block(kThreads);
  switch (mode) {
    case HandoffMode::stream:
      for (int h = 0; h < shape.hops; ++h)
        handoff_hop_kernel<<<grid, block, smem, stream>>>(a, b, shape.n, counters, h, h + 1, 0);
      break;
    case HandoffMode::pdl:
    case HandoffMode::counter:
      for (int h = 0; h < shape.hops; ++h)
        launch_pdl(handoff_hop_kernel, grid, block, smem, stream, a, b, shape.n, counters, h, h + 1,
                   mode == HandoffMode::pdl ? 1 : 2);
      break;
    case HandoffMode::persistent: {
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeCooperative;  // every block resident at once: the waits cannot deadlock
      attr[0].val.cooperative = 1;
      launch_with(handoff_hop_kernel, grid, block, smem, stream, attr, 1u, a, b, shape.n, counters, 0, shape.hops, 2);
      break;
    }
  }
  CUDA_CHECK_LAUNCH("handoff_hop_kernel");
}

}  // namespace moebench::cuda
