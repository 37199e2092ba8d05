// pdl.h: programmatic dependent launch (Hopper), host side. Decode runs a chain of short
// kernels per layer; launched with the programmatic-serialization attribute, a kernel's
// blocks start while the previous kernel finishes, run their prologue (weight prefetches,
// index loads: nothing the previous kernel writes) and then wait in griddepcontrol.wait
// until that kernel has completed and its writes are visible (pdl.cuh). Host C++.
#pragma once
#include <cuda_runtime_api.h>

namespace moebench::cuda {

// Whether a launch on `stream` takes the attribute: not before Hopper (compute capability 9.0,
// as device_info sees it), not on the legacy default stream, not
// when the environment sets MOEBENCH_PDL=0 (launch_env.h; 1 or unset: on), and while the
// stream captures a CUDA graph unless MOEBENCH_GRAPH_PDL=0 (the capture records
// programmatic edges; 0: graphs keep full dependencies).
bool pdl_enabled(cudaStream_t stream);

// Whether captured launches take the attribute: sets, for the process, what
// MOEBENCH_GRAPH_PDL gives by default (tests run both ways in one process).
void set_graph_pdl(bool on);

}  // namespace moebench::cuda
