// fuzz_safetensors.cpp: fuzz target for the safetensors reader (header length,
// JSON header, dtypes, shapes, data offsets). An accepted file must describe every
// tensor inside the file with the size its dtype and shape imply, and every element
// must convert to f32 (at whatever alignment the header leaves it).
#include <vector>

#include "engine/dtype.h"
#include "common/error.h"
#include "engine/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

using namespace moebench;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input("model.safetensors", data, size);
  try {
    SafetensorsFile f(path);
    for (auto& [name, v] : f.tensors()) {
      fuzz::check(v.name == name, "tensor '" + name + "' has view name '" + v.name + "'");
      fuzz::check(v.file_offset >= 8 && v.file_offset <= f.file_size() && v.nbytes <= f.file_size() - v.file_offset,
                  "tensor '" + name + "' lies outside the file");
      int64_t numel = v.numel();
      fuzz::check(numel >= 0 && static_cast<uint64_t>(numel) * dtype_size(v.dtype) == v.nbytes,
                  "tensor '" + name + "' byte size does not match dtype and shape");
      fuzz::check(f.find(name) == &v, "find('" + name + "') does not return the tensor");
      // Convert the elements (capped: a header may describe a large tensor over a large file).
      size_t n = static_cast<size_t>(std::min<int64_t>(numel, 1 << 16));
      std::vector<float> out(n);
      to_f32(v.dtype, v.data, out.data(), n);
    }
  } catch (const Error&) {
  }
  return 0;
}
