// weight_source.h: where a model's tensors come from — a checkpoint on disk
// (memory-mapped safetensors) or the synthetic generator (no file; the same values
// `moebench make-model` writes). Backends read tensors through it by HF name.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "engine/config.h"
#include "engine/dtype.h"
#include "engine/safetensors.h"
#include "engine/weights.h"

namespace moebench {

class WeightSource {
 public:
  // "DIR" (checkpoint with config.json) or "synthetic:PRESET[:layers=N]" / a preset
  // name, the latter generated from `seed` in `dtype`.
  static WeightSource open(const std::string& model, uint64_t seed, DType synth_dtype = DType::bf16);
  static WeightSource synthetic(const ModelConfig& cfg, uint64_t seed, DType dtype = DType::bf16);
  static WeightSource checkpoint(const std::string& dir);

  const ModelConfig& config() const { return cfg_; }
  bool is_synthetic() const { return ckpt_ == nullptr; }
  uint64_t seed() const { return seed_; }
  DType synth_dtype() const { return dtype_; }
  const Checkpoint* ckpt() const { return ckpt_.get(); }
  std::string describe() const;  // "checkpoint:DIR" or "synthetic:NAME:seed=S:bf16"

  // The stored dtype of a tensor (checkpoint dtype, or the synthetic dtype).
  DType dtype_of(const TensorSpec& s) const;
  // Reads a tensor (shape checked against the spec) converted to f32 / bf16.
  void read_f32(const TensorSpec& s, float* dst) const;
  void read_bf16(const TensorSpec& s, uint16_t* dst) const;
  // Checks every tensor of the model is present with the right shape and dtype.
  void check_all() const;

 private:
  ModelConfig cfg_;
  std::shared_ptr<Checkpoint> ckpt_;
  uint64_t seed_ = 0;
  DType dtype_ = DType::bf16;
};

// Fills dst with the synthetic values of a tensor, rounded to `dtype` (stored as dtype).
void synth_fill(const TensorSpec& s, uint64_t seed, DType dtype, void* dst, int64_t begin, int64_t count);

// Parses "synthetic:PRESET[:layers=N]" or "PRESET[:layers=N]" into a config; returns false if
// `model` names no preset (then it is a checkpoint directory).
bool parse_synthetic_model(const std::string& model, ModelConfig* out);

}  // namespace moebench
