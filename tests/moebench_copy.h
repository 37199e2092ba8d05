// moebench_copy.h: a checkpoint's model written again in moebench's own layout (its
// experts in a format as WeightSource::read_quant gives them), for the tests that hold a
// published layout (GPTQ, AWQ, compressed-tensors, AutoFP8) to the same model in moebench's.
#pragma once
#include <cstring>
#include <string>
#include <vector>

#include "engine/quant.h"
#include "engine/safetensors.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "model/config.h"
#include "test_util.h"

namespace moebench::test {

// The model of checkpoint `ck` in moebench's own layout, into `dir`: its experts in
// format `f` as read_quant gives them, every other tensor as F32 values (quantised
// attention projections dequantised), quantization_config "moebench" (fp8: "fp8").
inline void write_moebench_copy(const WeightSource& ck, QuantFormat f, const std::string& dir) {
  const ModelConfig& c = ck.config();
  std::vector<TensorToWrite> out;
  for (auto& sp : model_tensor_specs(c)) {
    if (!is_expert_tensor(sp.name)) {
      out.push_back({sp.name, DType::f32, sp.shape, [&ck, sp](uint8_t* dst, size_t) {
                       ck.read_f32(sp, reinterpret_cast<float*>(dst));
                     }});
      continue;
    }
    const std::string base = sp.name.substr(0, sp.name.size() - 7);
    const auto parts = quant_parts(f, sp.shape[0], sp.shape[1], ck.expert_zero_points());
    for (size_t i = 0; i < parts.size(); ++i)
      out.push_back({base + parts[i].suffix, parts[i].dtype, parts[i].shape, [&ck, sp, i, f](uint8_t* dst, size_t n) {
                       const QuantMatrix m = ck.read_quant(sp, f);
                       std::memcpy(dst, (i == 0 ? m.q : i == 1 ? m.scale : m.zero).data(), n);
                     }});
  }
  write_safetensors(dir + "/model.safetensors", out);
  auto cj = config_to_json(c);
  if (f == QuantFormat::fp8)
    cj["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {kFp8Block, kFp8Block}}};
  else
    cj["quantization_config"] = {{"quant_method", "moebench"}, {"expert_dtype", quant_format_name(f)}};
  write_file(dir + "/config.json", cj.dump());
}

}  // namespace moebench::test
