// file_text.cpp: see file_text.h.
#include "ui/model/file_text.h"

#include <zlib.h>

#include "common/error.h"
#include "common/atomic_file.h"

namespace moebench::ui {

namespace {

bool is_gzip(const std::string& bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f && static_cast<unsigned char>(bytes[1]) == 0x8b;
}

// Inflates every gzip member of `in` (gzip allows several back to back).
std::string gunzip(const std::string& in, const std::string& path) {
  // Inflated text beyond this is refused: a dashboard input is at most a few hundred MB.
  constexpr size_t kMaxInflatedBytes = size_t{4} << 30;
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) fail("{}: cannot start zlib inflate", path);
  std::string out;
  char buf[1 << 16];
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  int rc = Z_OK;
  for (;;) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
    if (out.size() > kMaxInflatedBytes) {
      inflateEnd(&z);
      fail("{}: gzip stream inflates to more than {} bytes", path, kMaxInflatedBytes);
    }
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      inflateReset(&z);  // another member follows
      continue;
    }
    if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // input ended inside a member
    if (rc != Z_OK) {
      std::string msg = z.msg ? z.msg : "error " + std::to_string(rc);
      size_t at = in.size() - z.avail_in;
      inflateEnd(&z);
      fail("{}: corrupt gzip stream at compressed byte {}: {}", path, at, msg);
    }
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END) fail("{}: truncated gzip stream (it ends after {} inflated bytes)", path, out.size());
  return out;
}

}  // namespace

std::string read_text_maybe_gzip(const std::string& path) {
  std::string bytes = read_file(path);
  return is_gzip(bytes) ? gunzip(bytes, path) : bytes;
}

nlohmann::json read_json_file(const std::string& path) {
  std::string text = read_text_maybe_gzip(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 3, column 4: ..."; keep the part after the tag.
    std::string what = e.what();
    auto sp = what.find("] ");
    if (sp != std::string::npos) what = what.substr(sp + 2);
    fail("{}: invalid JSON at byte {}: {}", path, e.byte, what);
  } catch (const nlohmann::json::exception& e) {  // a number out of range (1e999) is not a parse_error
    fail("{}: invalid JSON: {}", path, e.what());
  }
}

}  // namespace moebench::ui
