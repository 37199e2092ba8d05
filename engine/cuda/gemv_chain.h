// gemv_chain.h: a chain of dependent one-row GEMVs run by ONE persistent launch, its weights
// streamed into shared memory by a copy warp that never waits for the chain (a measurement
// of what a persistent decode kernel would buy; docs/PERFORMANCE.md, "Session 21").
//
// Every decode step of this project is a chain of dependent launches (seven a layer). The
// measured floor of a dependent launch is about 2-2.5 us (a grid-wide handoff, the input
// back from L2, the first weight bytes from HBM). A persistent kernel can hide the last of
// these: the weights do not depend on the chain, so each SM's copy warp streams the bytes
// of its next steps into a ring of shared-memory slots while the SM's compute warps wait for
// the step's input. This prototype runs only GEMVs (no attention, norm or routing), so that
// the question "how close to the read stream does a chain of dependent GEMVs run in one
// launch, against the same code launched once a step" has a clean answer.
//
// Op i computes y_i = W_i x_i (W_i: rows x cols bf16 row-major, y_i fp32), x_i the first
// cols floats of op dep_i's output (rounded to bf16 as every GEMV input of the engine is) or
// of the chain's fp32 input where dep_i < 0. Every block takes a contiguous share of every
// op's rows (rows / grid, the first rows % grid blocks one more), so its weight bytes of an op
// are one contiguous range, copied in chunks of a ring slot's size. Compute warp w of W takes
// chunks w, w + W, ... of an op through its own shared-memory slots; a lane sums its 16-byte
// vectors of each 1024 inputs (one row: cols % 1024 == 0), the warp adds a row's sum to its
// own partial when the row or the chunk ends, and the partials of the W warps are added in
// warp order at the op's end: both modes and every repeat give the same bits. Measured in
// the kernel microbenchmarks (gemv_chain/...): the chain is not used by the model.
//
// Modes: `persistent` runs every op in one cooperative launch; a block waits for op dep_i by
// polling a counter that each block of dep_i increments once it has stored its rows (release
// / acquire at GPU scope). `per_op` launches the same kernel once an op (programmatic
// launch: the copy warp streams the op's weights before the wait for the launch before).
// Counters grow by one a block a persistent launch, and a launch's number (kept on the
// device beside them, advanced by the launch's last block to finish) tells it which totals
// to wait for: nothing is reset between launches, and a CUDA graph of it replays correctly.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace moebench::cuda {

struct GemvChainOp {
  const __nv_bfloat16* w = nullptr;  // rows x cols, 16-byte aligned
  float* y = nullptr;                // rows
  int rows = 0, cols = 0;            // cols % 1024 == 0
  int dep = -1;                      // the op whose y feeds x (its rows >= cols), -1: the chain's input
};

enum class GemvChainMode { persistent, per_op };

// Whether this device runs the chain: Hopper or later (bulk copies, programmatic launch),
// every op's cols a multiple of 1024 and at most kGemvChainMaxCols, dep < i with enough rows,
// a block's share of any op at most kGemvChainMaxRowsPerBlock rows, weights 16-byte aligned.
// On false, *why says what is not.
constexpr int kGemvChainMaxCols = 32768;
constexpr int kGemvChainMaxRowsPerBlock = 512;
// The kernel's compiled shapes: compute warps (one more copies) and bytes a ring slot. The
// default, 8 warps of 8 KiB slots, is what the measurements in the docs name unless they say.
struct GemvChainShape {
  int warps = 8;
  int chunk_kib = 8;  // 8 warps: 8 or 16; 4 warps: 16 or 32
};
bool gemv_chain_supported(const GemvChainOp* ops, int n_ops, std::string* why = nullptr, GemvChainShape shape = {});

// Device room the chain's counters need for n_ops ops (zero it once, before the first run).
inline size_t gemv_chain_counter_words(int n_ops) { return static_cast<size_t>(n_ops) + 2; }

// Runs ops[0 .. n_ops) with x0 (device, fp32) as the chain's input. `ops_dev`: device room
// for n_ops GemvChainOp, filled by gemv_chain_upload beforehand; `counters`: device room for
// gemv_chain_counter_words(n_ops) words, zeroed once before the first run, then only used by
// runs of this chain (persistent mode). Capturable in a CUDA graph. Fails (an exception
// naming what) where gemv_chain_supported refuses.
void gemv_chain_upload(const GemvChainOp* ops, int n_ops, GemvChainOp* ops_dev);
void gemv_chain_run(const GemvChainOp* ops, int n_ops, const float* x0, const GemvChainOp* ops_dev,
                    uint32_t* counters, GemvChainMode mode, cudaStream_t stream, GemvChainShape shape = {});

}  // namespace moebench::cuda
