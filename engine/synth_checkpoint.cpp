// synth_checkpoint.cpp: see synth_checkpoint.h.
#include "engine/synth_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/log.h"
#include "engine/safetensors.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "reports/atomic_file.h"

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

SynthCheckpointInfo write_synthetic_checkpoint(const ModelConfig& cfg, uint64_t seed, DType dtype,
                                               const std::string& out_dir, uint64_t shard_bytes) {
  validate_config(cfg, (fs::path(out_dir) / "config.json").string());
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) fail("{}: cannot create directory ({})", out_dir, ec.message());
  remove_old_checkpoint(out_dir);
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
  std::map<std::string, std::string> meta = {{"format", "pt"}, {kSeedKey, std::to_string(seed)}};
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
  auto cj = config_to_json(cfg);  // last: the folder is a checkpoint once its config is there
  cj["torch_dtype"] = dtype == DType::f32 ? "float32" : dtype == DType::f16 ? "float16" : "bfloat16";
  write_file_atomic((fs::path(out_dir) / "config.json").string(), cj.dump(2));
  return {n, total};
}

}  // namespace moebench
