// bf16_checkpoint.h: a copy of a checkpoint with every tensor rounded to bf16 (round to
// nearest even), as the CUDA backend stores weights. Lets the fp32 CPU reference run on
// exactly the weights the GPU holds, so GPU-vs-CPU differences are activation rounding
// alone, and measures what bf16 weights alone change against an fp32 oracle.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "test_util.h"

namespace moebench::test {

inline std::string write_bf16_copy(const std::string& src_dir, const TempDir& tmp) {
  auto src = WeightSource::checkpoint(src_dir);
  std::vector<TensorToWrite> out;
  for (auto& s : model_tensor_specs(src.config())) {
    TensorToWrite t;
    t.name = hf_tensor_name(src.config(), s.name);  // the family's checkpoint name
    t.dtype = DType::bf16;
    t.shape = s.shape;
    t.fill = [src, s](uint8_t* dst, size_t) { src.read_bf16(s, reinterpret_cast<uint16_t*>(dst)); };
    out.push_back(std::move(t));
  }
  const std::string dir = tmp.str("bf16");
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(src_dir + "/config.json", dir + "/config.json");
  write_safetensors(dir + "/model.safetensors", out);
  return dir;
}

}  // namespace moebench::test
