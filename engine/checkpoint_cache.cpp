// checkpoint_cache.cpp: see checkpoint_cache.h.
#include "engine/checkpoint_cache.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "engine/quant.h"
#include "engine/synth_checkpoint.h"

namespace fs = std::filesystem;

namespace moebench {

std::string moebench_cache_dir() {
  if (std::string v = env_str("MOEBENCH_CACHE_DIR"); !v.empty()) return v;
  if (std::string v = env_str("XDG_CACHE_HOME"); !v.empty()) return (fs::path(v) / "moebench").string();
  return (fs::path(env_str("HOME")) / ".cache" / "moebench").string();
}

std::string cached_synthetic_checkpoint(const WeightSource& synthetic) {
  if (!synthetic.is_synthetic()) fail("cached_synthetic_checkpoint: {} is not synthetic", synthetic.describe());
  std::string name = fmt::format("{}-seed{}-{}-experts-{}", synthetic.config().name, synthetic.seed(),
                                 dtype_name(synthetic.synth_dtype()), quant_format_name(synthetic.expert_format()));
  for (char& c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
  const fs::path dir = fs::path(moebench_cache_dir()) / "checkpoints" / name;
  if (fs::exists(dir / "config.json")) return dir.string();
  const fs::path tmp = dir.string() + fmt::format(".tmp-{}", ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  log::warn("expert_tier=disk on the synthetic model {}: writing its checkpoint once to {} (reused by later runs)",
            synthetic.describe(), dir.string());
  write_synthetic_checkpoint(synthetic.config(), synthetic.seed(), synthetic.synth_dtype(), tmp.string(), 4ULL << 30,
                             synthetic.expert_format());
  fs::rename(tmp, dir, ec);
  if (ec && !fs::exists(dir / "config.json"))  // another process may have renamed its copy first
    fail("{}: cannot move the written checkpoint into place ({})", dir.string(), ec.message());
  fs::remove_all(tmp, ec);
  return dir.string();
}

WeightSource with_files_for_tier(WeightSource w, const std::string& expert_tier) {
  if (expert_tier != "disk" || !w.is_synthetic()) return w;
  WeightSource on_disk = WeightSource::checkpoint(cached_synthetic_checkpoint(w));
  return on_disk;
}

}  // namespace moebench
