// test_util.h: shared helpers for tests (fixture paths, temp dirs, running the CLI).
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/error.h"

namespace moebench::test {

// The message of the Error f throws ("" when it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The source tree: $MOEBENCH_SOURCE_DIR when set (binaries carried to another machine,
// run from a checkout at another path), else the tree the tests were built from.
inline std::string source_dir() {
  const char* env = std::getenv("MOEBENCH_SOURCE_DIR");
  return env && *env ? env : MOEBENCH_SOURCE_DIR;
}
inline std::string fixture(const std::string& rel) { return source_dir() + "/tests/fixtures/" + rel; }

// A fresh empty directory under the system temp dir (mkdtemp: unique), removed with what
// it holds at scope exit, also where a test took its write permission away.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "moebench_test_XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp " + t + " failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
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

// The moebench binary built next to the test binary.
inline std::string moebench_exe() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path().string() + "/moebench";
}

// Starts argv (argv[0] a path) with stdout and stderr to files and `env` (NAME=VALUE)
// added; returns the pid.
inline pid_t spawn(const std::vector<std::string>& args, const std::string& out, const std::string& err,
                   const std::vector<std::string>& env = {}) {
  pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(out.c_str(), "w", stdout) || !freopen(err.c_str(), "w", stderr)) _exit(126);
    for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// The exit status of a spawned process; 128 + the signal when one killed it.
inline int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// `moebench ARGS...` run to completion in `dir`'s files out/err.
struct CliRun {
  int code;
  std::string out, err;
};
inline CliRun run_moebench(const std::vector<std::string>& args, const TempDir& dir) {
  std::vector<std::string> argv = {moebench_exe()};
  argv.insert(argv.end(), args.begin(), args.end());
  int code = wait_exit(spawn(argv, dir.str("cli.out"), dir.str("cli.err")));
  return {code, read_file(dir.str("cli.out")), read_file(dir.str("cli.err"))};
}

}  // namespace moebench::test
