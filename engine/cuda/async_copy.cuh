// async_copy.cuh: Hopper's bulk copies into shared memory and the mbarriers that complete
// them, plus the acquire load and bounded spin waits of the kernels that hand work over
// inside one launch. One place for the inline PTX that gemv_staged, gemv_chain and the
// small-expert launches share; every function compiles to nothing before sm_90 except
// ld_acquire_u32 (sm_70).
#pragma once

#include <cstdint>

namespace moebench::cuda::async {

// A generic pointer into shared memory as the 32-bit shared-window address PTX wants.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// Load with acquire semantics at GPU scope: what the writer stored before its release
// (or fence + atomic) is visible after it.
__device__ __forceinline__ uint32_t ld_acquire_u32(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// An mbarrier that completes a phase after `count` arrivals (and the bytes it was told to
// expect). After initialising a block's barriers, call mbar_fence_init() once before any
// copy names them.
__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count = 1) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
// Makes the inits visible to the copy engine (the async proxy).
__device__ __forceinline__ void mbar_fence_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
// One arrival that also tells the barrier to expect `bytes` more of bulk copies this phase.
__device__ __forceinline__ void mbar_arrive_expect(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
// [dst, dst + bytes) of shared memory <- [src, src + bytes) of global memory (both 16-byte
// aligned, bytes a multiple of 16); completes on `bar` as bytes arrive.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
// Whether the phase of parity `parity` has completed (one try: the hardware may suspend
// the thread a while before it answers no).
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, unsigned parity) {
  uint32_t ok;
  asm volatile(
      "{\n.reg .pred p;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(ok)
      : "r"(smem_addr(bar)), "r"(parity)
      : "memory");
  return ok != 0;
}
// Spins until that phase completes (no limit: for waits whose producer is in the same block
// and already issued).
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  while (!mbar_try_wait(bar, parity)) {
  }
}

__device__ __forceinline__ uint64_t globaltimer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}
// The waits below cannot hang a machine: past 2 s something is wrong, and the launch traps
// (an error the host reports) instead of spinning forever. The clock is read once every
// 1024 tries, so a wait that succeeds soon never reads it more than once.
constexpr uint64_t kWaitLimitNs = 2000000000ull;
template <typename Ready>
__device__ __forceinline__ void spin_bounded(Ready ready) {
  uint64_t t0 = 0;
  for (int spin = 0;; ++spin) {
    if (ready()) return;
    if ((spin & 1023) == 0) {
      const uint64_t t = globaltimer_ns();
      if (spin == 0) t0 = t;
      else if (t - t0 > kWaitLimitNs) __trap();
    }
  }
}
__device__ __forceinline__ void mbar_wait_bounded(uint64_t* bar, unsigned parity) {
  spin_bounded([&] { return mbar_try_wait(bar, parity); });
}
// Until *p >= target (acquire), bounded.
__device__ __forceinline__ void wait_count_bounded(const uint32_t* p, uint32_t target) {
  spin_bounded([&] { return ld_acquire_u32(p) >= target; });
}
#endif

}  // namespace moebench::cuda::async
