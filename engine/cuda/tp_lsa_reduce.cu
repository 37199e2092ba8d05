// tp_lsa_reduce.cu: the kernel of tp_lsa_reduce.h (the host side is tp_lsa_reduce.cpp).
#if MOEBENCH_HAVE_NCCL
#include "engine/cuda/tp_lsa_reduce.h"

#include <nccl.h>
#include <nccl_device.h>

#include <cstdint>

#include "engine/cuda/check.cuh"
#include "engine/cuda/pdl.cuh"

namespace moebench::cuda {

namespace {

__device__ __forceinline__ void add4(float4& s, const float4 v) {
  s.x += v.x;
  s.y += v.y;
  s.z += v.z;
  s.w += v.w;
}

__global__ void __launch_bounds__(kLsaThreads)
    lsa_all_reduce_kernel(ncclDevComm comm, ncclWindow_t win, float* x, size_t n4, size_t cap_floats, uint32_t* turns) {
  pdl_wait();  // x is the previous kernel's output
  __shared__ uint32_t s_turn;
  if (threadIdx.x == 0) s_turn = turns[blockIdx.x];
  __syncthreads();
  const size_t turn = s_turn & 1u;
  const int me = comm.lsaRank, world = comm.lsaSize;
  float4* x4 = reinterpret_cast<float4*>(x);
  const size_t first = static_cast<size_t>(blockIdx.x) * kLsaThreads + threadIdx.x;
  const size_t stride = static_cast<size_t>(kLsaBlocks) * kLsaThreads;
  // This rank's values into its slot of every peer's inbox (stores over NVLink).
  for (int d = 1; d < world; ++d) {
    const int peer = (me + d) % world;
    float4* dst = static_cast<float4*>(ncclGetLsaPointer(win, lsa_slot_offset(turn, me, world, cap_floats), peer));
    for (size_t i = first; i < n4; i += stride) __stcg(dst + i, x4[i]);
  }
  {  // the peers' stores of this block's elements are visible after the barrier (release / acquire)
    ncclLsaBarrierSession<ncclCoopCta> bar(ncclCoopCta(), comm, ncclTeamTagLsa(), blockIdx.x);
    bar.sync(ncclCoopCta(), ::cuda::memory_order_acq_rel);
  }
  pdl_trigger();
  const float4* inbox = static_cast<const float4*>(ncclGetLocalPointer(win, lsa_slot_offset(turn, 0, world, cap_floats)));
  const size_t cap4 = cap_floats / 4;
  for (size_t i = first; i < n4; i += stride) {
    float4 s = me == 0 ? x4[i] : __ldcg(inbox + i);
    for (int r = 1; r < world; ++r) add4(s, r == me ? x4[i] : __ldcg(inbox + r * cap4 + i));
    x4[i] = s;
  }
  if (threadIdx.x == 0) turns[blockIdx.x] = s_turn + 1;
}

}  // namespace

void lsa_all_reduce_launch(const ncclDevComm& comm, ncclWindow_vidmem* window, float* x, size_t count,
                           size_t cap_floats, uint32_t* turns, cudaStream_t stream) {
  MB_NVTX_RANGE("lsa_all_reduce");
  launch_pdl(lsa_all_reduce_kernel, dim3(kLsaBlocks), dim3(kLsaThreads), 0, stream, comm, window, x, count / 4,
             cap_floats, turns);
}

}  // namespace moebench::cuda
#endif
