// synth_checkpoint.h: writes a synthetic Mixtral checkpoint in the HF layout
// (config.json + safetensors, sharded above a size, with model.safetensors.index.json),
// deterministic per seed; values are those of synth_fill (engine/weight_source.h).
#pragma once
#include <cstdint>
#include <string>

#include "engine/config.h"
#include "engine/dtype.h"

namespace moebench {

struct SynthCheckpointInfo {
  int shards = 0;
  uint64_t bytes = 0;
};

SynthCheckpointInfo write_synthetic_checkpoint(const ModelConfig& cfg, uint64_t seed, DType dtype,
                                               const std::string& out_dir, uint64_t shard_bytes = 4ULL << 30);

}  // namespace moebench
