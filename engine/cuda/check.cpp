// check.cpp: the throwing half of check.cuh, compiled by the host compiler (fmt here).
#include <cublas_v2.h>

#include "engine/cuda/check.cuh"
#include "common/error.h"

namespace moebench::cuda {

void fail_msg(const std::string& message) { throw Error(message); }

void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  fail("{}:{}: {} failed: {} ({})", file, line, what, cudaGetErrorName(e), cudaGetErrorString(e));
}

void throw_cublas(cublasStatus_t s, const char* what, const char* file, int line) {
  fail("{}:{}: {} failed: {} ({})", file, line, what, cublasGetStatusName(s), cublasGetStatusString(s));
}

}  // namespace moebench::cuda
