// checkpoint_cache.h: synthetic models written to disk once and reused. The disk
// expert tier reads experts from checkpoint files on every miss; a synthetic model
// has none, so a run that asks for the disk tier on one gets the same weights
// written (by write_synthetic_checkpoint, the `make-model` path) into a cache folder
// and loads them from there. The folder is named by model, seed and dtype, written
// under a temporary name and renamed when complete, so an interrupted write is never
// picked up. Cache root: $MOEBENCH_CACHE_DIR, else $XDG_CACHE_HOME/moebench, else
// ~/.cache/moebench; checkpoints live in its checkpoints/ folder.
#pragma once
#include <string>

#include "engine/weight_source.h"

namespace moebench {

std::string moebench_cache_dir();

// The checkpoint folder holding `synthetic`'s weights (written now if missing).
std::string cached_synthetic_checkpoint(const WeightSource& synthetic);

// `w` itself, or — when the disk tier is asked for and `w` is synthetic — the same
// model loaded from its cached checkpoint.
WeightSource with_files_for_tier(WeightSource w, const std::string& expert_tier);

}  // namespace moebench
