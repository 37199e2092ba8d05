// device_plan.h: how one expert is laid out in a slot and in the host store, and how a
// CUDA model's device memory is shared out between the dense weights, the KV cache, the
// workspaces and the experts. Plain C++ (no CUDA), so CPU tests can check the numbers.
//
// Expert layout: w1 | w3 | w2, each matrix its quant_parts() back to back (values,
// scales, zero points), every part starting at a 16-byte boundary (the GEMV kernels
// load 16 bytes at a time). For bf16 and the Mixtral shapes no padding is needed, so
// total_bytes == expert_bytes(config, format).
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"
#include "engine/quant.h"

namespace moebench {

struct ExpertLayout {
  QuantFormat format = QuantFormat::bf16;
  int n_parts = 1;              // per matrix: 1 (bf16), 2 (fp8, int8, symmetric int4), 3 (int4 with zero points)
  uint64_t offset[3][3] = {};   // [matrix w1, w3, w2][part] byte offset from the expert's start
  uint64_t bytes[3][3] = {};    // [matrix][part] bytes of the part (quant_parts)
  uint64_t total_bytes = 0;     // the expert's bytes, padding included
  // The offset of matrix m (its first part) from the expert's start.
  uint64_t matrix_offset(int m) const { return offset[m][0]; }
};
constexpr uint64_t kExpertPartAlign = 16;
ExpertLayout expert_layout(const ModelConfig& c, QuantFormat f, bool zero_points = false);
// L rearranged so that w3's part p directly follows w1's part p for every part (then
// w2's parts): w1 and w3 together read as one (2 x inter)-row matrix, one GEMV launch for
// the gate and up projections of decode. L itself when that cannot hold (bf16, the two
// differ in shape, a part is not a multiple of kExpertPartAlign, or fp8's 128-row scale
// blocks would straddle w1 and w3).
ExpertLayout gate_up_layout(const ExpertLayout& L, int inter);
// Whether w3's parts follow w1's directly in L (quantised formats).
bool gate_up_adjacent(const ExpertLayout& L);

// What the device must hold besides the experts, computed by the CUDA side (the
// workspace sizes come from its kernels).
struct DeviceFixedBytes {
  uint64_t dense_weights = 0;  // every non-expert tensor, as uploaded (bf16, 256-byte aligned)
  uint64_t kv_cache = 0;
  uint64_t workspace = 0;      // activations, attention split, cuBLAS workspace, MoE tables and scratch
};

struct DevicePlanInput {
  ModelConfig config;
  QuantFormat format = QuantFormat::bf16;
  bool resident = true;        // expert_tier=resident: every expert on the device
  int resident_experts = -1;   // resident: the experts on the device (-1: every one; expert parallel: the rank's)
  uint64_t budget_bytes = 0;   // the arena's capacity
  DeviceFixedBytes fixed;
  int cache_slots = 0;         // offloaded: 0 = as many as fit, else that many (checked)
  bool own_slots = true;       // offloaded: false when another provider (a test's) sizes its own slots: no slot checks
};

struct DevicePlan {
  uint64_t arena_bytes = 0;          // = budget
  uint64_t fixed_bytes = 0;          // dense weights + KV + workspace
  uint64_t expert_bytes = 0;         // one expert in its layout (what a load moves)
  uint64_t slot_bytes = 0;           // one slot: expert_bytes rounded to the arena alignment
  uint64_t resident_expert_bytes = 0;// resident: every expert, each its own 256-aligned block
  int n_slots = 0;                   // offloaded: slots the budget holds (capped at every expert)
  uint64_t slot_budget_bytes = 0;    // offloaded: what is left for the slots
  uint64_t min_budget_bytes = 0;     // the smallest budget that would run (resident: all; offloaded: top_k slots)
};

// Throws Error (one line: what is needed, what the budget is, what to change) when the
// model cannot run in the budget.
DevicePlan plan_device_memory(const DevicePlanInput& in);

// The slot count of an offloading provider: `slots` (0: as many slots of `stride` bytes
// as `slot_budget` holds, at most n_keys), or Error when fewer than top_k fit or the
// asked slots do not fit (`rest`: the budget's other bytes, for the minimum named).
int plan_expert_slots(uint64_t stride, int top_k, int n_keys, uint64_t slot_budget, uint64_t rest, int slots);

}  // namespace moebench
