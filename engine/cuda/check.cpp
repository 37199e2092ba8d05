// check.cpp: the throwing half of check.cuh, compiled by the host compiler (fmt here).
#include <cublas_v2.h>

#include "engine/cuda/check.cuh"
#include "common/error.h"

namespace moebench::cuda {

void fail_msg(const std::string& message) { throw Error(message); }

void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  // A failed call also stands as the thread's last error; taken here, it is reported once and a
  // later launch check (after the exception was caught, as a test does) does not meet it again.
  // Sticky errors (a fault in a kernel) stay whatever is done here.
  (void)cudaGetLastError();
  fail("{}:{}: {} failed: {} ({})", file, line, what, cudaGetErrorName(e), cudaGetErrorString(e));
}

void throw_cublas(cublasStatus_t s, const char* what, const char* file, int line) {
  fail("{}:{}: {} failed: {} ({})", file, line, what, cublasGetStatusName(s), cublasGetStatusString(s));
}

int64_t event_elapsed_ns(cudaEvent_t start, cudaEvent_t end) {
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start, end));
  return static_cast<int64_t>(static_cast<double>(ms) * 1e6);
}

}  // namespace moebench::cuda
