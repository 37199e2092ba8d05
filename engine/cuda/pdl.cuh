// pdl.cuh: programmatic dependent launch (pdl.h), device side and the launcher. A kernel
// launched with launch_pdl must call pdl_wait() before it reads anything the previous
// kernel of the stream writes and before its first global write; what it does before (its
// prologue) may read only what no kernel still running writes: weights, and what kernels
// completed before the previous one began wrote. pdl_trigger() lets the next kernel's
// blocks start; every kernel here calls it only after its own pdl_wait(), so a kernel that
// runs (its prologue) finds all kernels before its predecessor complete. Both are no-ops
// for a kernel launched without the attribute, and before Hopper. .cu only.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "engine/cuda/check.cuh"
#include "engine/cuda/pdl.h"

namespace moebench::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...) with the launch attributes attrs[0 .. n_attrs).
template <typename... KArgs, typename... Args>
void launch_with(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                 cudaLaunchAttribute* attrs, unsigned n_attrs, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attrs;
  cfg.numAttrs = n_attrs;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

// kernel<<<grid, block, smem, stream>>>(args...), with the attribute where pdl_enabled.
template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  launch_with(kernel, grid, block, smem, stream, attr, pdl_enabled(stream) ? 1u : 0u, std::forward<Args>(args)...);
}

}  // namespace moebench::cuda
