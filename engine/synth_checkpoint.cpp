// synth_checkpoint.cpp: see synth_checkpoint.h.
#include "engine/synth_checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/log.h"
#include "engine/safetensors.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "common/atomic_file.h"

namespace moebench {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSeedKey = "moebench_seed";  // in the metadata of every file written here

// True when a safetensors file's header carries the metadata this writer puts in.
bool written_here(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  uint64_t hlen = 0;
  if (!f.read(reinterpret_cast<char*>(&hlen), 8) || hlen > (100u << 20)) return false;
  std::string header(hlen, '\0');
  return f.read(header.data(), static_cast<std::streamsize>(hlen)) && header.find(kSeedKey) != std::string::npos;
}

// Takes out the checkpoint a folder held before it is rewritten: config.json first
// (without it the folder is no checkpoint, so an interrupted rewrite fails to load
// instead of mixing old and new weights), then the index and every *.safetensors,
// so no old shard or index outlives the new checkpoint. Other files stay. A folder
// with weights this writer did not make (a real checkpoint) is refused, untouched.
void remove_old_checkpoint(const std::string& dir) {
  std::vector<fs::path> old;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() == ".safetensors") {
      if (!e.is_regular_file() || !written_here(e.path()))
        fail("{}: holds {}, which moebench did not write: choose another folder (or remove it)", dir, name);
      old.push_back(e.path());
    } else if (name == "model.safetensors.index.json") {
      old.push_back(e.path());
    }
  }
  if (old.empty()) return;
  auto remove = [&dir](const fs::path& p) {
    std::error_code ec;
    if (fs::remove(p, ec); ec) fail("{}: cannot remove the old {} ({})", dir, p.filename().string(), ec.message());
  };
  remove(fs::path(dir) / "config.json");
  for (const fs::path& p : old) remove(p);
}

}  // namespace

nlohmann::json quantization_config(QuantFormat experts) {
  switch (experts) {
    case QuantFormat::bf16: return nullptr;
    case QuantFormat::fp8:
      // Only the experts are converted: transformers skips modules whose name contains
      // one of modules_to_not_convert.
      return {{"quant_method", "fp8"},
              {"activation_scheme", "dynamic"},
              {"fmt", "e4m3"},
              {"weight_block_size", {kFp8Block, kFp8Block}},
              {"modules_to_not_convert", {"lm_head", "self_attn", "block_sparse_moe.gate"}}};
    case QuantFormat::int8:
      return {{"quant_method", "moebench"},
              {"expert_dtype", "int8"},
              {"modules", "block_sparse_moe.experts"},
              {"layout", "weight I8 (out, in); weight_scale F32 (out, 1), symmetric per output channel: W = q * scale"}};
    case QuantFormat::int4:
      return {{"quant_method", "moebench"},
              {"expert_dtype", "int4"},
              {"modules", "block_sparse_moe.experts"},
              {"group_size", kInt4Group},
              {"symmetric", true},
              {"layout", "weight_packed I32 (out, in/8), 8 nibbles along the input dimension, element 8k+j in bits 4j; "
                         "weight_scale BF16 (out, in/128); W = (u - 8) * scale, or (u - weight_zero_point) * scale"}};
  }
  return nullptr;
}

SynthCheckpointInfo write_synthetic_checkpoint(const ModelConfig& cfg, uint64_t seed, DType dtype,
                                               const std::string& out_dir, uint64_t shard_bytes, QuantFormat experts) {
  validate_config(cfg, (fs::path(out_dir) / "config.json").string());
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) fail("{}: cannot create directory ({})", out_dir, ec.message());
  remove_old_checkpoint(out_dir);
  const auto specs = model_tensor_specs(cfg);
  // The tensors to write: one per spec, or the parts of a quantised expert matrix (the
  // matrix is quantised once, by its first part, and held until its last is written).
  auto src = std::make_shared<WeightSource>(WeightSource::synthetic(cfg, seed, dtype, experts));
  std::vector<TensorToWrite> all;
  std::vector<char> opens_matrix;  // 0 for the scales and zero points after a matrix's values
  for (auto& sp : specs) {
    const TensorSpec* s = &sp;
    if (experts == QuantFormat::bf16 || !is_expert_tensor(s->name)) {
      all.push_back({hf_tensor_name(cfg, s->name), dtype, s->shape, [s, seed, dtype](uint8_t* dst, size_t) {
                       synth_fill(*s, seed, dtype, dst, 0, s->numel());
                     }});
      opens_matrix.push_back(1);
      continue;
    }
    const std::string base = s->name.substr(0, s->name.size() - std::string(".weight").size());
    auto held = std::make_shared<QuantMatrix>();
    const auto parts = quant_parts(experts, s->shape[0], s->shape[1]);
    for (size_t i = 0; i < parts.size(); ++i) {
      opens_matrix.push_back(i == 0);
      all.push_back({hf_tensor_name(cfg, base + parts[i].suffix), parts[i].dtype, parts[i].shape,
                     [s, src, held, i, experts, n = parts.size()](uint8_t* dst, size_t nbytes) {
                       if (i == 0) *held = src->read_quant(*s, experts);
                       const std::vector<uint8_t>& b = i == 0 ? held->q : i == 1 ? held->scale : held->zero;
                       if (b.size() != nbytes) fail("{}: part {} has {} bytes, expected {}", s->name, i, b.size(), nbytes);
                       std::memcpy(dst, b.data(), nbytes);
                       if (i + 1 == n) *held = QuantMatrix{};
                     }});
    }
  }
  // Split tensors into shards of at most shard_bytes (a tensor never straddles; the parts
  // of one matrix stay together).
  auto bytes_of = [](const TensorToWrite& t) {
    uint64_t b = dtype_size(t.dtype);
    for (auto d : t.shape) b *= static_cast<uint64_t>(d);
    return b;
  };
  std::vector<std::vector<const TensorToWrite*>> shards(1);
  uint64_t cur = 0, total = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const uint64_t b = bytes_of(all[i]);
    if (cur > 0 && cur + b > shard_bytes && opens_matrix[i]) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(&all[i]);
    cur += b;
    total += b;
  }
  const int n = static_cast<int>(shards.size());
  nlohmann::json weight_map = nlohmann::json::object();
  std::map<std::string, std::string> meta = {{"format", "pt"}, {kSeedKey, std::to_string(seed)}};
  for (int i = 0; i < n; ++i) {
    std::string fname = n == 1 ? "model.safetensors" : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
    std::vector<TensorToWrite> tw;
    for (auto* t : shards[i]) {
      tw.push_back(*t);
      weight_map[t->name] = fname;
    }
    log::info("writing {} ({}/{})", fname, i + 1, n);
    write_safetensors((fs::path(out_dir) / fname).string(), tw, meta);
  }
  if (n > 1) {
    nlohmann::json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_file_atomic((fs::path(out_dir) / "model.safetensors.index.json").string(), idx.dump(2));
  }
  auto cj = config_to_json(cfg);  // last: the folder is a checkpoint once its config is there
  cj["torch_dtype"] = dtype == DType::f32 ? "float32" : dtype == DType::f16 ? "float16" : "bfloat16";
  if (experts != QuantFormat::bf16) {
    // The module names in the family's layout ("block_sparse_moe.experts" -> "mlp.experts").
    std::string q = quantization_config(experts).dump();
    for (const NameRule& r : family_name_rules(cfg.model_type)) {
      const std::string from = std::string(r.internal).substr(1, std::strlen(r.internal) - 2) + "\"";
      const std::string to = std::string(r.hf).substr(1, std::strlen(r.hf) - 2) + "\"";
      for (size_t at; (at = q.find(from)) != std::string::npos;) q.replace(at, from.size(), to);
    }
    cj["quantization_config"] = nlohmann::json::parse(q);
  }
  write_file_atomic((fs::path(out_dir) / "config.json").string(), cj.dump(2));
  return {n, total};
}

}  // namespace moebench
