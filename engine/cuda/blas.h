// blas.h: a cuBLAS handle whose workspace comes from the device arena, so cuBLAS
// makes no device allocation of its own after construction. Host C++.
#pragma once
#include <cublas_api.h>

namespace moebench::cuda {

class DeviceArena;

class Blas {
 public:
  static constexpr size_t kWorkspaceBytes = 32ull << 20;  // cuBLAS's recommendation for Hopper
  // arena may be null: cuBLAS then allocates its workspace itself.
  explicit Blas(DeviceArena* arena = nullptr);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
  DeviceArena* arena_ = nullptr;
  void* workspace_ = nullptr;
};

}  // namespace moebench::cuda
