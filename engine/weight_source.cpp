// weight_source.cpp: see weight_source.h.
#include "engine/weight_source.h"

#include <algorithm>
#include <cstring>
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

// config.json's quantization_config (null when absent).
nlohmann::json quantization_config(const std::string& path) {
  nlohmann::json j;
  try {
    std::ifstream f(path);
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path, e.what());
  }
  if (!j.is_object() || !j.contains("quantization_config")) return nullptr;
  return j["quantization_config"];
}

std::string quant_method(const nlohmann::json& q) {
  return q.is_object() && q.contains("quant_method") && q["quant_method"].is_string() ? q["quant_method"].get<std::string>()
                                                                                     : "";
}

// A config.json's quantization_config, when present, must be one moebench reads and
// agree with the experts' tensors (`experts`, learnt from them).
void check_quantization_config(const std::string& path, QuantFormat experts) {
  const nlohmann::json q = quantization_config(path);
  if (q.is_null()) return;
  const std::string method = quant_method(q);
  if (method == "fp8") {  // without weight_block_size: AutoFP8's one scale a tensor
    if (q.contains("weight_block_size") && q["weight_block_size"] != nlohmann::json{kFp8Block, kFp8Block})
      fail("{}: quantization_config.weight_block_size is {}, expected [128, 128] (or none: one scale a tensor)", path,
           q["weight_block_size"].dump());
    if (experts != QuantFormat::fp8 && experts != QuantFormat::bf16)
      fail("{}: quantization_config says fp8 but the expert tensors are {}", path, quant_format_name(experts));
  } else if (method == "moebench") {
    const std::string d = q.contains("expert_dtype") && q["expert_dtype"].is_string() ? q["expert_dtype"].get<std::string>() : "";
    if (d != quant_format_name(experts))
      fail("{}: quantization_config.expert_dtype is '{}' but the expert tensors are {}", path, d, quant_format_name(experts));
  } else if (method == "compressed-tensors") {
    // read_compressed_config checked the scheme; the experts are its format or not quantised.
  } else if (method == "gptq" || method == "awq") {
    if (experts != QuantFormat::int4 && experts != QuantFormat::bf16)
      fail("{}: quantization_config says {} but the expert tensors are {}", path, method, quant_format_name(experts));
  } else {
    fail("{}: quantization_config.quant_method '{}' is not supported, expected fp8, gptq or awq (4 bits), "
         "compressed-tensors or moebench (int8, int4)",
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

namespace {
// A checkpoint folder's config as the load takes it: the folder and its config.json
// checked, config.json read, generation_config.json applied, named after the folder.
ModelConfig checkpoint_config(const std::string& dir) {
  const fs::path cfgp = fs::path(dir) / "config.json";
  check_checkpoint_folder(dir);
  if (!fs::is_regular_file(cfgp)) fail("{}: is not a regular file (expected an HF config.json)", cfgp.string());
  ModelConfig c = load_config(cfgp.string());
  if (const fs::path gen = fs::path(dir) / "generation_config.json"; fs::exists(gen)) apply_generation_config(c, gen.string());
  c.name = fs::path(dir).filename().string();
  return c;
}
}  // namespace

WeightSource WeightSource::checkpoint(const std::string& dir) {
  WeightSource w;
  const fs::path cfgp = fs::path(dir) / "config.json";
  w.cfg_ = checkpoint_config(dir);
  w.ckpt_ = std::make_shared<Checkpoint>(dir);
  if (!family_name_rules(w.cfg_.model_type).empty())
    w.ckpt_->set_name_map([c = w.cfg_](const std::string& n) { return hf_tensor_name(c, n); });
  w.packed4_ = read_packed4_config(cfgp.string());
  w.compressed_ = read_compressed_config(cfgp.string());
  w.expert_fmt_ = w.check_tensors();
  check_quantization_config(cfgp.string(), w.expert_fmt_);
  return w;
}

ModelConfig read_model_config(const std::string& model) {
  ModelConfig c;
  if (parse_synthetic_model(model, &c)) return c;
  return checkpoint_config(checkpoint_folder(model));
}

WeightSource WeightSource::open(const std::string& model, uint64_t seed, DType synth_dtype) {
  ModelConfig c;
  QuantFormat experts = QuantFormat::bf16;
  if (parse_synthetic_model(model, &c, &experts)) return synthetic(c, seed, synth_dtype, experts);
  return checkpoint(checkpoint_folder(model));  // a folder, or ORG/NAME[@REV]'s snapshot in the Hugging Face cache
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

std::string WeightSource::stored_layout() const {
  if (packed4_) return packed4_->name();
  if (compressed_) return compressed_->name;
  return "";
}

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
  if (const auto pb = packed4_base(s)) {
    packed4_views(s, *pb);  // shapes and dtypes checked
    if (parts)
      fail("{}: tensor '{}' is stored in {}'s layout (qweight, qzeros, scales), which is converted when read: it has "
           "no stored bytes in moebench's layout to copy as they are (the disk tier; use expert_tier=pinned or resident)",
           ckpt_->dir(), s.name, packed4_->name());
    return QuantFormat::int4;
  }
  if (const auto cb = compressed_base(s)) {
    compressed_views(s, *cb);  // shapes and dtypes checked
    if (parts)
      fail("{}: tensor '{}' is stored in {}'s layout, which is converted when read: it has no stored bytes in "
           "moebench's layout to copy as they are (the disk tier; use expert_tier=pinned or resident)",
           ckpt_->dir(), s.name, compressed_->name);
    return compressed_->format();
  }
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
    const std::vector<DType> also = dtypes_converted_when_read(f, p.dtype);
    if (v.dtype != p.dtype && std::find(also.begin(), also.end(), v.dtype) == also.end()) {
      std::string expected = dtype_name(p.dtype);  // "F32", "F32 or F16", "F32, BF16 or F16"
      for (size_t i = 0; i < also.size(); ++i)
        expected += std::string(i + 1 == also.size() ? " or " : ", ") + dtype_name(also[i]);
      fail("{}: tensor '{}' has dtype {}, expected {} ({} weights)", *v.file, v.name, dtype_name(v.dtype), expected,
           quant_format_name(f));
    }
    if (parts) parts->push_back(&v);
  }
  return f;
}

QuantMatrix WeightSource::read_quant(const TensorSpec& s, QuantFormat f) const {
  if (const auto pb = packed4_base(s)) {  // GPTQ or AWQ: int4 as stored, bf16 its values, nothing else
    if (f == QuantFormat::int4) return packed4_int4(s, *pb);
    if (f != QuantFormat::bf16)
      fail("{}: tensor '{}' is stored as int4 ({}); running it as {} would quantise it twice (use int4 or bf16)",
           describe(), s.name, packed4_->name(), quant_format_name(f));
    std::vector<float> w(static_cast<size_t>(s.numel()));
    packed4_dequantize(s, *pb, w.data());
    return quantize(f, w.data(), s.shape[0], s.shape[1]);
  }
  if (const auto cb = compressed_base(s)) {  // compressed-tensors or AutoFP8: its format exactly, bf16 its values
    if (f == compressed_->format()) return compressed_quant(s, *cb);
    if (f != QuantFormat::bf16)
      fail("{}: tensor '{}' is stored as {} ({}); running it as {} would quantise it twice (use {} or bf16)", describe(),
           s.name, quant_format_name(compressed_->format()), compressed_->name, quant_format_name(f),
           quant_format_name(compressed_->format()));
    std::vector<float> w(static_cast<size_t>(s.numel()));
    compressed_dequantize(s, *cb, w.data());
    return quantize(f, w.data(), s.shape[0], s.shape[1]);
  }
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
      const TensorView& sv = *parts[1];
      const DType want = quant_parts(f, rows, cols)[1].dtype;
      if (sv.dtype == want) {
        m.scale.assign(sv.data, sv.data + sv.nbytes);
      } else {  // stored in another dtype (dtypes_converted_when_read): fp8's held as f32 exactly, int4's as bf16
        const size_t n = static_cast<size_t>(sv.numel());
        std::vector<float> vals(n);
        to_f32(sv.dtype, sv.data, vals.data(), n);
        m.scale.resize(n * dtype_size(want));
        if (want == DType::f32) std::memcpy(m.scale.data(), vals.data(), n * 4);
        else
          for (size_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(m.scale.data())[i] = f32_to_bf16(vals[i]);
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

bool WeightSource::expert_zero_points() const {
  if (!ckpt_ || expert_fmt_ != QuantFormat::int4) return false;
  const TensorSpec s = tensor_spec(cfg_, names::expert(0, 0, "w1"));
  if (packed4_base(s)) return !packed4_->sym;
  if (compressed_base(s)) return !compressed_->sym;
  std::vector<const TensorView*> parts;
  stored_format(s, &parts);
  return parts.size() > 2;
}

std::optional<WeightSource::Packed4> WeightSource::read_packed4_config(const std::string& path) {
  const nlohmann::json q = quantization_config(path);
  const std::string method = quant_method(q);
  if (method != "gptq" && method != "awq") return std::nullopt;
  auto int_field = [&](const char* key, int64_t dflt) {
    if (!q.contains(key)) return dflt;
    if (!q[key].is_number_integer())
      fail("{}: quantization_config.{} is {}, expected an integer", path, key, q[key].dump());
    return q[key].get<int64_t>();
  };
  auto bool_field = [&](const char* key, bool dflt) {
    if (!q.contains(key)) return dflt;
    if (!q[key].is_boolean()) fail("{}: quantization_config.{} is {}, expected true or false", path, key, q[key].dump());
    return q[key].get<bool>();
  };
  auto string_field = [&](const char* key, const char* dflt) {
    return q.contains(key) && q[key].is_string() ? q[key].get<std::string>() : std::string(dflt);
  };
  Packed4 p;
  p.awq = method == "awq";
  if (const int64_t bits = int_field("bits", -1); bits != 4)
    fail("{}: quantization_config.bits is {}, expected 4 (moebench reads 4-bit {} checkpoints)", path,
         q.contains("bits") ? q["bits"].dump() : "missing", p.name());
  const int64_t group = int_field("group_size", 128);
  if (group != -1 && group <= 0)
    fail("{}: quantization_config.group_size is {}, expected a positive number of inputs or -1 (one group a row)", path,
         group);
  p.group = group == -1 ? 0 : group;
  if (p.awq) {
    // AutoAWQ's GEMM layout (transformers' AwqConfig version "gemm"); the GEMV, Marlin and
    // exllama layouts store other orders.
    if (const std::string v = string_field("version", "gemm"); v != "gemm" && v != "GEMM")
      fail("{}: quantization_config.version is {}, expected \"gemm\" (the layout moebench reads)", path, q["version"].dump());
    if (!bool_field("zero_point", true))
      fail("{}: quantization_config.zero_point is false, expected true (moebench reads AWQ with zero points)", path);
    p.sym = false;
    p.v1 = false;
    return p;
  }
  p.sym = bool_field("sym", true);
  const std::string format = string_field("checkpoint_format", "gptq");
  if (format != "gptq" && format != "gptq_v2")
    fail("{}: quantization_config.checkpoint_format is {}, expected \"gptq\" or \"gptq_v2\"", path,
         q["checkpoint_format"].dump());
  p.v1 = format == "gptq";
  return p;
}

std::optional<WeightSource::Compressed> WeightSource::read_compressed_config(const std::string& path) {
  const nlohmann::json q = quantization_config(path);
  const std::string method = quant_method(q);
  Compressed c;
  if (method == "fp8" && !q.contains("weight_block_size")) {  // AutoFP8: e4m3 with one f32 scale a tensor
    c.is_float = true;
    c.name = "AutoFP8";
    return c;
  }
  if (method != "compressed-tensors") return std::nullopt;
  const std::string where = path + ": quantization_config";
  if (q.contains("sparsity_config") && !q["sparsity_config"].is_null() && !q["sparsity_config"].empty())
    fail("{}.sparsity_config is {}, expected null (moebench reads dense compressed-tensors checkpoints)", where,
         q["sparsity_config"].dump());
  const std::string global = q.contains("format") && q["format"].is_string() ? q["format"].get<std::string>() : "";
  if (!q.contains("config_groups") || !q["config_groups"].is_object() || q["config_groups"].empty())
    fail("{}.config_groups is {}, expected an object of quantisation groups", where,
         q.contains("config_groups") ? q["config_groups"].dump() : "missing");
  std::optional<nlohmann::json> seen;  // the weights arguments and format every group must share
  std::string seen_group;
  for (auto& [gname, g] : q["config_groups"].items()) {
    const std::string gw = where + ".config_groups." + gname;
    if (!g.is_object()) fail("{} is {}, expected an object", gw, g.dump());
    if (!g.contains("weights") || g["weights"].is_null()) continue;  // activations only
    const nlohmann::json& w = g["weights"];
    if (!w.is_object()) fail("{}.weights is {}, expected an object", gw, w.dump());
    nlohmann::json key = w;
    for (const char* k : {"observer", "observer_kwargs"}) key.erase(k);  // how the scales were found
    key["format"] = g.contains("format") && g["format"].is_string() ? g["format"].get<std::string>() : global;
    if (seen && *seen != key)
      fail("{}.weights differ from config_groups.{}'s ({} against {}): moebench reads checkpoints whose quantised "
           "weights share one scheme",
           gw, seen_group, key.dump(), seen->dump());
    seen = key;
    seen_group = gname;
  }
  if (!seen) fail("{}.config_groups quantise no weights (every group's 'weights' is null)", where);
  const nlohmann::json& w = *seen;
  const std::string gw = where + ".config_groups." + seen_group + ".weights";
  const std::string format = w["format"].get<std::string>();
  if (format != "pack-quantized" && format != "float-quantized" && format != "int-quantized" && format != "naive-quantized")
    fail("{}.format is '{}', expected pack-quantized, float-quantized, int-quantized or naive-quantized (the dense "
         "formats moebench reads)",
         where, format);
  c.name = "compressed-tensors " + format;
  c.packed = format == "pack-quantized";
  if (!w.contains("num_bits") || !w["num_bits"].is_number_integer())
    fail("{}.num_bits is {}, expected 4 or 8", gw, w.contains("num_bits") ? w["num_bits"].dump() : "missing");
  c.bits = w["num_bits"].get<int>();
  const std::string type = w.contains("type") && w["type"].is_string() ? w["type"].get<std::string>() : "int";
  if (type != "int" && type != "float") fail("{}.type is {}, expected \"int\" or \"float\"", gw, w["type"].dump());
  c.is_float = type == "float";
  if (c.is_float ? c.bits != 8 : (c.bits != 4 && c.bits != 8))
    fail("{}.num_bits is {} with type {}, expected 8 (float: fp8 e4m3) or 4 or 8 (int)", gw, c.bits, type);
  if (c.is_float && c.packed) fail("{}: format pack-quantized with type float, expected int weights", where);
  if (c.bits == 4 && !c.packed) fail("{}: 4-bit weights in format {}, expected pack-quantized", where, format);
  if (w.contains("symmetric") && !w["symmetric"].is_boolean())
    fail("{}.symmetric is {}, expected true or false", gw, w["symmetric"].dump());
  c.sym = w.value("symmetric", true);
  if (c.is_float && !c.sym) fail("{}.symmetric is false with float weights, expected true", gw);
  if (w.contains("dynamic") && w["dynamic"] != false)
    fail("{}.dynamic is {}, expected false (weights quantised once, stored with their scales)", gw, w["dynamic"].dump());
  const std::string strategy = w.contains("strategy") && w["strategy"].is_string() ? w["strategy"].get<std::string>() : "";
  if (strategy == "tensor") {
    c.strategy = Compressed::Strategy::tensor;
  } else if (strategy == "channel") {
    c.strategy = Compressed::Strategy::channel;
  } else if (strategy == "group") {
    c.strategy = Compressed::Strategy::group;
    if (!w.contains("group_size") || !w["group_size"].is_number_integer() || w["group_size"].get<int64_t>() <= 0)
      fail("{}.group_size is {}, expected a positive number of inputs (strategy group)", gw,
           w.contains("group_size") ? w["group_size"].dump() : "missing");
    c.group = w["group_size"].get<int64_t>();
  } else if (strategy == "block") {
    c.strategy = Compressed::Strategy::block;
    const nlohmann::json& b = w.contains("block_structure") ? w["block_structure"] : nlohmann::json();
    if (b.is_array() && b.size() == 2 && b[0].is_number_integer() && b[1].is_number_integer() && b[0].get<int64_t>() > 0 &&
        b[1].get<int64_t>() > 0) {
      c.block_rows = b[0].get<int64_t>();
      c.block_cols = b[1].get<int64_t>();
    } else {
      fail("{}.block_structure is {}, expected [rows, columns] (strategy block)", gw, b.dump());
    }
  } else {
    fail("{}.strategy is {}, expected \"tensor\", \"channel\", \"group\" or \"block\"", gw,
         w.contains("strategy") ? w["strategy"].dump() : "missing");
  }
  return c;
}

std::optional<std::string> WeightSource::packed4_base(const TensorSpec& s) const {
  if (!ckpt_) return std::nullopt;
  const std::string suffix = ".weight";
  if (s.name.size() < suffix.size() || s.name.compare(s.name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  std::string base = s.name.substr(0, s.name.size() - suffix.size());
  if (!ckpt_->find(base + ".qweight")) return std::nullopt;
  if (!packed4_)
    fail("{}: tensor '{}.qweight' is in a GPTQ or AWQ layout but config.json has no quantization_config with "
         "quant_method \"gptq\" or \"awq\" (expected its bits, group_size and layout)",
         ckpt_->dir(), base);
  return base;
}

WeightSource::Packed4Views WeightSource::packed4_views(const TensorSpec& s, const std::string& base) const {
  const char* name = packed4_->name();
  if (s.shape.size() != 2)
    fail("{}: tensor '{}' is stored in {}'s layout but is not a matrix (shape {})", ckpt_->dir(), s.name, name,
         shape_str(s.shape));
  const int64_t rows = s.shape[0], cols = s.shape[1];
  if (rows % 8 != 0 || cols % 8 != 0)
    fail("{}: tensor '{}' has shape {}; {} packs 8 codes a word, expected multiples of 8", ckpt_->dir(), s.name,
         shape_str(s.shape), name);
  Packed4Views v;
  v.groups = packed4_->group > 0 ? (cols + packed4_->group - 1) / packed4_->group : 1;
  auto typed = [&](const TensorView& t, std::initializer_list<DType> ok, const char* want) -> const TensorView* {
    for (DType d : ok)
      if (t.dtype == d) return &t;
    fail("{}: tensor '{}' has dtype {}, expected {} ({})", *t.file, t.name, dtype_name(t.dtype), want, name);
  };
  const std::vector<int64_t> qshape = packed4_->awq ? std::vector<int64_t>{cols, rows / 8} : std::vector<int64_t>{cols / 8, rows};
  v.qweight = typed(ckpt_->get(base + ".qweight", qshape), {DType::i32}, "I32");
  v.qzeros = typed(ckpt_->get(base + ".qzeros", {v.groups, rows / 8}), {DType::i32}, "I32");
  v.scales = typed(ckpt_->get(base + ".scales", {v.groups, rows}), {DType::f16, DType::bf16, DType::f32}, "F16, BF16 or F32");
  if (!packed4_->awq && ckpt_->find(base + ".g_idx")) {
    v.g_idx = typed(ckpt_->get(base + ".g_idx", {cols}), {DType::i32}, "I32");
    for (int64_t c = 0; c < cols; ++c) {
      int32_t g;
      std::memcpy(&g, v.g_idx->data + 4 * c, 4);
      if (g < 0 || g >= v.groups)
        fail("{}: tensor '{}' holds {} at input {}, expected a group in [0, {})", *v.g_idx->file, v.g_idx->name, g, c,
             v.groups);
    }
  }
  return v;
}

namespace {
// AWQ packs outputs 8m .. 8m + 7 of a word in the nibble order 0 2 4 6 1 3 5 7: output
// 8m + t sits in nibble kAwqNibble[t].
constexpr int kAwqNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};

// The codes and zero points of a GPTQ or AWQ matrix (rows = out, cols = in).
struct Packed4Reader {
  const TensorView& qweight;
  const TensorView& qzeros;
  int64_t rows;
  bool awq;
  int zero_offset;
  uint32_t code(int64_t r, int64_t c) const {
    return awq ? (qweight.word(c * (rows / 8) + r / 8) >> (4 * kAwqNibble[r % 8])) & 15u
               : (qweight.word((c / 8) * rows + r) >> (4 * (c % 8))) & 15u;
  }
  int zero(int64_t r, int64_t g) const {
    const uint32_t w = qzeros.word(g * (rows / 8) + r / 8);
    return static_cast<int>((w >> (4 * (awq ? kAwqNibble[r % 8] : r % 8))) & 15u) + zero_offset;
  }
};
}  // namespace

void WeightSource::packed4_dequantize(const TensorSpec& s, const std::string& base, float* dst) const {
  const Packed4Views v = packed4_views(s, base);
  const int64_t rows = s.shape[0], cols = s.shape[1];
  const Packed4Reader rd{*v.qweight, *v.qzeros, rows, packed4_->awq, packed4_->v1 ? 1 : 0};
  std::vector<float> scale(static_cast<size_t>(v.groups * rows));
  to_f32(v.scales->dtype, v.scales->data, scale.data(), scale.size());
  std::vector<int32_t> group(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c)
    group[c] = v.g_idx ? static_cast<int32_t>(v.g_idx->word(c))
                       : static_cast<int32_t>(packed4_->group > 0 ? c / packed4_->group : 0);
#pragma omp parallel for if (rows * cols > (1 << 16))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = group[c];
      dst[r * cols + c] = static_cast<float>(static_cast<int>(rd.code(r, c)) - rd.zero(r, g)) * scale[g * rows + r];
    }
}

QuantMatrix WeightSource::packed4_int4(const TensorSpec& s, const std::string& base) const {
  const Packed4Views v = packed4_views(s, base);
  const int64_t rows = s.shape[0], cols = s.shape[1];
  if (packed4_->group != kInt4Group)
    fail("{}: tensor '{}' is {} int4 with group_size {}; moebench's int4 holds one scale per {} inputs: run it with "
         "expert_dtype=bf16 (dequantised) or use a checkpoint with group_size {}",
         ckpt_->dir(), s.name, packed4_->name(), packed4_->group > 0 ? std::to_string(packed4_->group) : std::string("-1"),
         kInt4Group, kInt4Group);
  if (v.g_idx)
    for (int64_t c = 0; c < cols; ++c)
      if (static_cast<int64_t>(v.g_idx->word(c)) != c / kInt4Group)
        fail("{}: tensor '{}.g_idx' puts input {} in group {} (act-order, desc_act); moebench's int4 groups are "
             "consecutive inputs: run it with expert_dtype=bf16 (dequantised)",
             ckpt_->dir(), base, c, v.g_idx->word(c));
  const Packed4Reader rd{*v.qweight, *v.qzeros, rows, packed4_->awq, packed4_->v1 ? 1 : 0};
  QuantMatrix m;
  m.format = QuantFormat::int4;
  m.rows = rows;
  m.cols = cols;
  m.zero_points = !packed4_->sym;
  const int64_t words = cols / 8;
  m.q.resize(static_cast<size_t>(rows * words * 4));
  if (!packed4_->awq) {
    // GPTQ's (in/8, out) words are moebench's (out, in/8) words: the same nibble order. Blocks
    // of 64 rows, so that each word row of the source is read 256 bytes at a time.
#pragma omp parallel for if (rows * words > (1 << 16))
    for (int64_t r0 = 0; r0 < rows; r0 += 64)
      for (int64_t k = 0; k < words; ++k)
        for (int64_t r = r0; r < std::min(rows, r0 + 64); ++r) {
          const uint32_t w = v.qweight->word(k * rows + r);
          std::memcpy(m.q.data() + 4 * (r * words + k), &w, 4);
        }
  } else {  // AWQ packs along the outputs: each code moves to its input's nibble
#pragma omp parallel for if (rows * words > (1 << 16))
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < words; ++k) {
        uint32_t w = 0;
        for (int j = 0; j < 8; ++j) w |= rd.code(r, 8 * k + j) << (4 * j);
        std::memcpy(m.q.data() + 4 * (r * words + k), &w, 4);
      }
  }
  std::vector<float> scale(static_cast<size_t>(v.groups * rows));
  to_f32(v.scales->dtype, v.scales->data, scale.data(), scale.size());
  m.scale.resize(static_cast<size_t>(rows * v.groups * 2));
  auto* sb = reinterpret_cast<uint16_t*>(m.scale.data());
  if (m.zero_points) m.zero.resize(static_cast<size_t>(rows * v.groups));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < v.groups; ++g) {
      sb[r * v.groups + g] = f32_to_bf16(scale[g * rows + r]);  // moebench's int4 scales are bf16
      const int z = rd.zero(r, g);
      if (m.zero_points) {
        m.zero[r * v.groups + g] = static_cast<uint8_t>(z);
      } else if (z != 8) {
        fail("{}: tensor '{}.qzeros' holds zero point {} for output {}, group {}, but quantization_config says sym "
             "(expected 8 everywhere)",
             ckpt_->dir(), base, z, r, g);
      }
    }
  return m;
}

void WeightSource::read_f32(const TensorSpec& s, float* dst) const {
  if (const auto pb = packed4_base(s)) return packed4_dequantize(s, *pb, dst);
  if (const auto cb = compressed_base(s)) return compressed_dequantize(s, *cb, dst);
  if (const QuantFormat f = stored_format(s); f != QuantFormat::bf16) return dequantize(read_quant(s, f), dst);
  if (!ckpt_) return synth_f32(s, seed_, dtype_, dst);
  const TensorView& v = ckpt_->get(s.name, s.shape);
  to_f32(v.dtype, v.data, dst, static_cast<size_t>(v.numel()));
}

const TensorView* WeightSource::stored_bf16(const TensorSpec& s) const {
  const TensorView* v = ckpt_ ? ckpt_->find(s.name) : nullptr;
  return v && v->dtype == DType::bf16 && v->shape == s.shape ? v : nullptr;
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
