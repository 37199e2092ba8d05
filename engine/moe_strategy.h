// moe_strategy.h: the MoE execution strategy, three orthogonal axes that stage
// presets combine; each value is a registry entry with a
// one-line description. The CPU implementation is engine/moe_cpu.cpp; the CUDA one
// lives with the CUDA model.
//   dispatch: serial | grouped | fused     combine: loop | index_add | fused
//   buffers:  alloc | pooled
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/expert_provider.h"

namespace moebench {

struct MoeVariantInfo {
  std::string axis;  // dispatch | combine | buffers
  std::string name;
  std::string description;
};
const std::vector<MoeVariantInfo>& moe_variants();

struct MoeStrategy {
  std::string dispatch = "fused";
  std::string combine = "fused";
  std::string buffers = "pooled";
  std::string describe() const { return dispatch + "/" + combine + "/" + buffers; }
};
// Throws Error naming the axis and the allowed names.
void validate_strategy(const MoeStrategy& s);

// Workspace of the CPU MoE (pooled buffers persist across calls; alloc ones don't).
struct MoeCpuWorkspace {
  std::vector<float> y;        // (n * top_k, hidden) expert outputs
  std::vector<float> xin;      // (rows, hidden) gathered inputs
  std::vector<float> yout;     // (rows, hidden)
  std::vector<float> scratch;  // (rows, 2 * inter)
  std::vector<int32_t> order;  // (n * top_k) rows sorted by expert
  std::vector<int32_t> offsets;  // (n_experts + 1)
  int64_t allocations = 0;     // buffer (re)allocations made, for the pooled test
};

// out (n, hidden) = sum_j weights[t, j] * expert_{ids[t, j]}(x[t]).
// x (n, hidden); ids, weights (n, top_k); experts[e] = fp32 host weights of expert e
// (only entries used by ids need be set).
void moe_cpu(const MoeStrategy& s, const float* x, const int32_t* ids, const float* weights,
             const ExpertWeights* experts, float* out, int n, int hidden, int inter, int n_experts, int top_k,
             MoeCpuWorkspace& ws);

}  // namespace moebench
