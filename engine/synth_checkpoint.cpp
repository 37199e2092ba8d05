// synth_checkpoint.cpp: see synth_checkpoint.h.
#include "engine/synth_checkpoint.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/log.h"
#include "engine/safetensors.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "reports/atomic_file.h"

namespace moebench {

namespace fs = std::filesystem;


SynthCheckpointInfo write_synthetic_checkpoint(const ModelConfig& cfg, uint64_t seed, DType dtype,
                                               const std::string& out_dir, uint64_t shard_bytes) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) fail("{}: cannot create directory ({})", out_dir, ec.message());
  auto specs = model_tensor_specs(cfg);
  // Split tensors into shards of at most shard_bytes (a tensor never straddles).
  std::vector<std::vector<const TensorSpec*>> shards(1);
  uint64_t cur = 0, total = 0;
  for (auto& s : specs) {
    uint64_t b = static_cast<uint64_t>(s.numel()) * dtype_size(dtype);
    if (cur > 0 && cur + b > shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(&s);
    cur += b;
    total += b;
  }
  const int n = static_cast<int>(shards.size());
  nlohmann::json weight_map = nlohmann::json::object();
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"moebench_seed", std::to_string(seed)}};
  for (int i = 0; i < n; ++i) {
    std::string fname = n == 1 ? "model.safetensors" : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
    std::vector<TensorToWrite> tw;
    for (auto* s : shards[i]) {
      tw.push_back({s->name, dtype, s->shape, [s, seed, dtype](uint8_t* dst, size_t) {
                      synth_fill(*s, seed, dtype, dst, 0, s->numel());
                    }});
      weight_map[s->name] = fname;
    }
    log::info("writing {} ({}/{})", fname, i + 1, n);
    write_safetensors((fs::path(out_dir) / fname).string(), tw, meta);
  }
  if (n > 1) {
    nlohmann::json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_file_atomic((fs::path(out_dir) / "model.safetensors.index.json").string(), idx.dump(2));
  }
  auto cj = config_to_json(cfg);
  cj["torch_dtype"] = dtype == DType::f32 ? "float32" : dtype == DType::f16 ? "float16" : "bfloat16";
  write_file_atomic((fs::path(out_dir) / "config.json").string(), cj.dump(2));
  return {n, total};
}

}  // namespace moebench
