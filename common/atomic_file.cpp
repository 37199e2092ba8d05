// atomic_file.cpp: see atomic_file.h. POSIX only (mkstemp, fsync, rename).
#include "common/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/error.h"

namespace moebench {

namespace {

std::string dir_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Closes and unlinks the temporary file unless released.
struct TempFile {
  std::string name;
  int fd = -1;
  bool keep = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!keep && !name.empty()) ::unlink(name.c_str());
  }
};

// A path as check_paths compares it: absolute, symlinks and ".." resolved as far as it exists.
std::string canonical_of(const std::string& path) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::weakly_canonical(std::filesystem::absolute(path, ec), ec);
  return ec ? path : p.lexically_normal().string();
}

bool same_inode(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void check_output(const PathArg& o) {
  struct stat st {};
  if (::stat(o.path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) fail("{} {}: is a folder, expected a file name", o.flag, o.path);
    if (!S_ISREG(st.st_mode)) fail("{} {}: exists and is not a regular file", o.flag, o.path);
  }
  const std::string dir = dir_of(o.path);
  if (::stat(dir.c_str(), &st) != 0) fail("{} {}: folder {} does not exist", o.flag, o.path, dir);
  if (!S_ISDIR(st.st_mode)) fail("{} {}: {} is not a folder", o.flag, o.path, dir);
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    fail("{} {}: cannot write in folder {}: {}", o.flag, o.path, dir, std::strerror(errno));
}

void check_input(const PathArg& i) {
  struct stat st {};
  if (::stat(i.path.c_str(), &st) != 0) fail("{} {}: cannot open it ({})", i.flag, i.path, std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail("{} {}: is a folder, expected a file", i.flag, i.path);
  if (::access(i.path.c_str(), R_OK) != 0) fail("{} {}: cannot read it ({})", i.flag, i.path, std::strerror(errno));
}

}  // namespace

void check_paths(const std::vector<PathArg>& inputs, const std::vector<PathArg>& outputs) {
  struct Named {
    const PathArg* arg;
    bool output;
    std::string canonical;
  };
  std::vector<Named> all;
  for (const PathArg& o : outputs)
    if (!o.path.empty()) {
      check_output(o);
      all.push_back({&o, true, canonical_of(o.path)});
    }
  for (const PathArg& i : inputs)
    if (!i.path.empty()) {
      check_input(i);
      all.push_back({&i, false, canonical_of(i.path)});
    }
  for (size_t a = 0; a < all.size(); ++a)
    for (size_t b = a + 1; b < all.size(); ++b) {
      const Named &x = all[a], &y = all[b];
      if (!x.output && !y.output) continue;
      if (x.canonical != y.canonical && !same_inode(x.arg->path, y.arg->path)) continue;
      fail("{} {} and {} {} are the same file ({}): {}", x.arg->flag, x.arg->path, y.arg->flag, y.arg->path,
           x.canonical, y.output ? "one output would replace the other" : "the output would replace the input");
    }
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  if (path.empty()) fail("cannot write a file with an empty path");
  const std::string dir = dir_of(path);
  TempFile tmp;
  std::string templ = dir + "/." + base_of(path) + ".tmp.XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  tmp.fd = ::mkstemp(buf.data());
  if (tmp.fd < 0) fail("{}: cannot create a temporary file in {}: {}", path, dir, std::strerror(errno));
  tmp.name = buf.data();
  // mkstemp makes 0600; results are meant to be shared like any output file.
  ::fchmod(tmp.fd, 0644);

  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(tmp.fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", path, std::strerror(errno));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(tmp.fd) != 0) fail("{}: fsync failed: {}", path, std::strerror(errno));
  int fd = tmp.fd;
  tmp.fd = -1;
  if (::close(fd) != 0) fail("{}: close failed: {}", path, std::strerror(errno));
  if (::rename(tmp.name.c_str(), path.c_str()) != 0)
    fail("{}: cannot rename the temporary file over it: {}", path, std::strerror(errno));
  tmp.keep = true;
  // Make the rename itself durable. Failure here is not fatal: the data is in place.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string read_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) fail("{}: cannot read: is a directory", path);
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot read: {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail("{}: read failed: {}", path, std::strerror(errno));
  return ss.str();
}

}  // namespace moebench
