// hf_cache.cpp: see hf_cache.h.
#include "engine/hf_cache.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <cctype>

#include "common/env.h"
#include "common/error.h"

namespace fs = std::filesystem;

namespace moebench {

namespace {

// A repository name part: letters, digits, '.', '_', '-', not starting with '.'.
bool name_part(const std::string& s) {
  if (s.empty() || s.size() > 96 || s[0] == '.' || s[0] == '-') return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  return s.find("..") == std::string::npos;
}

// Entries of a folder, comma-separated, for an error message ("none" when empty).
std::string listing(const fs::path& dir) {
  std::string out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out += (out.empty() ? "" : ", ") + e.path().filename().string();
  return out.empty() ? "none" : out;
}

}  // namespace

bool looks_like_hf_repo_id(const std::string& spec) {
  std::string id = spec.substr(0, spec.find('@'));
  auto slash = id.find('/');
  if (slash == std::string::npos || id.find('/', slash + 1) != std::string::npos) return false;
  if (spec.find('@') != std::string::npos && spec.size() == id.size() + 1) return false;  // "ORG/NAME@"
  return name_part(id.substr(0, slash)) && name_part(id.substr(slash + 1));
}

std::string hf_hub_cache_dir() {
  if (std::string v = env_str("HF_HUB_CACHE"); !v.empty()) return v;
  if (std::string v = env_str("HF_HOME"); !v.empty()) return (fs::path(v) / "hub").string();
  if (std::string v = env_str("XDG_CACHE_HOME"); !v.empty()) return (fs::path(v) / "huggingface" / "hub").string();
  return (fs::path(env_str("HOME")) / ".cache" / "huggingface" / "hub").string();
}

std::string hf_cache_snapshot(const std::string& spec) {
  if (!looks_like_hf_repo_id(spec)) fail("model '{}': expected ORG/NAME or ORG/NAME@REV", spec);
  const auto at = spec.find('@');
  const std::string id = spec.substr(0, at);
  const std::string rev = at == std::string::npos ? "main" : spec.substr(at + 1);
  const fs::path hub = hf_hub_cache_dir();
  const fs::path repo = hub / ("models--" + id.substr(0, id.find('/')) + "--" + id.substr(id.find('/') + 1));
  std::error_code ec;  // the non-throwing checks: a name too long for the file system is not there
  if (!fs::is_directory(repo, ec))
    fail("model '{}': not a folder or a preset, and not in the Hugging Face cache (no {}; the cache is $HF_HUB_CACHE, "
         "$HF_HOME/hub or ~/.cache/huggingface/hub, read offline)",
         spec, repo.string());
  std::string commit = rev;
  if (std::ifstream ref(repo / "refs" / rev); ref) {
    std::getline(ref, commit);
    while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back()))) commit.pop_back();
  }
  const fs::path snap = repo / "snapshots" / commit;
  if (commit.empty() || commit.find('/') != std::string::npos || !fs::is_directory(snap, ec))
    fail("model '{}': revision '{}' is not in the Hugging Face cache at {} (refs: {}; snapshots: {})", spec, rev,
         repo.string(), listing(repo / "refs"), listing(repo / "snapshots"));
  return snap.string();
}

std::string checkpoint_folder(const std::string& model) {
  std::error_code ec;
  return !fs::is_directory(model, ec) && looks_like_hf_repo_id(model) ? hf_cache_snapshot(model) : model;
}

void check_checkpoint_folder(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail("{}: not a directory and not a preset (expected a checkpoint folder or one of the presets)", dir);
  if (!fs::exists(fs::path(dir) / "config.json", ec)) fail("{}: missing config.json (expected an HF checkpoint folder)", dir);
}

}  // namespace moebench
