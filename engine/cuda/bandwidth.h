// bandwidth.h: the physical limits a result is held against, measured in the same
// process: device memory bandwidth with a copy kernel (16-byte loads and stores,
// counted as read + write bytes) and with a read-only stream (16-byte loads, several
// in flight per thread, reduced so the loads stay), and pinned host->device
// bandwidth. Decode only reads weights, and a read stream reaches more than a copy
// (on an H200: about 4.45 TB/s against 3.9-4.0 TB/s), so the best of the two is the
// device memory figure a bound uses. Buffers come from plain cudaMalloc / cudaHostAlloc and are
// freed before returning (call before the model's arena takes the memory). Host C++.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

namespace moebench::cuda {

struct BandwidthResult {
  double gbps = 0;       // best of the repetitions, 1e9 bytes/s
  double median_gbps = 0;
  size_t bytes = 0;      // bytes moved per repetition (read + write for the copy kernel)
};

// Device-to-device copy kernel over `buffer_bytes` (read + write counted).
BandwidthResult measure_hbm_copy(size_t buffer_bytes = 1ull << 30, int reps = 20);
// Read-only stream over `buffer_bytes` (read bytes counted).
BandwidthResult measure_hbm_read(size_t buffer_bytes = 1ull << 30, int reps = 20);
// One launch of measure_hbm_read's read stream over `bytes` (a multiple of 16) of device
// memory at `src` on `stream`; `sink` (16 bytes of device memory) is written only when
// the data folds to a pattern a memset buffer cannot produce. For benchmarks that time
// the stream next to kernels at the same byte count.
void launch_read_stream(const void* src, size_t bytes, void* sink, cudaStream_t stream);
// The same stream with blocks_per_sm blocks of 512 threads per SM (launch_read_stream: 8,
// two waves of the 4 that fit; fewer give each thread more loads), and with spans: each
// warp reading one contiguous span as a GEMV warp reads its rows: a benchmark taking the
// best of a few holds a kernel against the fastest stream of its size.
void launch_read_stream(const void* src, size_t bytes, void* sink, cudaStream_t stream, int blocks_per_sm,
                        bool spans = false);
// Pinned host -> device cudaMemcpyAsync of `bytes`.
BandwidthResult measure_h2d_pinned(size_t bytes = 256ull << 20, int reps = 5);

}  // namespace moebench::cuda
