// synth_checkpoint.h: writes a synthetic Mixtral checkpoint in the HF layout
// (config.json + safetensors, sharded above a size, with model.safetensors.index.json),
// deterministic per seed; values are those of synth_fill (engine/weight_source.h).
// With `experts` = fp8|int8|int4 the expert matrices are stored quantised in that
// format (engine/quant.h: tensors and quantization_config in config.json) — exactly
// what WeightSource::synthetic(cfg, seed, dtype, experts) holds.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"
#include "engine/dtype.h"
#include "engine/quant.h"

namespace moebench {

struct SynthCheckpointInfo {
  int shards = 0;
  uint64_t bytes = 0;
};

SynthCheckpointInfo write_synthetic_checkpoint(const ModelConfig& cfg, uint64_t seed, DType dtype,
                                               const std::string& out_dir, uint64_t shard_bytes = 4ULL << 30,
                                               QuantFormat experts = QuantFormat::bf16);
// The config.json "quantization_config" of a checkpoint whose experts are in `experts`
// (null for bf16): fp8 as transformers' FineGrainedFP8Config writes it, int8/int4 as
// quant_method "moebench" naming the format and its layout.
nlohmann::json quantization_config(QuantFormat experts);

}  // namespace moebench
