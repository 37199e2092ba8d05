// safetensors.h: memory-mapped reader of HF safetensors files (single file or
// sharded through model.safetensors.index.json) and an atomic writer.
// Every malformed input (corrupt header, truncated file, offsets out of range or
// overlapping, unknown dtype, missing tensor, wrong shape) is an Error naming the
// file, the tensor, what was expected and what was found.
#pragma once
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/dtype.h"

namespace moebench {

struct TensorView {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapping; valid while the file is open
  size_t nbytes = 0;
  uint64_t file_offset = 0;       // absolute offset in the file (for pread by the disk tier)
  const std::string* file = nullptr;
  int64_t numel() const;
  // Element i of a 32-bit tensor (I32, U32, F32) as its bits, little-endian as stored (the
  // packed codes and zero points of GPTQ, AWQ and compressed-tensors files).
  uint32_t word(int64_t i) const {
    uint32_t w;
    std::memcpy(&w, data + 4 * i, 4);
    return w;
  }
};

class SafetensorsFile {
 public:
  // Maps and validates the file; throws Error on any problem.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;
  size_t file_size() const { return size_; }

 private:
  std::string path_;
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, TensorView> tensors_;
};

// A checkpoint folder: model.safetensors, or shards listed by
// model.safetensors.index.json, or else every *.safetensors file in the folder.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);
  const std::string& dir() const { return dir_; }
  // Looks tensors up by the engine's names: each passes through this map (a family's
  // table, weights.h hf_tensor_name) to the name in the files. None: the names as given.
  void set_name_map(std::function<std::string(const std::string&)> map) { map_ = std::move(map); }
  // nullptr when absent.
  const TensorView* find(const std::string& name) const;
  // Throws Error if absent or if the shape differs.
  const TensorView& get(const std::string& name, const std::vector<int64_t>& shape) const;
  std::vector<std::string> names() const;
  std::vector<std::string> files() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
  std::function<std::string(const std::string&)> map_;
};

// Writes one safetensors file atomically (temp file + rename). Each tensor's bytes
// are produced by fill(dst, nbytes) so large tensors are streamed, not held twice.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::bf16;
  std::vector<int64_t> shape;
  std::function<void(uint8_t* dst, size_t nbytes)> fill;
};
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace moebench
