// tp_lsa_reduce.cpp: the host side of tp_lsa_reduce.h (the device communicator, the
// inbox's layout); the kernel is in tp_lsa_reduce.cu.
#if MOEBENCH_HAVE_NCCL
#include "engine/cuda/tp_lsa_reduce.h"

#include <nccl.h>
#include <nccl_device.h>

#include <cstdint>
#include <cstring>

#include "common/error.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/nccl_comm.h"

namespace moebench::cuda {

struct LsaAllReduce::Impl {
  ncclComm_t comm = nullptr;
  ncclDevComm dev{};
  bool made = false;
  ncclWindow_t win = nullptr;
  size_t cap = 0;
  uint32_t* turns = nullptr;  // (kLsaBlocks) in the rank's buffer, after the inbox
};

size_t LsaAllReduce::buffer_bytes(size_t cap_floats, int world) {
  return lsa_slot_offset(2, 0, world, cap_floats) + kLsaBlocks * sizeof(uint32_t);
}

LsaAllReduce::LsaAllReduce(NcclComms& comms, int rank, void* buffer, void* window, size_t cap_floats)
    : impl_(std::make_unique<Impl>()) {
  auto create = reinterpret_cast<decltype(&ncclDevCommCreate)>(NcclComms::symbol("ncclDevCommCreate"));
  if (!create || !NcclComms::symbol("ncclDevCommDestroy"))
    fail("setting tp_allreduce=lsa: NCCL {} has no device API (ncclDevCommCreate: 2.28 or later has)",
         NcclComms::library_version());
  if (cap_floats == 0 || cap_floats % 4 != 0)
    fail("tp_allreduce=lsa: an inbox of {} floats (expected a positive multiple of 4)", cap_floats);
  Impl& m = *impl_;
  m.comm = static_cast<ncclComm_t>(comms.handle(rank));
  m.win = static_cast<ncclWindow_t>(window);
  m.cap = cap_floats;
  ncclDevCommRequirements reqs;
  std::memset(&reqs, 0, sizeof reqs);
  reqs.lsaBarrierCount = kLsaBlocks;
  if (const ncclResult_t e = create(m.comm, &reqs, &m.dev); e != ncclSuccess) {
    auto text = reinterpret_cast<decltype(&ncclGetErrorString)>(NcclComms::symbol("ncclGetErrorString"));
    fail("setting tp_allreduce=lsa: ncclDevCommCreate on rank {} failed: {}", rank,
         text ? text(e) : fmt::format("NCCL error {}", static_cast<int>(e)));
  }
  m.made = true;
  if (m.dev.lsaSize != comms.size()) {  // released here, where every rank's thread is (a collective)
    reinterpret_cast<decltype(&ncclDevCommDestroy)>(NcclComms::symbol("ncclDevCommDestroy"))(m.comm, &m.dev);
    m.made = false;
    fail("setting tp_allreduce=lsa: {} of the {} GPUs are load/store accessible to GPU {} (expected all)", m.dev.lsaSize,
         comms.size(), comms.device(rank));
  }
  m.turns = reinterpret_cast<uint32_t*>(static_cast<char*>(buffer) + lsa_slot_offset(2, 0, comms.size(), cap_floats));
  CUDA_CHECK(cudaMemset(m.turns, 0, kLsaBlocks * sizeof(uint32_t)));
  CUDA_CHECK(cudaDeviceSynchronize());
}

// ncclDevCommDestroy deregisters a window, a collective: the owner destroys every rank's
// at once, each on its rank's thread (parallel_model.cpp).
LsaAllReduce::~LsaAllReduce() {
  if (!impl_->made) return;
  auto destroy = reinterpret_cast<decltype(&ncclDevCommDestroy)>(NcclComms::symbol("ncclDevCommDestroy"));
  if (destroy) destroy(impl_->comm, &impl_->dev);  // errors ignored: nothing better to do in a destructor
}

bool LsaAllReduce::takes(const float* x, size_t count) const {
  return count > 0 && count <= impl_->cap && count % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

void LsaAllReduce::run(float* x, size_t count, cudaStream_t stream) {
  if (!takes(x, count)) fail("tp_allreduce=lsa: an all-reduce of {} floats it does not take", count);
  lsa_all_reduce_launch(impl_->dev, impl_->win, x, count, impl_->cap, impl_->turns, stream);
}

}  // namespace moebench::cuda
#endif
