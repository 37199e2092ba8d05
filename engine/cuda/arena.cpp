// arena.cu: DeviceArena over one cudaMalloc (see arena.h).
#include "engine/cuda/arena.h"

#include "engine/cuda/check.cuh"
#include "common/error.h"
#include "common/units.h"

namespace moebench::cuda {

DeviceArena::DeviceArena(uint64_t budget_bytes, std::string label) : book_(budget_bytes, ArenaBook::kDefaultAlignment, label) {
  if (book_.capacity() == 0) return;
  cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&base_), book_.capacity());
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
    fail("{}: cannot reserve the budget of {} on the GPU: cudaMalloc failed with {}; the device has {} free of {}",
         label, format_bytes(book_.capacity()), cudaGetErrorName(e), format_bytes(free_b), format_bytes(total_b));
  }
}

DeviceArena::~DeviceArena() {
  if (base_) cudaFree(base_);  // no throw from a destructor; errors here are sticky ones reported elsewhere
}

void* DeviceArena::alloc(uint64_t bytes, const std::string& name) { return base_ + book_.alloc(bytes, name); }

void DeviceArena::free(void* p) {
  if (!p) return;
  book_.free(static_cast<uint64_t>(static_cast<char*>(p) - base_));
}

}  // namespace moebench::cuda
