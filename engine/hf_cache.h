// hf_cache.h: finds a model named like a Hugging Face repository, ORG/NAME[@REV], in
// the local hub cache — offline, nothing is downloaded. The cache is the folder that
// huggingface_hub writes: $HF_HUB_CACHE, else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. A model lives in
// models--ORG--NAME/snapshots/COMMIT/, and refs/REV names the commit of a branch or
// tag (REV defaults to main); REV may also be a commit present under snapshots/.
#pragma once
#include <string>

namespace moebench {

// True when `spec` has the shape ORG/NAME or ORG/NAME@REV (and so may be looked up).
bool looks_like_hf_repo_id(const std::string& spec);

// The hub cache folder the environment selects (it need not exist).
std::string hf_hub_cache_dir();

// The snapshot folder of ORG/NAME[@REV]. Throws Error naming the spec, the folder it
// looked in and what was missing.
std::string hf_cache_snapshot(const std::string& spec);

// The checkpoint folder a model name that is no preset names: the name itself, or, when
// it is no folder here and has the shape ORG/NAME[@REV], that snapshot (hf_cache_snapshot).
std::string checkpoint_folder(const std::string& model);
// Throws Error unless `dir` is a folder holding a config.json (the file-system checks do
// not throw: a name too long for the file system is not there).
void check_checkpoint_folder(const std::string& dir);

}  // namespace moebench
