// nccl_comm.h: NCCL communicators for one process that drives N GPUs of one host,
// one host thread per GPU: all-reduce (sum) of activations for tensor parallelism and
// a grouped send/recv all-to-all of rows for expert parallelism (engine/parallel_plan.h
// gives the counts).
//
// One process, ncclCommInitAll, a thread per GPU — rather than a process per GPU that
// meet through a unique id in a file — because the benchmark is one process: one
// command line, one routing source, one results file, weights read from the
// checkpoint once and scattered to the GPUs; nothing has to launch, wait for or clean
// up after sibling processes and their rendezvous file. Each rank's thread issues the
// collectives of its own communicator on its own stream, so no rank waits on
// another's kernel launches.
//
// libnccl is opened at run time (dlopen), not linked: every binary starts on a host
// without NCCL (CPU runs, one GPU), and a host that has it elsewhere points
// LD_LIBRARY_PATH at it. Search order: libnccl.so.2 on the loader's path, then the
// library CMake found in the CUDA toolkit. NCCL_NVLS_ENABLE (NVLink multicast) is set
// to 0 unless the environment sets it: decode's collectives are a few hundred KB.
// Errors throw moebench::Error "file:line: CALL failed: <NCCL error string> (<last
// error>)", as CUDA_CHECK does.
#pragma once
#if MOEBENCH_HAVE_NCCL
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/dtype.h"

namespace moebench::cuda {

class NcclComms {
 public:
  // One communicator per entry of `devices` (CUDA ordinals, distinct), rank i on
  // devices[i], and a non-blocking stream per rank.
  explicit NcclComms(std::vector<int> devices);
  ~NcclComms();
  NcclComms(const NcclComms&) = delete;
  NcclComms& operator=(const NcclComms&) = delete;

  int size() const;
  int device(int rank) const;
  cudaStream_t stream(int rank) const;

  // The calls of one rank: from the thread driving that rank's GPU; every rank makes
  // the same calls in the same order. Enqueued on stream(rank), asynchronous.
  // recv = sum over ranks of send (count elements of f32, bf16 or f16); send == recv is in place.
  void all_reduce_sum(int rank, const void* send, void* recv, size_t count, DType dtype);
  // The same on a stream of the caller's (on this rank's GPU), e.g. a model's compute stream.
  void all_reduce_sum(int rank, const void* send, void* recv, size_t count, DType dtype, cudaStream_t stream);
  // Rows of row_elems elements: `send` holds send_rows[d] rows for each rank d in rank
  // order, `recv` receives recv_rows[s] rows from each rank s in rank order (both spans
  // have size() entries). This rank's own rows are copied on the stream.
  void all_to_all_rows(int rank, const void* send, std::span<const int64_t> send_rows, void* recv,
                       std::span<const int64_t> recv_rows, size_t row_elems, DType dtype);
  void synchronize(int rank);  // waits for stream(rank)

  // One buffer of `bytes` on each rank's GPU in NCCL symmetric memory: ncclMemAlloc, then
  // a window registered with NCCL_WIN_COLL_SYMMETRIC on every rank's communicator (one
  // group, from this thread), so NCCL (2.27 and later) runs its low-latency symmetric
  // kernels on collectives over them. Empty, with the reason in *why, where the library
  // lacks the calls or a step fails (nothing is kept then). Freed with the communicators.
  // windows (may be null): each rank's window (ncclWindow_t) of the buffers, for kernels
  // of ours that reach the peers' buffers through NCCL's device API (tp_lsa_reduce.h).
  std::vector<void*> alloc_symmetric(size_t bytes, std::string* why, std::vector<void*>* windows = nullptr);

  // Rank `rank`'s communicator (an ncclComm_t), and an entry point of the library opened
  // (null where it lacks it): for the device API's host calls (tp_lsa_reduce.cu).
  void* handle(int rank) const;
  static void* symbol(const char* name);

  static std::string library_version();  // e.g. "2.28.9", of the library opened

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs f(rank) on one thread per rank, each after cudaSetDevice(comms.device(rank)),
// joins them all, then rethrows the first exception a rank threw.
void run_per_rank(const NcclComms& comms, const std::function<void(int rank)>& f);

}  // namespace moebench::cuda
#endif
