// gptq_checkpoint.h: checkpoints in GPTQ's (and AWQ's) published 4-bit layouts, written
// from codes the test chooses, so that what the loader reads can be held to the codes:
//   <linear>.qweight  I32 (in/8, out): input 8k+j of output o in bits 4j of word (k, o)
//   <linear>.qzeros   I32 (groups, out/8): output 8m+j's zero point in bits 4j of word
//                     (g, m), minus 1 in checkpoint_format "gptq" (v1), as is in "gptq_v2"
//   <linear>.scales   F16 (groups, out)
//   <linear>.g_idx    I32 (in): each input's group (i / group_size unless act-order)
// W[o, i] = (u - z) x scale, with u the code and z the zero point of o in group g_idx[i].
// AWQ (GEMM layout): qweight I32 (in, out/8), outputs 8m .. 8m+7 of word (i, m) in the
// nibble order 0 2 4 6 1 3 5 7 (output 8m + t in nibble {0,4,1,5,2,6,3,7}[t]); qzeros the
// same along the outputs, zero points as they are; scales as GPTQ's; no g_idx.
// Every linear layer of the experts and the attention is quantised; embeddings, norms,
// the router gate and lm_head are bf16 (as AutoGPTQ and GPTQModel write Mixtral).
// The scales are fp16 values with 8 significant bits unless `wide_scales`, so that by
// default they are bf16 values too and moebench's int4 (bf16 scales) holds them exactly.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "engine/quant.h"
#include "engine/safetensors.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "model/config.h"
#include "published_checkpoint.h"
#include "test_util.h"

namespace moebench::test {

struct GptqOptions {
  int64_t group = 128;      // -1: one group a row
  bool v1 = true;           // checkpoint_format "gptq" (zero points stored minus 1), else "gptq_v2"
  bool sym = true;          // every zero point 8
  bool act_order = false;   // g_idx not i / group: input i in group (i * 7 + 3) % groups
  bool wide_scales = false; // scales with 11 significant bits (not bf16 values)
  uint32_t seed = 1;
  bool awq = false;         // AWQ's layout (then v1, sym and act_order must be false)
};

// The codes of one matrix, as the generator chose them (the truth the tests hold to).
struct GptqCodes {
  int64_t rows = 0, cols = 0, groups = 0;
  std::vector<uint8_t> u;       // (rows, cols)
  std::vector<uint8_t> z;       // (groups, rows)
  std::vector<uint16_t> scale;  // f16 bits, (groups, rows)
  std::vector<int32_t> g_idx;   // (cols)
  float value(int64_t r, int64_t c) const {
    const int64_t g = g_idx[c];
    return static_cast<float>(static_cast<int>(u[r * cols + c]) - static_cast<int>(z[g * rows + r])) *
           f16_to_f32(scale[g * rows + r]);
  }
};

inline GptqCodes gptq_codes(const TensorSpec& s, const GptqOptions& o) {
  GptqCodes k;
  k.rows = s.shape[0];
  k.cols = s.shape[1];
  const int64_t group = o.group > 0 ? o.group : k.cols;
  k.groups = (k.cols + group - 1) / group;
  NameRng next(s.name, o.seed);
  k.u.resize(static_cast<size_t>(k.rows * k.cols));
  for (auto& u : k.u) u = static_cast<uint8_t>(next() & 15);
  k.z.resize(static_cast<size_t>(k.groups * k.rows));
  // v1 stores z - 1 in a nibble: z in 1..16; v2: 0..15. Symmetric: 8.
  for (auto& z : k.z) z = static_cast<uint8_t>(o.sym ? 8 : (o.v1 && !o.awq ? 1 : 0) + static_cast<int>(next() % 16));
  k.scale.resize(k.z.size());
  for (auto& sc : k.scale) sc = f32_to_f16(random_scale(next, o.wide_scales ? 10 : 7, -7));
  k.g_idx = input_groups(k.cols, k.groups, group, o.act_order);
  return k;
}

// Writes config `c` as a GPTQ checkpoint into `dir` (config.json + model.safetensors);
// the bf16 tensors are the synthetic model's of seed 5.
inline void write_gptq_checkpoint(const ModelConfig& c, const GptqOptions& o, const std::string& dir) {
  write_published_tensors(c, dir, [&o](const TensorSpec& sp, const std::string& base, std::vector<TensorToWrite>& out) {
    const GptqCodes k = gptq_codes(sp, o);
    std::vector<uint32_t> qw(static_cast<size_t>(k.cols / 8 * k.rows)), qz(static_cast<size_t>(k.groups * k.rows / 8));
    constexpr int kAwq[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    for (int64_t i = 0; i < k.cols; ++i)
      for (int64_t r = 0; r < k.rows; ++r) {
        const uint32_t u = k.u[r * k.cols + i];
        if (o.awq) qw[i * (k.rows / 8) + r / 8] |= u << (4 * kAwq[r % 8]);
        else qw[(i / 8) * k.rows + r] |= u << (4 * (i % 8));
      }
    for (int64_t g = 0; g < k.groups; ++g)
      for (int64_t r = 0; r < k.rows; ++r) {
        const uint32_t z = static_cast<uint32_t>((k.z[g * k.rows + r] - (o.v1 && !o.awq ? 1 : 0)) & 15);
        qz[g * (k.rows / 8) + r / 8] |= z << (4 * (o.awq ? kAwq[r % 8] : r % 8));
      }
    out.push_back(tensor_of(base + ".qweight", DType::i32,
                            o.awq ? std::vector<int64_t>{k.cols, k.rows / 8} : std::vector<int64_t>{k.cols / 8, k.rows}, qw));
    out.push_back(tensor_of(base + ".qzeros", DType::i32, {k.groups, k.rows / 8}, qz));
    out.push_back(tensor_of(base + ".scales", DType::f16, {k.groups, k.rows}, k.scale));
    if (!o.awq) out.push_back(tensor_of(base + ".g_idx", DType::i32, {k.cols}, k.g_idx));
  });
  auto cj = config_to_json(c);
  if (o.awq)
    cj["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", o.group}, {"zero_point", true},
                                 {"version", "gemm"}, {"modules_to_not_convert", nullptr}};
  else
    cj["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4},          {"group_size", o.group},
                                 {"desc_act", o.act_order}, {"sym", o.sym},     {"damp_percent", 0.01},
                                 {"checkpoint_format", o.v1 ? "gptq" : "gptq_v2"}, {"true_sequential", true}};
  write_file(dir + "/config.json", cj.dump());
}

}  // namespace moebench::test
