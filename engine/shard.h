// shard.h: one tensor-parallel rank's view of a model, as functions of (tensor, rank,
// world) on the host — which part of each HF tensor a rank holds, the config a rank's
// model runs with, and the slice itself. The CUDA model uploads exactly these slices
// (engine/cuda/weight_upload.h), so any later change of the upload layout applies to
// every shard alike. The split is engine/parallel_plan.h's: q/k/v rows by head, o_proj
// columns by the same heads, each expert's w1/w3 rows and w2 columns by an
// intermediate block; everything else is replicated.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/parallel_plan.h"
#include "engine/weights.h"
#include "model/config.h"
#include "model/settings.h"
#include "variants/placement.h"

namespace moebench {

// Which part of a row-major (rows, cols) tensor a rank holds.
struct TensorSlice {
  enum class Kind { full, rows, cols };
  Kind kind = Kind::full;
  IndexRange range;  // rows (Kind::rows) or columns (Kind::cols) of the full tensor
};

// The slice of tensor `name` (an HF name of a model of config `full`) on `rank` of
// `world` tensor-parallel ranks. Throws Error as plan_tensor_parallel does when the
// model does not split over `world` ranks.
TensorSlice tp_slice(const ModelConfig& full, const std::string& name, int rank, int world);
// The config rank `rank` runs with: its q and kv heads, its intermediate block (the
// largest when `world` does not divide it), head_dim kept; name gets "/tp{rank}of{world}".
// Its tensor specs are the shapes of the slices of the full tensors.
ModelConfig tp_rank_config(const ModelConfig& full, int rank, int world);
// The spec of the slice (name and init kept, shape cut).
TensorSpec slice_spec(const TensorSpec& full, const TensorSlice& s);
// The slice's elements, row-major, from the full tensor's (T = uint16_t bf16 bits, float).
template <class T>
std::vector<T> slice_tensor(const T* full, const TensorSpec& spec, const TensorSlice& s) {
  const int64_t rows = spec.shape.empty() ? 1 : spec.shape[0];
  const int64_t cols = spec.numel() / (rows ? rows : 1);
  switch (s.kind) {
    case TensorSlice::Kind::rows: return take_rows(full, static_cast<int>(cols), s.range);
    case TensorSlice::Kind::cols: return take_cols(full, static_cast<int>(rows), static_cast<int>(cols), s.range);
    case TensorSlice::Kind::full: break;
  }
  return std::vector<T>(full, full + spec.numel());
}

// The placement of settings.expert_parallel = n GPUs for a model (variants/placement.h,
// settings.ep_placement): round-robin, or balanced on the routing counts of
// kEpCalibrationTokens tokens of the run's routing source under routing_seed + 1 (another
// seed: balancing on the routing it is then measured on would be an oracle; a trace
// replays itself, its own calibration). balanced needs a routing source other than the
// model's gate, whose choices are not known before the model runs: Error otherwise.
constexpr int kEpCalibrationTokens = 4096;
ExpertPlacement ep_placement_for(const EngineSettings& s, const ModelConfig& c, int n);

// Checks the knobs tensor_parallel / expert_parallel against a model: one Error naming
// the knob, its value and the field that does not divide.
void check_parallel_knobs(const ModelConfig& c, int tensor_parallel, int expert_parallel);

}  // namespace moebench
