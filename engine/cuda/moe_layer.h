// moe_layer.h: the sparse-MoE block of one layer on CUDA, with the three knobs of
// EngineSettings (dispatch, combine; buffers is the Workspace's):
//   router on the device -> ids/weights (n, k); the ids go to the host only when the
//   provider needs them or the dispatch does (grouped: host grouping; serial: the mask's
//   count per expert; fused prefill: the expert offsets) -> provider->acquire() -> dispatch:
//     fused    decode (n <= 8): moe_decode_fused, both launches, no host round trip;
//              prefill: device sort by expert + one GEMM per active expert block;
//     grouped  ids to the host, grouped once there, one GEMM per active expert block;
//     serial   every expert in turn: mask-select its pairs (count to the host), gather, run;
//   -> combine: loop (one launch per (token, slot)), index_add (one launch), fused (inside
//      moe_decode_fused, else the single combine launch adds straight into the residual).
// Every variant computes out[t] = sum_j w[t,j] * expert_{ids[t,j]}(x_t) in slot order, as
// CpuModel::moe does, and adds it to the residual x. Host C++.
#pragma once
#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "engine/expert_provider.h"
#include "engine/cuda/workspace.h"

namespace moebench::profiler {
class CpuTrace;
}

namespace moebench::cuda {

class DeviceArena;

enum class Dispatch { serial, grouped, fused };
enum class Combine { loop, index_add, fused };
Dispatch parse_dispatch(const std::string& s);
Combine parse_combine(const std::string& s);

struct MoeDims {
  int hidden = 0, inter = 0, n_experts = 0, top_k = 0, n_layers = 0;
};

class MoeLayer {
 public:
  // pool_tokens: largest forward the pinned host scratch is sized for (it grows if needed).
  MoeLayer(const MoeDims& d, Dispatch dispatch, Combine combine, ExpertProvider& provider, DeviceArena& arena,
           cublasHandle_t blas, cudaStream_t stream, profiler::CpuTrace& trace, int pool_tokens);
  ~MoeLayer();
  MoeLayer(const MoeLayer&) = delete;
  MoeLayer& operator=(const MoeLayer&) = delete;

  // Router + experts + combine for m tokens of layer `layer`: reads b.h (m, hidden) bf16,
  // adds the MoE output to x (m, hidden) fp32. gate (n_experts, hidden) bf16.
  void run(int step, int layer, const __nv_bfloat16* gate, ForwardBuffers& b, float* x, int m);
  // Whether this forward would copy ids to the host (a sync): tests and CUDA graphs.
  bool syncs(int m) const;

 private:
  void ids_to_host(const ForwardBuffers& b, int pairs);
  const __nv_bfloat16* const* tables(int layer);  // device (3, n_experts) pointer table of `layer`
  void grouped_experts(int layer, ForwardBuffers& b, int m);
  void serial_experts(int layer, ForwardBuffers& b, int m);
  void combine(ForwardBuffers& b, float* x, int m, bool sorted);
  void ensure_host(int pairs);

  MoeDims d_;
  Dispatch dispatch_;
  Combine combine_;
  ExpertProvider& provider_;
  DeviceArena& arena_;
  cublasHandle_t blas_;
  cudaStream_t stream_;
  profiler::CpuTrace& trace_;
  std::vector<ExpertWeights> got_;  // (n_experts) this layer's acquired experts
  // Pinned host scratch.
  int host_pairs_ = 0;
  int32_t* ids_h_ = nullptr;      // (pairs)
  int32_t* sort_h_ = nullptr;     // (2, pairs) perm then inv, uploaded by grouped
  int32_t* offsets_h_ = nullptr;  // (n_experts + 1)
  const void** table_h_ = nullptr;  // (n_layers, 3, n_experts) staging of the device tables
  // Device pointer tables (n_layers, 3, n_experts) and their host mirror.
  const void** table_d_ = nullptr;
  std::vector<const void*> mirror_;
  std::vector<bool> table_valid_;
};

}  // namespace moebench::cuda
