// blas.cpp: Blas (see blas.h).
#include "engine/cuda/blas.h"

#include <cublas_v2.h>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"

namespace moebench::cuda {

Blas::Blas(DeviceArena* arena) : arena_(arena) {
  CUBLAS_CHECK(cublasCreate(&handle_));
  if (arena_) {
    workspace_ = arena_->alloc(kWorkspaceBytes, "cublas workspace");
    CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_, kWorkspaceBytes));
  }
}

Blas::~Blas() {
  if (handle_) cublasDestroy(handle_);
  if (arena_ && workspace_) arena_->free(workspace_);
}

}  // namespace moebench::cuda
