// weight_source.cpp: see weight_source.h.
#include "engine/weight_source.h"

#include <filesystem>
#include <fstream>
#include <optional>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/error.h"
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

namespace {
// The synthetic values of a tensor as f32, rounded to the generator's dtype.
void synth_f32(const TensorSpec& s, uint64_t seed, DType dtype, float* dst) {
  if (dtype == DType::f32) return synth_fill(s, seed, DType::f32, dst, 0, s.numel());
  std::vector<uint16_t> tmp(static_cast<size_t>(s.numel()));
  synth_fill(s, seed, dtype, tmp.data(), 0, s.numel());
  to_f32(dtype, tmp.data(), dst, tmp.size());
}

// A config.json's quantization_config, when present, must be one moebench reads and
// agree with the experts' tensors (`experts`, learnt from them).
void check_quantization_config(const std::string& path, QuantFormat experts) {
  nlohmann::json j;
  try {
    std::ifstream f(path);
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path, e.what());
  }
  if (!j.is_object() || !j.contains("quantization_config") || j["quantization_config"].is_null()) return;
  const auto& q = j["quantization_config"];
  const std::string method = q.is_object() && q.contains("quant_method") && q["quant_method"].is_string()
                                 ? q["quant_method"].get<std::string>()
                                 : "";
  if (method == "fp8") {
    if (!q.contains("weight_block_size") || q["weight_block_size"] != nlohmann::json{kFp8Block, kFp8Block})
      fail("{}: quantization_config.weight_block_size is {}, expected [128, 128]", path,
           q.contains("weight_block_size") ? q["weight_block_size"].dump() : "missing");
    if (experts != QuantFormat::fp8 && experts != QuantFormat::bf16)
      fail("{}: quantization_config says fp8 but the expert tensors are {}", path, quant_format_name(experts));
  } else if (method == "moebench") {
    const std::string d = q.contains("expert_dtype") && q["expert_dtype"].is_string() ? q["expert_dtype"].get<std::string>() : "";
    if (d != quant_format_name(experts))
      fail("{}: quantization_config.expert_dtype is '{}' but the expert tensors are {}", path, d, quant_format_name(experts));
  } else {
    fail("{}: quantization_config.quant_method '{}' is not supported, expected fp8 (128x128 blocks) or moebench (int8, int4)",
         path, method);
  }
}
}  // namespace

bool parse_synthetic_model(const std::string& model, ModelConfig* out, QuantFormat* experts) {
  std::string m = model;
  if (m.rfind("synthetic:", 0) == 0) m = m.substr(10);
  std::vector<std::string> opts;  // name, then the ':'-separated options
  for (size_t b = 0;;) {
    const size_t c = m.find(':', b);
    opts.push_back(m.substr(b, c == std::string::npos ? std::string::npos : c - b));
    if (c == std::string::npos) break;
    b = c + 1;
  }
  const std::string name = opts[0];
  bool known = false;
  for (auto& p : preset_names()) known |= (p == name);
  if (!known) {
    if (model.rfind("synthetic:", 0) == 0) preset_config(name);  // throws, listing presets
    return false;
  }
  ModelConfig c = preset_config(name);
  QuantFormat fmt = QuantFormat::bf16;
  for (size_t i = 1; i < opts.size(); ++i) {
    const std::string& o = opts[i];
    if (o.rfind("layers=", 0) == 0) {
      int n = 0;
      try {
        size_t used = 0;
        n = std::stoi(o.substr(7), &used);
        if (used != o.size() - 7) n = -1;
      } catch (...) {
        n = -1;
      }
      if (n <= 0) fail("model '{}': layers '{}' must be a positive integer", model, o.substr(7));
      c.num_hidden_layers = n;
      c.name += ":layers=" + std::to_string(n);
    } else if (o.rfind("dtype=", 0) == 0) {
      fmt = parse_quant_format(o.substr(6), fmt::format("model '{}': dtype", model));
      if (fmt != QuantFormat::bf16) c.name += std::string(":dtype=") + quant_format_name(fmt);
    } else {
      fail("model '{}': option '{}' is not understood, expected layers=N or dtype=bf16|fp8|int8|int4", model, o);
    }
  }
  *out = c;
  if (experts) *experts = fmt;
  return true;
}

bool is_expert_tensor(const std::string& name) { return name.find(".block_sparse_moe.experts.") != std::string::npos; }

WeightSource WeightSource::synthetic(const ModelConfig& cfg, uint64_t seed, DType dtype, QuantFormat experts) {
  validate_config(cfg, "model " + cfg.name);
  WeightSource w;
  w.cfg_ = cfg;
  w.seed_ = seed;
  w.dtype_ = dtype;
  w.expert_fmt_ = experts;
  if (experts != QuantFormat::bf16)  // the shapes must hold the format
    for (auto& s : model_tensor_specs(cfg))
      if (is_expert_tensor(s.name)) quant_parts(experts, s.shape[0], s.shape[1]);
  return w;
}

WeightSource WeightSource::checkpoint(const std::string& dir) {
  WeightSource w;
  fs::path cfgp = fs::path(dir) / "config.json";
  if (!fs::is_directory(dir)) fail("{}: not a directory and not a preset (expected a checkpoint folder or one of the presets)", dir);
  if (!fs::exists(cfgp)) fail("{}: missing config.json (expected an HF checkpoint folder)", dir);
  if (!fs::is_regular_file(cfgp)) fail("{}: is not a regular file (expected an HF config.json)", cfgp.string());
  w.cfg_ = load_config(cfgp.string());
  if (const fs::path gen = fs::path(dir) / "generation_config.json"; fs::exists(gen)) apply_generation_config(w.cfg_, gen.string());
  w.cfg_.name = fs::path(dir).filename().string();
  w.ckpt_ = std::make_shared<Checkpoint>(dir);
  if (!family_name_rules(w.cfg_.model_type).empty())
    w.ckpt_->set_name_map([c = w.cfg_](const std::string& n) { return hf_tensor_name(c, n); });
  w.expert_fmt_ = w.check_tensors();
  check_quantization_config(cfgp.string(), w.expert_fmt_);
  return w;
}

WeightSource WeightSource::open(const std::string& model, uint64_t seed, DType synth_dtype) {
  ModelConfig c;
  QuantFormat experts = QuantFormat::bf16;
  if (parse_synthetic_model(model, &c, &experts)) return synthetic(c, seed, synth_dtype, experts);
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

void WeightSource::check_all() const { check_tensors(); }

QuantFormat WeightSource::check_tensors() const {
  if (!ckpt_) return expert_fmt_;
  std::optional<QuantFormat> experts;  // the first expert's, in file order
  for (auto& s : model_tensor_specs(cfg_)) {
    const QuantFormat f = stored_format(s);
    if (!is_expert_tensor(s.name)) continue;
    if (!experts) experts = f;
    if (f != *experts)
      fail("{}: tensor '{}' is stored as {} but the first expert as {} (expected one format for every expert)",
           ckpt_->dir(), s.name, quant_format_name(f), quant_format_name(*experts));
  }
  return experts.value_or(QuantFormat::bf16);
}

QuantFormat WeightSource::stored_format(const TensorSpec& s, std::vector<const TensorView*>* parts) const {
  if (!ckpt_) return is_expert_tensor(s.name) ? expert_fmt_ : QuantFormat::bf16;
  const std::string suffix = ".weight";
  if (s.name.size() < suffix.size() || s.name.compare(s.name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    // A bias (q/k/v of Qwen2-MoE) is never quantised.
    const TensorView& v = ckpt_->get(s.name, s.shape);
    if (!dtype_is_float(v.dtype))
      fail("{}: tensor '{}' has dtype {}, expected F32, F16 or BF16", *v.file, v.name, dtype_name(v.dtype));
    if (parts) *parts = {&v};
    return QuantFormat::bf16;
  }
  const std::string base = s.name.substr(0, s.name.size() - suffix.size());
  QuantFormat f = QuantFormat::bf16;
  bool zero_points = false;
  if (ckpt_->find(base + ".weight_packed")) {
    f = QuantFormat::int4;
    zero_points = ckpt_->find(base + ".weight_zero_point") != nullptr;
  } else if (const TensorView* v = ckpt_->find(s.name); v && !dtype_is_float(v->dtype)) {
    if (v->dtype == DType::f8_e4m3) f = QuantFormat::fp8;
    else if (v->dtype == DType::i8) f = QuantFormat::int8;
    else
      fail("{}: tensor '{}' has dtype {}, expected F32, F16, BF16, F8_E4M3 (with .weight_scale_inv) or I8 (with .weight_scale)",
           *v->file, s.name, dtype_name(v->dtype));
  }
  if (f != QuantFormat::bf16 && s.shape.size() != 2)
    fail("{}: tensor '{}' is stored quantised ({}) but is not a matrix (shape {})", ckpt_->dir(), s.name,
         quant_format_name(f), shape_str(s.shape));
  if (f == QuantFormat::bf16) {
    const TensorView& v = ckpt_->get(s.name, s.shape);
    if (parts) *parts = {&v};
    return f;
  }
  if (parts) parts->clear();
  for (auto& p : quant_parts(f, s.shape[0], s.shape[1], zero_points)) {
    const TensorView& v = ckpt_->get(base + p.suffix, p.shape);
    if (v.dtype != p.dtype && !(f == QuantFormat::int4 && p.dtype == DType::bf16 && v.dtype == DType::f16))
      fail("{}: tensor '{}' has dtype {}, expected {} ({} weights)", *v.file, v.name, dtype_name(v.dtype),
           dtype_name(p.dtype), quant_format_name(f));
    if (parts) parts->push_back(&v);
  }
  return f;
}

QuantMatrix WeightSource::read_quant(const TensorSpec& s, QuantFormat f) const {
  std::vector<const TensorView*> parts;
  const QuantFormat stored = stored_format(s, &parts);
  if (s.shape.size() != 2) fail("tensor '{}' (shape {}) is not a matrix and cannot be quantised", s.name, shape_str(s.shape));
  const int64_t rows = s.shape[0], cols = s.shape[1];
  if (stored == f && ckpt_ && (f != QuantFormat::bf16 || parts[0]->dtype == DType::bf16)) {  // the stored bytes
    QuantMatrix m;
    m.format = f;
    m.rows = rows;
    m.cols = cols;
    m.zero_points = parts.size() > 2;
    m.q.assign(parts[0]->data, parts[0]->data + parts[0]->nbytes);
    if (parts.size() > 1) {
      m.scale.assign(parts[1]->data, parts[1]->data + parts[1]->nbytes);
      if (parts[1]->dtype == DType::f16) {  // int4 scales given as f16: held as bf16
        auto* h = reinterpret_cast<uint16_t*>(m.scale.data());
        for (size_t i = 0; i < m.scale.size() / 2; ++i) h[i] = f32_to_bf16(f16_to_f32(h[i]));
      }
    }
    if (parts.size() > 2) m.zero.assign(parts[2]->data, parts[2]->data + parts[2]->nbytes);
    return m;
  }
  if (stored != QuantFormat::bf16 && f != QuantFormat::bf16 && stored != f)
    fail("{}: tensor '{}' is stored as {}; running it as {} would quantise it twice (use {} or bf16)", describe(), s.name,
         quant_format_name(stored), quant_format_name(f), quant_format_name(stored));
  std::vector<float> w(static_cast<size_t>(s.numel()));
  if (ckpt_) {  // the stored values (dequantised when stored quantised), then the format
    read_f32(s, w.data());
  } else {  // synthetic: the values in the generator's dtype (in the model's format), then f
    synth_f32(s, seed_, dtype_, w.data());
    if (stored != QuantFormat::bf16 && stored != f) dequantize(quantize(stored, w.data(), rows, cols), w.data());
  }
  return quantize(f, w.data(), rows, cols);
}

void WeightSource::read_f32_as(const TensorSpec& s, QuantFormat f, float* dst) const {
  if (f == QuantFormat::bf16) return read_f32(s, dst);
  dequantize(read_quant(s, f), dst);
}

QuantFormat WeightSource::attention_format() const {
  if (!ckpt_ || cfg_.num_hidden_layers == 0) return QuantFormat::bf16;
  for (auto& s : model_tensor_specs(cfg_))
    if (is_attention_projection(s.name)) return stored_format(s);
  return QuantFormat::bf16;
}

bool is_attention_projection(const std::string& name) {
  for (const char* p : {".self_attn.q_proj.weight", ".self_attn.k_proj.weight", ".self_attn.v_proj.weight",
                        ".self_attn.o_proj.weight"}) {
    const size_t n = std::char_traits<char>::length(p);
    if (name.size() >= n && name.compare(name.size() - n, n, p) == 0) return true;
  }
  return false;
}

QuantFormat resolve_weight_format(const std::string& weight_dtype, const WeightSource& w) {
  const QuantFormat k = parse_quant_format(weight_dtype, "setting weight_dtype");
  if (k == QuantFormat::int4)
    fail("setting weight_dtype=int4: expected bf16, fp8 or int8 (int4 is for the experts, expert_dtype)");
  const QuantFormat stored = w.attention_format();
  if (stored != QuantFormat::bf16 && k != QuantFormat::bf16 && k != stored)
    fail("setting weight_dtype={}: {} stores its attention projections as {}, quantising them again is not supported "
         "(use weight_dtype={} or bf16)",
         weight_dtype, w.describe(), quant_format_name(stored), quant_format_name(stored));
  return k;
}

QuantFormat resolve_expert_format(const std::string& expert_dtype, const WeightSource& w) {
  const QuantFormat k = parse_quant_format(expert_dtype, "setting expert_dtype");
  const QuantFormat stored = w.expert_format();
  if (stored != QuantFormat::bf16 && k != QuantFormat::bf16 && k != stored)
    fail("setting expert_dtype={}: {} stores its experts as {}, quantising them again is not supported (use expert_dtype={} or bf16)",
         expert_dtype, w.describe(), quant_format_name(stored), quant_format_name(stored));
  return k;
}

void WeightSource::read_f32(const TensorSpec& s, float* dst) const {
  if (const QuantFormat f = stored_format(s); f != QuantFormat::bf16) return dequantize(read_quant(s, f), dst);
  if (!ckpt_) return synth_f32(s, seed_, dtype_, dst);
  const TensorView& v = ckpt_->get(s.name, s.shape);
  to_f32(v.dtype, v.data, dst, static_cast<size_t>(v.numel()));
}

void WeightSource::read_bf16(const TensorSpec& s, uint16_t* dst) const {
  if (!ckpt_ && dtype_ == DType::bf16 && stored_format(s) == QuantFormat::bf16) {
    synth_fill(s, seed_, DType::bf16, dst, 0, s.numel());
    return;
  }
  std::vector<float> tmp(static_cast<size_t>(s.numel()));
  read_f32(s, tmp.data());
  from_f32(DType::bf16, tmp.data(), dst, tmp.size());
}

}  // namespace moebench
