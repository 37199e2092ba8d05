// test_util.h: shared helpers for tests (fixture paths, temp dirs).
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace moebench::test {

// The source tree: $MOEBENCH_SOURCE_DIR when set (binaries carried to another machine,
// run from a checkout at another path), else the tree the tests were built from.
inline std::string source_dir() {
  const char* env = std::getenv("MOEBENCH_SOURCE_DIR");
  return env && *env ? env : MOEBENCH_SOURCE_DIR;
}
inline std::string fixture(const std::string& rel) { return source_dir() + "/tests/fixtures/" + rel; }

// A fresh temporary directory removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / ("moebench_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string str(const std::string& rel = "") const { return rel.empty() ? path.string() : (path / rel).string(); }
};

inline void write_file(const std::string& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
}
inline std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace moebench::test
