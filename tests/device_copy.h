// device_copy.h: the CUDA tests' host <-> device copies: a host vector into a new buffer of
// an arena, and a device buffer's first values back on the host after all the device's
// work so far. Only for test files built with CUDA.
#pragma once
#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"

namespace moebench::test {

template <typename T>
T* upload(cuda::DeviceArena& arena, const std::vector<T>& v, const char* label = "test buffer") {
  T* d = arena.alloc_n<T>(std::max<size_t>(v.size(), 1), label);
  CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
std::vector<T> download(const T* d, size_t count) {
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> v(count);
  CUDA_CHECK(cudaMemcpy(v.data(), d, count * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

}  // namespace moebench::test
