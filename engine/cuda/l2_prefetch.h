// l2_prefetch.h: warm the GPU's L2 cache with weights ahead of their use. Decode spends a
// few microseconds per layer in latency-bound kernels (RoPE + KV store, attention, the
// split merge) while HBM idles; a prefetch launched on a second stream as they start
// brings the next GEMV's weights (o_proj, then the router's norm and gate) into L2 in
// that time, so the GEMV reads them from L2 instead of starting cold from HBM. Nothing is
// written: results never depend on whether, or how much of, the prefetch landed.
// Host C++ declarations.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

namespace moebench::cuda {

// Up to kL2PrefetchMaxRanges device ranges [p, p + bytes) in one launch; each p 16-byte
// aligned (the tail past a multiple of 16 bytes is left out; empty ranges are skipped).
constexpr int kL2PrefetchMaxRanges = 4;
struct L2Range {
  const void* p = nullptr;
  size_t bytes = 0;
};

// Asks L2 for the ranges, asynchronously on `stream` (a kernel that ends once its requests
// are issued); fails with one line for more than kL2PrefetchMaxRanges ranges or a
// misaligned start.
void l2_prefetch(const L2Range* ranges, int n, cudaStream_t stream);

// Bytes one prefetch request asks for (a chunk; a range's last may be shorter).
constexpr size_t kL2PrefetchChunkBytes = 8 * 1024;

// The experts' guess (ops.cuh ExpertPredict) on the side stream: w1 and w3 of the expert
// that `pred` (n_experts <= kExpertPredictMax scores, device) ranks first, `rows` rows of
// row_bytes each, seen as ranges of range_rows rows (a bf16 gate/up block's; 1 for the
// quantised gate/up's rows); L2 is asked for the first `bytes` (a multiple of 16) of every
// range, one bulk request each. tables: the layer's device table, n_experts w1 pointers
// then n_experts w3 pointers; or, with w3_offset > 0 (w1 and w3 one matrix), n_experts
// pointers whose w3 starts w3_offset bytes further (null entries are skipped). Nothing is
// written.
void l2_prefetch_predicted(const float* pred, int n_experts, const void* const* tables, size_t w3_offset, int rows,
                           int range_rows, size_t row_bytes, unsigned bytes, cudaStream_t stream);

}  // namespace moebench::cuda
