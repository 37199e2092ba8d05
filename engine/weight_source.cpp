// weight_source.cpp: see weight_source.h.
#include "engine/weight_source.h"

#include <filesystem>
#include <vector>

#include "engine/error.h"
#include "engine/hf_cache.h"
#include "engine/synth_rng.h"

namespace moebench {

namespace fs = std::filesystem;

void synth_fill(const TensorSpec& s, uint64_t seed, DType dtype, void* dst, int64_t begin, int64_t count) {
  const uint64_t key = synth::tensor_key(seed, synth::name_hash(s.name));
  if (dtype == DType::f32) {
    float* d = static_cast<float*>(dst);
#pragma omp parallel for if (count > (1 << 16))
    for (int64_t i = 0; i < count; ++i) d[i] = synth::value(key, begin + i, s.init_scale, s.init_offset);
  } else if (dtype == DType::bf16) {
    uint16_t* d = static_cast<uint16_t*>(dst);
#pragma omp parallel for if (count > (1 << 16))
    for (int64_t i = 0; i < count; ++i) d[i] = f32_to_bf16(synth::value(key, begin + i, s.init_scale, s.init_offset));
  } else {
    uint16_t* d = static_cast<uint16_t*>(dst);
#pragma omp parallel for if (count > (1 << 16))
    for (int64_t i = 0; i < count; ++i) d[i] = f32_to_f16(synth::value(key, begin + i, s.init_scale, s.init_offset));
  }
}

bool parse_synthetic_model(const std::string& model, ModelConfig* out) {
  std::string m = model;
  if (m.rfind("synthetic:", 0) == 0) m = m.substr(10);
  std::string name = m, rest;
  if (auto c = m.find(':'); c != std::string::npos) {
    name = m.substr(0, c);
    rest = m.substr(c + 1);
  }
  bool known = false;
  for (auto& p : preset_names()) known |= (p == name);
  if (!known) {
    if (model.rfind("synthetic:", 0) == 0) preset_config(name);  // throws, listing presets
    return false;
  }
  ModelConfig c = preset_config(name);
  if (!rest.empty()) {
    if (rest.rfind("layers=", 0) != 0) fail("model '{}': option '{}' is not understood, expected layers=N", model, rest);
    int n = 0;
    try {
      size_t used = 0;
      n = std::stoi(rest.substr(7), &used);
      if (used != rest.size() - 7) n = -1;
    } catch (...) {
      n = -1;
    }
    if (n <= 0) fail("model '{}': layers '{}' must be a positive integer", model, rest.substr(7));
    c.num_hidden_layers = n;
    c.name = name + ":layers=" + std::to_string(n);
  }
  *out = c;
  return true;
}

WeightSource WeightSource::synthetic(const ModelConfig& cfg, uint64_t seed, DType dtype) {
  validate_config(cfg, "model " + cfg.name);
  WeightSource w;
  w.cfg_ = cfg;
  w.seed_ = seed;
  w.dtype_ = dtype;
  return w;
}

WeightSource WeightSource::checkpoint(const std::string& dir) {
  WeightSource w;
  fs::path cfgp = fs::path(dir) / "config.json";
  if (!fs::is_directory(dir)) fail("{}: not a directory and not a preset (expected a checkpoint folder or one of the presets)", dir);
  if (!fs::exists(cfgp)) fail("{}: missing config.json (expected an HF checkpoint folder)", dir);
  if (!fs::is_regular_file(cfgp)) fail("{}: is not a regular file (expected an HF config.json)", cfgp.string());
  w.cfg_ = load_config(cfgp.string());
  w.cfg_.name = fs::path(dir).filename().string();
  w.ckpt_ = std::make_shared<Checkpoint>(dir);
  w.check_all();
  return w;
}

WeightSource WeightSource::open(const std::string& model, uint64_t seed, DType synth_dtype) {
  ModelConfig c;
  if (parse_synthetic_model(model, &c)) return synthetic(c, seed, synth_dtype);
  // ORG/NAME[@REV] that is no folder here: the Hugging Face cache's snapshot of it.
  if (!fs::is_directory(model) && looks_like_hf_repo_id(model)) return checkpoint(hf_cache_snapshot(model));
  return checkpoint(model);
}

std::string WeightSource::describe() const {
  if (ckpt_) return "checkpoint:" + ckpt_->dir();
  return fmt::format("synthetic:{}:seed={}:{}", cfg_.name, seed_, dtype_name(dtype_));
}

DType WeightSource::dtype_of(const TensorSpec& s) const {
  if (!ckpt_) return dtype_;
  return ckpt_->get(s.name, s.shape).dtype;
}

void WeightSource::check_all() const {
  if (!ckpt_) return;
  for (auto& s : model_tensor_specs(cfg_)) ckpt_->get(s.name, s.shape);
}

void WeightSource::read_f32(const TensorSpec& s, float* dst) const {
  if (!ckpt_) {
    if (dtype_ == DType::f32) {
      synth_fill(s, seed_, DType::f32, dst, 0, s.numel());
    } else {
      std::vector<uint16_t> tmp(static_cast<size_t>(s.numel()));
      synth_fill(s, seed_, dtype_, tmp.data(), 0, s.numel());
      to_f32(dtype_, tmp.data(), dst, tmp.size());
    }
    return;
  }
  const TensorView& v = ckpt_->get(s.name, s.shape);
  to_f32(v.dtype, v.data, dst, static_cast<size_t>(v.numel()));
}

void WeightSource::read_bf16(const TensorSpec& s, uint16_t* dst) const {
  if (!ckpt_ && dtype_ == DType::bf16) {
    synth_fill(s, seed_, DType::bf16, dst, 0, s.numel());
    return;
  }
  std::vector<float> tmp(static_cast<size_t>(s.numel()));
  read_f32(s, tmp.data());
  from_f32(DType::bf16, tmp.data(), dst, tmp.size());
}

}  // namespace moebench
