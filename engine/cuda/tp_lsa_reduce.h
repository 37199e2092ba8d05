// tp_lsa_reduce.h: the multi-GPU all-reduce (sum, fp32, in place) of decode's small
// activations as one kernel of ours over NCCL's device API (NCCL 2.28 and later), for
// settings tp_allreduce=lsa: each GPU stores its values straight into every peer's inbox
// (NCCL symmetric memory, reached through the window's LSA pointers over NVLink), meets
// the peers in an NCCL LSA barrier (one per block), then sums the ranks' values in rank
// order into its own buffer. Against ncclAllReduce on the same symmetric memory: one
// launch that does only this (no NCCL kernel's set-up and protocol), and launched
// programmatically (pdl.h), so the next kernel's blocks and their weight prefetches start
// while it waits for the peers. The sum is the same on every rank (rank order), and for
// two ranks it is the same as NCCL's (a + b). The inbox has two slots used in turn (a
// device counter per block keeps the turn, so CUDA graph replays keep it too): a rank
// cannot write the slot a slower peer still reads, because it reaches the next use of a
// slot only through a barrier the peer enters after its reads. Element i always belongs
// to the same block, whatever the count, so a block's barrier orders all of its data.
// Host C++ declarations; the kernel is in tp_lsa_reduce.cu.
#pragma once
#if MOEBENCH_HAVE_NCCL
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

struct ncclDevComm;
struct ncclWindow_vidmem;

namespace moebench::cuda {

// The kernel's grid, fixed: element i (in float4s) belongs to block (i / kLsaThreads) %
// kLsaBlocks whatever the count; each block has its LSA barrier (index blockIdx.x) and
// its turn counter.
constexpr int kLsaBlocks = 16;
constexpr int kLsaThreads = 256;

// Byte offset in a rank's buffer of the inbox slot (turn, source rank); the turn
// counters (kLsaBlocks x uint32) follow the two turns' slots.
constexpr size_t lsa_slot_offset(size_t turn, int source, int world, size_t cap_floats) {
  return (turn * static_cast<size_t>(world) + static_cast<size_t>(source)) * cap_floats * sizeof(float);
}

// The kernel (tp_lsa_reduce.cu): x (count floats, a multiple of 4) = the sum over the
// ranks, through `window` (this rank's part: 2 x world slots of cap_floats, then turns).
void lsa_all_reduce_launch(const ncclDevComm& comm, ncclWindow_vidmem* window, float* x, size_t count,
                           size_t cap_floats, uint32_t* turns, cudaStream_t stream);

class NcclComms;

class LsaAllReduce {
 public:
  // Rows of an all-reduce that this path takes (decode: a token per sequence); larger
  // ones (prefill chunks) go through ncclAllReduce.
  static constexpr int kMaxRows = 64;
  // Bytes of each rank's symmetric buffer for all-reduces of up to cap_floats floats.
  static size_t buffer_bytes(size_t cap_floats, int world);
  // Rank `rank` of comms, over its part (`buffer`, `window`) of a symmetric allocation of
  // buffer_bytes(cap_floats, comms.size()): creates its device communicator
  // (ncclDevCommCreate, a collective: every rank's thread constructs its own at once).
  // Throws Error (one line) where the library lacks the device API or refuses.
  LsaAllReduce(NcclComms& comms, int rank, void* buffer, void* window, size_t cap_floats);
  ~LsaAllReduce();
  LsaAllReduce(const LsaAllReduce&) = delete;
  LsaAllReduce& operator=(const LsaAllReduce&) = delete;

  // Whether run() takes x (count floats): at most the capacity, a multiple of 4, 16-byte aligned.
  bool takes(const float* x, size_t count) const;
  // x = the sum over the ranks of x, enqueued on `stream` (this rank's GPU); every rank
  // makes the same calls in the same order.
  void run(float* x, size_t count, cudaStream_t stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moebench::cuda
#endif
