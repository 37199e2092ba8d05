// safetensors.cpp: see safetensors.h. Format: 8-byte little-endian header length N,
// N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__},
// then the data section; offsets are relative to the data section.
#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/weights.h"

namespace moebench {

namespace fs = std::filesystem;
using nlohmann::json;

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail("{}: cannot open ({})", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail("{}: cannot stat ({})", path, std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: is not a regular file (a safetensors file is expected)", path);
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail("{}: truncated: {} bytes, expected at least 8 for the header length", path, size_);
  }
  void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) fail("{}: cannot mmap ({})", path, std::strerror(errno));
  map_ = static_cast<const uint8_t*>(m);
  try {
    uint64_t hlen = 0;
    std::memcpy(&hlen, map_, 8);
    if (hlen > size_ - 8)
      fail("{}: header length {} exceeds the file's remaining {} bytes (truncated or corrupt)", path, hlen, size_ - 8);
    if (hlen > (100u << 20)) fail("{}: header length {} is over the 100 MB limit", path, hlen);
    json h;
    try {
      h = json::parse(map_ + 8, map_ + 8 + hlen);
    } catch (const json::exception& e) {
      fail("{}: corrupt header: not valid JSON ({})", path, e.what());
    }
    if (!h.is_object()) fail("{}: corrupt header: expected a JSON object", path);
    const uint64_t data_start = 8 + hlen, data_size = size_ - data_start;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    std::vector<std::string> range_names;
    for (auto& [name, t] : h.items()) {
      if (name == "__metadata__") continue;
      if (!t.is_object()) fail("{}: tensor '{}': expected an object, found {}", path, name, t.type_name());
      TensorView v;
      v.name = name;
      auto dt = t.find("dtype");
      if (dt == t.end() || !dt->is_string()) fail("{}: tensor '{}': missing string field 'dtype'", path, name);
      if (!parse_dtype(dt->get<std::string>(), &v.dtype) || dt->get<std::string>() != dtype_name(v.dtype))
        fail("{}: tensor '{}': dtype {} is not supported, expected F32, F16, BF16, F8_E4M3, I8, U8, I32 or I64", path, name, dt->get<std::string>());
      auto sh = t.find("shape");
      if (sh == t.end() || !sh->is_array()) fail("{}: tensor '{}': missing array field 'shape'", path, name);
      uint64_t numel = 1;
      for (auto& d : *sh) {
        if (!d.is_number_unsigned()) fail("{}: tensor '{}': shape {} has a non-integer dimension", path, name, sh->dump());
        uint64_t dv = d.get<uint64_t>();
        if (dv > (1ULL << 40) || (dv && numel > (1ULL << 50) / dv))
          fail("{}: tensor '{}': shape {} is too large", path, name, sh->dump());
        numel *= dv;
        v.shape.push_back(static_cast<int64_t>(dv));
      }
      auto off = t.find("data_offsets");
      if (off == t.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
          !(*off)[1].is_number_unsigned())
        fail("{}: tensor '{}': 'data_offsets' must be [begin, end] with non-negative integers", path, name);
      uint64_t b = (*off)[0].get<uint64_t>(), e = (*off)[1].get<uint64_t>();
      if (b > e || e > data_size)
        fail("{}: tensor '{}': data_offsets [{}, {}] out of range of the {}-byte data section (truncated file?)", path,
             name, b, e, data_size);
      uint64_t expect = numel * dtype_size(v.dtype);
      if (e - b != expect)
        fail("{}: tensor '{}': data_offsets span {} bytes, expected {} for {} {}", path, name, e - b, expect,
             dtype_name(v.dtype), shape_str(v.shape));
      v.data = map_ + data_start + b;
      v.nbytes = e - b;
      v.file_offset = data_start + b;
      v.file = &path_;
      ranges.push_back({b, e});
      range_names.push_back(name);
      tensors_.emplace(name, std::move(v));
    }
    // Zero-length tensors hold no bytes and overlap nothing: they are left out, so that
    // each non-empty range is compared with the non-empty one before it in offset order
    // (an empty one in between must not hide an overlap).
    std::vector<size_t> order;
    for (size_t i = 0; i < ranges.size(); ++i)
      if (ranges[i].second > ranges[i].first) order.push_back(i);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
    for (size_t i = 1; i < order.size(); ++i) {
      auto& p = ranges[order[i - 1]];
      auto& q = ranges[order[i]];
      if (q.first < p.second)
        fail("{}: tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", path, range_names[order[i - 1]], p.first, p.second,
             range_names[order[i]], q.first, q.second);
    }
    for (auto& [n, v] : tensors_) v.file = &path_;
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(map_), size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  if (!fs::is_directory(dir)) fail("{}: not a directory (expected a checkpoint folder with config.json and *.safetensors)", dir);
  std::vector<std::string> paths;
  fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::map<std::string, std::string> weight_map;
  if (fs::exists(index) && fs::exists(fs::path(dir) / "model.safetensors"))
    fail("{}: holds both model.safetensors and model.safetensors.index.json: which checkpoint is meant is ambiguous "
         "(remove the stale one)",
         dir);
  if (fs::exists(index)) {
    if (!fs::is_regular_file(index)) fail("{}: is not a regular file", index.string());
    std::ifstream f(index);
    json j;
    try {
      j = json::parse(f);
    } catch (const json::exception& e) {
      fail("{}: not valid JSON ({})", index.string(), e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail("{}: missing object field 'weight_map'", index.string());
    for (auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string()) fail("{}: weight_map['{}'] is {}, expected a file name", index.string(), name, file.dump());
      std::string fn = file.get<std::string>();
      if (fn.find('/') != std::string::npos || fn == "..")
        fail("{}: weight_map['{}'] = '{}' must be a file name in the same folder", index.string(), name, fn);
      weight_map[name] = fn;
      if (std::find(paths.begin(), paths.end(), fn) == paths.end()) paths.push_back(fn);
    }
  } else if (fs::exists(fs::path(dir) / "model.safetensors")) {
    paths.push_back("model.safetensors");
  } else {
    for (auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") paths.push_back(e.path().filename().string());
    std::sort(paths.begin(), paths.end());
  }
  if (paths.empty()) fail("{}: no *.safetensors files found", dir);
  for (auto& p : paths) {
    std::string full = (fs::path(dir) / p).string();
    if (!fs::exists(full)) fail("{}: shard '{}' listed in model.safetensors.index.json does not exist", dir, p);
    files_.push_back(std::make_unique<SafetensorsFile>(full));
  }
  for (auto& f : files_)
    for (auto& [name, v] : f->tensors()) {
      if (index_.count(name)) fail("{}: tensor '{}' appears in both {} and {}", dir, name, *index_[name]->file, f->path());
      index_[name] = &v;
    }
  for (auto& [name, fn] : weight_map) {
    auto it = index_.find(name);
    if (it == index_.end()) fail("{}: tensor '{}' is listed in the index for '{}' but is not in that file", dir, name, fn);
    if (fs::path(*it->second->file).filename() != fn)
      fail("{}: tensor '{}' is listed in the index for '{}' but found in '{}'", dir, name, fn, *it->second->file);
  }
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(map_ ? map_(name) : name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::get(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorView* v = find(name);
  const std::string stored = map_ ? map_(name) : name;
  if (!v) fail("{}: missing tensor '{}' (expected shape {})", dir_, stored, shape_str(shape));
  if (v->shape != shape)
    fail("{}: tensor '{}' has shape {}, expected {}", *v->file, stored, shape_str(v->shape), shape_str(shape));
  return *v;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> r;
  for (auto& [n, v] : index_) r.push_back(n);
  return r;
}

std::vector<std::string> Checkpoint::files() const {
  std::vector<std::string> r;
  for (auto& f : files_) r.push_back(f->path());
  return r;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (auto& t : tensors) {
    uint64_t n = 1;
    for (auto d : t.shape) n *= static_cast<uint64_t>(d);
    uint64_t bytes = n * dtype_size(t.dtype);
    h[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + bytes}}};
    off += bytes;
  }
  std::string hs = h.dump();
  while ((hs.size() + 8) % 8 != 0) hs += ' ';  // align the data section to 8 bytes
  std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("{}: cannot create ({})", tmp, std::strerror(errno));
  auto put = [&](const void* p, size_t n) {
    if (std::fwrite(p, 1, n, f) != n) {
      std::fclose(f);
      std::remove(tmp.c_str());
      fail("{}: write failed ({})", tmp, std::strerror(errno));
    }
  };
  uint64_t hlen = hs.size();
  put(&hlen, 8);
  put(hs.data(), hs.size());
  std::vector<uint8_t> buf;
  for (auto& t : tensors) {
    uint64_t n = 1;
    for (auto d : t.shape) n *= static_cast<uint64_t>(d);
    size_t bytes = n * dtype_size(t.dtype);
    buf.resize(bytes);
    t.fill(buf.data(), bytes);
    put(buf.data(), bytes);
  }
  if (std::fflush(f) != 0 || ::fsync(fileno(f)) != 0) {
    std::fclose(f);
    std::remove(tmp.c_str());
    fail("{}: flush failed ({})", tmp, std::strerror(errno));
  }
  std::fclose(f);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("{}: cannot rename into place ({})", path, std::strerror(errno));
}

}  // namespace moebench
