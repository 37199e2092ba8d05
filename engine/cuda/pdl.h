// pdl.h: programmatic dependent launch (Hopper), host side. Decode runs a chain of short
// kernels per layer; launched with the programmatic-serialization attribute, a kernel's
// blocks start while the previous kernel finishes, run their prologue (weight prefetches,
// index loads: nothing the previous kernel writes) and then wait in griddepcontrol.wait
// until that kernel has completed and its writes are visible (pdl.cuh). Host C++.
#pragma once
#include <cuda_runtime_api.h>

namespace moebench::cuda {

// Whether a launch on `stream` takes the attribute: not on the legacy default stream, not
// while the stream captures a CUDA graph (graphs keep full dependencies), and not when the
// environment sets MOEBENCH_PDL=0 (launch_env.h; 1 or unset: on).
bool pdl_enabled(cudaStream_t stream);

}  // namespace moebench::cuda
