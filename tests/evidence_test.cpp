// evidence_test.cpp: the committed measurements and their manifest (reports/evidence.h):
// the repository's own folder is consistent and docs/RESULTS.md is what the manifest
// renders; a folder with a stray, a missing or a doubly listed file is caught; a
// malformed manifest is one clear error.
#include <gtest/gtest.h>

#include <algorithm>

#include "common/error.h"
#include "reports/evidence.h"
#include "reports/results.h"
#include "suites/bound.h"
#include "test_util.h"

namespace moebench {
namespace evidence_test {

const std::string kDir = "/reports/baselines";

TEST(Evidence, RepositoryFolderMatchesItsManifest) {
  const std::string dir = test::source_dir() + kDir;
  const auto m = reports::load_manifest(dir + "/MANIFEST.json");
  EXPECT_GT(m.claims.size(), 5u);
  const auto problems = reports::check_evidence(dir, m);
  for (const std::string& p : problems) ADD_FAILURE() << p;
}

TEST(Evidence, ResultsMdIsGeneratedFromTheManifest) {
  const std::string dir = test::source_dir() + kDir;
  const auto m = reports::load_manifest(dir + "/MANIFEST.json");
  const std::string want = reports::render_evidence(dir, m, "../reports/baselines",
                                                    [](reports::Results& r) { suites::rederive_recorded_bounds(r); });
  EXPECT_EQ(test::read_file(test::source_dir() + "/docs/RESULTS.md"), want)
      << "docs/RESULTS.md is stale: run `moebench evidence write docs/RESULTS.md`";
}

std::string manifest(const std::string& files, const std::string& commit = "abc1234") {
  return R"({"schema_version": 1, "title": "T", "claims": [
    {"id": "a", "title": "A", "device": "NVIDIA H200", "date": "2026-11-30", "commit": ")" + commit +
         R"(", "command": "moebench run", "text": ["x"], "files": )" + files + "}]}";
}

TEST(Evidence, StrayMissingAndDoubleFilesAreNamed) {
  test::TempDir t;
  test::write_file(t.str("kept.log"), "x");
  test::write_file(t.str("stray.log"), "x");
  test::write_file(t.str("MANIFEST.json"), manifest(R"(["kept.log", "kept.log", "gone.json"])"));
  const auto m = reports::load_manifest(t.str("MANIFEST.json"));
  const auto p = reports::check_evidence(t.str(), m);
  auto has = [&](const std::string& s) {
    return std::any_of(p.begin(), p.end(), [&](const std::string& x) { return x.find(s) != std::string::npos; });
  };
  EXPECT_TRUE(has("stray.log backs no claim")) << ::testing::PrintToString(p);
  EXPECT_TRUE(has("file gone.json is not in"));
  EXPECT_TRUE(has("kept.log is listed by claims 'a' and 'a'"));
  EXPECT_EQ(p.size(), 3u);
}

TEST(Evidence, FolderEntriesCoverTheirFiles) {
  test::TempDir t;
  std::filesystem::create_directories(t.path / "logs");
  test::write_file(t.str("logs/one.txt"), "x");
  test::write_file(t.str("MANIFEST.json"), manifest(R"(["logs/"])"));
  EXPECT_TRUE(reports::check_evidence(t.str(), reports::load_manifest(t.str("MANIFEST.json"))).empty());
}

TEST(Evidence, MalformedManifestIsOneClearError) {
  test::TempDir t;
  test::write_file(t.str("MANIFEST.json"), manifest(R"(["a.log"])", "not-a-commit"));
  try {
    reports::load_manifest(t.str("MANIFEST.json"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("field 'commit' is 'not-a-commit'"), std::string::npos) << e.what();
  }
  test::write_file(t.str("MANIFEST.json"), manifest(R"("a.log")"));
  EXPECT_THROW(reports::load_manifest(t.str("MANIFEST.json")), Error);
}

}  // namespace evidence_test
}  // namespace moebench
