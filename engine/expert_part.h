// expert_part.h: one expert's intermediate rows [r0, r1) as a smaller expert of
// r1 - r0 rows, in any format of engine/quant.h: the copies that gather it from an expert
// in its layout (engine/device_plan.h ExpertLayout) — those rows of w1 and w3, the
// matching block of columns of w2, with their scales and zero points — into a buffer of
// the whole expert's layout size, packed so that each matrix's parts are what
// quant_parts() lays out for the smaller shape. A hybrid split expert's link part is
// copied this way (2D copies: w2's block is strided); the host reads its own part in
// place (cpu::cpu_expert_rows). Plain C++: the CPU tests check the plan.
//
// Where the formats allow a cut: bf16 and int8 anywhere; int4 and fp8 only at multiples
// of 128 rows (their scale groups: int4 groups of 128 inputs of w2, fp8 128x128 blocks),
// or at the end of the expert.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/device_plan.h"

namespace moebench {

// One copy, in bytes: `height` runs of `width` bytes, the source runs `src_pitch`
// apart from src (an offset from the expert's start), packed at dst (an offset into the
// part's buffer). height 1: one contiguous run.
struct PartCopy {
  uint64_t src = 0, dst = 0, src_pitch = 0, width = 0, height = 1;
};

struct ExpertPartPlan {
  std::vector<PartCopy> copies;  // w1's parts, w3's, w2's, in ExpertLayout's order
  uint64_t dst[3][3] = {};       // [matrix][part] where the part lies in the buffer: L.offset (so L.total_bytes holds any part)
  uint64_t bytes = 0;            // the part's bytes: what the copies move
};

// The plan for rows [r0, r1) of an expert of `inter` intermediate rows and `hidden`
// inputs in layout L. Throws Error (one line) on an empty range, one outside [0, inter),
// or a cut the format cannot make (see above).
ExpertPartPlan expert_part_plan(const ExpertLayout& L, int64_t hidden, int64_t inter, int64_t r0, int64_t r1);

// Whether the format can cut an expert at every multiple of `unit_rows` (the split's parts).
bool expert_part_cuts_at(QuantFormat f, int64_t unit_rows);

}  // namespace moebench
