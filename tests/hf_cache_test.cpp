// hf_cache_test.cpp: --model ORG/NAME[@REV] resolves in a Hugging Face hub cache laid
// out as huggingface_hub writes it (files in blobs/, symlinked from snapshots/COMMIT/),
// offline; errors name where they looked.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "model/config.h"
#include "common/error.h"
#include "engine/hf_cache.h"
#include "engine/synth_checkpoint.h"
#include "engine/weight_source.h"
#include "test_util.h"

namespace hf_cache_test {

using namespace moebench;
namespace fs = std::filesystem;

namespace {

// Sets (or, given null, unsets) an environment variable for the scope.
struct ScopedEnv {
  std::string name;
  std::string old;
  bool had;
  ScopedEnv(const char* n, const char* v) : name(n) {
    const char* o = std::getenv(n);
    had = o != nullptr;
    if (had) old = o;
    v ? setenv(n, v, 1) : unsetenv(n);
  }
  ~ScopedEnv() { had ? setenv(name.c_str(), old.c_str(), 1) : unsetenv(name.c_str()); }
};

// A hub cache holding org/tiny-moe at commit `commit` (refs/main points at it), its
// files stored as blobs and linked from the snapshot like huggingface_hub does.
void make_hub(const fs::path& hub, const std::string& commit) {
  const fs::path repo = hub / "models--org--tiny-moe";
  const fs::path snap = repo / "snapshots" / commit;
  test::TempDir ck;
  write_synthetic_checkpoint(preset_config("tiny"), 3, DType::bf16, ck.str());
  fs::create_directories(repo / "blobs");
  fs::create_directories(snap);
  fs::create_directories(repo / "refs");
  int i = 0;
  for (const auto& e : fs::directory_iterator(ck.path)) {
    const fs::path blob = repo / "blobs" / ("blob" + std::to_string(i++));
    fs::copy_file(e.path(), blob);
    fs::create_symlink(fs::relative(blob, snap), snap / e.path().filename());
  }
  test::write_file((repo / "refs" / "main").string(), commit + "\n");
}

}  // namespace

TEST(HfCache, RepoIdShapes) {
  EXPECT_TRUE(looks_like_hf_repo_id("mistralai/Mixtral-8x7B-v0.1"));
  EXPECT_TRUE(looks_like_hf_repo_id("org/name@v1.0"));
  EXPECT_FALSE(looks_like_hf_repo_id("name"));
  EXPECT_FALSE(looks_like_hf_repo_id("/abs/path"));
  EXPECT_FALSE(looks_like_hf_repo_id("a/b/c"));
  EXPECT_FALSE(looks_like_hf_repo_id("../x"));
  EXPECT_FALSE(looks_like_hf_repo_id("org/name@"));
  EXPECT_FALSE(looks_like_hf_repo_id("synthetic:tiny"));
}

TEST(HfCache, CacheFolderFollowsTheEnvironment) {
  {
    ScopedEnv a("HF_HUB_CACHE", "/x/hub");
    EXPECT_EQ(hf_hub_cache_dir(), "/x/hub");
  }
  ScopedEnv a("HF_HUB_CACHE", nullptr);
  ScopedEnv b("HF_HOME", "/y");
  EXPECT_EQ(hf_hub_cache_dir(), "/y/hub");
}

TEST(HfCache, ResolvesMainARefAndACommitOffline) {
  test::TempDir home;
  make_hub(home.path / "hub", "0123abcd");
  ScopedEnv hub("HF_HUB_CACHE", nullptr);
  ScopedEnv hf("HF_HOME", home.str().c_str());
  const std::string snap = (home.path / "hub" / "models--org--tiny-moe" / "snapshots" / "0123abcd").string();
  EXPECT_EQ(hf_cache_snapshot("org/tiny-moe"), snap);
  EXPECT_EQ(hf_cache_snapshot("org/tiny-moe@main"), snap);
  EXPECT_EQ(hf_cache_snapshot("org/tiny-moe@0123abcd"), snap);
  // The loader reads it through the snapshot's links.
  WeightSource w = WeightSource::open("org/tiny-moe", 0);
  ASSERT_NE(w.ckpt(), nullptr);
  EXPECT_EQ(w.config().num_hidden_layers, preset_config("tiny").num_hidden_layers);
}

TEST(HfCache, ErrorsNameWhereTheyLooked) {
  test::TempDir home;
  make_hub(home.path / "hub", "0123abcd");
  ScopedEnv hub("HF_HUB_CACHE", nullptr);
  ScopedEnv hf("HF_HOME", home.str().c_str());
  try {
    WeightSource::open("mistralai/Mixtral-8x7B-v0.1", 0);
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("mistralai/Mixtral-8x7B-v0.1"), std::string::npos) << m;
    EXPECT_NE(m.find("models--mistralai--Mixtral-8x7B-v0.1"), std::string::npos) << m;
  }
  try {
    hf_cache_snapshot("org/tiny-moe@v9");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("'v9'"), std::string::npos) << m;
    EXPECT_NE(m.find("main"), std::string::npos) << m;      // the refs it found
    EXPECT_NE(m.find("0123abcd"), std::string::npos) << m;  // the snapshots it found
  }
}

}  // namespace hf_cache_test
