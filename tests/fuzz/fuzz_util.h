// fuzz_util.h: what the fuzz targets share. A target feeds the bytes to a parser
// the way the CLI would (through a file where the CLI reads a file); moebench::Error
// is a clean rejection. An accepted input must then satisfy the target's invariants:
// a broken one throws Violation, which the driver reports like a crash.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace moebench::fuzz {

struct Violation : std::logic_error {
  using std::logic_error::logic_error;
};

inline void check(bool ok, const std::string& what) {
  if (!ok) throw Violation("invariant broken on an accepted input: " + what);
}

// A per-process scratch folder under $TMPDIR (or /tmp), removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const char* t = std::getenv("TMPDIR");
    std::filesystem::path d = std::filesystem::path(t && *t ? t : "/tmp") /
                              ("moebench_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return dir;
}

// Writes the input to scratch_dir()/name and returns the path.
inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  std::string path = (scratch_dir() / name).string();
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  f.close();
  if (!f) throw std::runtime_error("fuzz: cannot write " + path);
  return path;
}

}  // namespace moebench::fuzz
