// atomic_file.cpp: see atomic_file.h. POSIX only (mkstemp, fsync, rename).
#include "reports/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "engine/error.h"

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

}  // namespace

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
