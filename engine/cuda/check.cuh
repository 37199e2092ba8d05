// check.cuh: every CUDA runtime / cuBLAS call and every kernel launch is checked.
// A failure throws moebench::Error "file:line: CALL failed: cudaErrorX (string)".
// Also the NVTX3 domain "moebench" and MB_NVTX_RANGE(name) for launchers.
// Includable from host C++ (g++) and from .cu files. It deliberately does not include
// fmt (common/error.h): nvcc 13 cannot compile fmt 9's consteval checks, so .cu files
// build their messages with cuda::msg(...) and throw through cuda::fail_msg.
#pragma once
#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <nvtx3/nvtx3.hpp>
#include <sstream>
#include <string>

namespace moebench::cuda {

struct nvtx_domain {
  static constexpr const char* name{"moebench"};
};

// Throw moebench::Error (defined in check.cpp, compiled by the host compiler).
[[noreturn]] void fail_msg(const std::string& message);
[[noreturn]] void throw_cuda(cudaError_t e, const char* what, const char* file, int line);
[[noreturn]] void throw_cublas(cublasStatus_t s, const char* what, const char* file, int line);

// Nanoseconds between two recorded (and completed) events.
int64_t event_elapsed_ns(cudaEvent_t start, cudaEvent_t end);

// msg("n = ", n, " is too large") — a message without fmt.
template <typename... Args>
std::string msg(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace moebench::cuda

#define CUDA_CHECK(call)                                                                          \
  do {                                                                                            \
    cudaError_t mb_err_ = (call);                                                                 \
    if (mb_err_ != cudaSuccess) ::moebench::cuda::throw_cuda(mb_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(call)                                                                                 \
  do {                                                                                                     \
    cublasStatus_t mb_st_ = (call);                                                                        \
    if (mb_st_ != CUBLAS_STATUS_SUCCESS) ::moebench::cuda::throw_cublas(mb_st_, #call, __FILE__, __LINE__); \
  } while (0)

// After a <<<>>> launch: catches bad configurations (the launch itself), not async faults.
#define CUDA_CHECK_LAUNCH(what)                                                                  \
  do {                                                                                           \
    cudaError_t mb_err_ = cudaGetLastError();                                                    \
    if (mb_err_ != cudaSuccess) ::moebench::cuda::throw_cuda(mb_err_, what, __FILE__, __LINE__); \
  } while (0)

#define MB_NVTX_CAT2(a, b) a##b
#define MB_NVTX_CAT(a, b) MB_NVTX_CAT2(a, b)
// A scoped NVTX range in domain "moebench" (shows in Nsight Systems).
#define MB_NVTX_RANGE(name) \
  ::nvtx3::scoped_range_in<::moebench::cuda::nvtx_domain> MB_NVTX_CAT(mb_nvtx_, __LINE__) { name }
