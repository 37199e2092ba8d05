// handoff_probe.h: what one dependency between launches costs, apart from any kernel's
// work: a measurement for the question whether the decode step's dependent launches should
// hand off through a counter instead of the programmatic launch's grid-wide wait
// (docs/PERFORMANCE.md, "Sessions 29-31: what one handoff between launches costs"). Not used by the model.
//
// A chain of `hops` dependent hops over a vector of n floats. Hop h reads the whole vector
// the hop before wrote (every block all of it, from L2, as a GEMV reads its input) and
// writes its block's slice of the other buffer as that slice + 1, so after the chain every
// element is its start value + hops (exact in fp32 for small values: the tests check it).
// How a hop waits for the one before:
//   stream      one launch a hop, plain stream order (the launch waits for the one before
//               to complete; no programmatic launch);
//   pdl         one launch a hop with the programmatic-launch attribute: its blocks start
//               once the launch before triggers, then wait in griddepcontrol.wait for that
//               launch to complete and its writes to be flushed (what every decode kernel
//               of the engine does);
//   counter     one launch a hop with the attribute, but its blocks wait on a counter that
//               every block of the hop before increments after its stores (a release at GPU
//               scope; the wait an acquire), not for the launch to complete;
//   persistent  all hops in one launch, waiting on the same counters (the grid must be
//               resident at once).
// Every launch triggers the next right after its wait. Counters are zeroed by the run
// itself (a memset before the first hop, in every mode, so the modes pay the same), so a
// run can be captured in a CUDA graph and replayed.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace moebench::cuda {

enum class HandoffMode { stream, pdl, counter, persistent };
inline constexpr HandoffMode kHandoffModes[] = {HandoffMode::stream, HandoffMode::pdl, HandoffMode::counter,
                                                HandoffMode::persistent};

// The mode's name as the header above spells it (tests and benchmark names).
constexpr const char* handoff_mode_name(HandoffMode m) {
  switch (m) {
    case HandoffMode::stream: return "stream";
    case HandoffMode::pdl: return "pdl";
    case HandoffMode::counter: return "counter";
    case HandoffMode::persistent: return "persistent";
  }
  return "?";
}

struct HandoffShape {
  int blocks_per_sm = 2;  // blocks of 256 threads a hop, per SM
  int smem_kib = 0;       // dynamic shared memory a block (only to limit how many fit an SM)
  int hops = 64;
  int n = 4096;  // floats in the vector, a multiple of 8
};

// Whether this device runs the probe in that mode and shape: Hopper or later for the
// programmatic launch; for `persistent`, the whole grid resident at once. On false, *why
// says what is not.
bool handoff_probe_supported(HandoffMode mode, const HandoffShape& shape, std::string* why = nullptr);

// Device words the counters need (any content: each run zeroes them first).
inline size_t handoff_probe_counter_words(const HandoffShape& shape) { return static_cast<size_t>(shape.hops); }

// Runs the chain: a and b each n floats (device); the chain starts from a and ends in a
// when hops is even, else in b. Fails (an exception naming what) where the probe is not
// supported.
void handoff_probe_run(HandoffMode mode, const HandoffShape& shape, float* a, float* b, uint32_t* counters,
                       cudaStream_t stream);

}  // namespace moebench::cuda
