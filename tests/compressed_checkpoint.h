// compressed_checkpoint.h: checkpoints in compressed-tensors' dense layouts (and
// AutoFP8's), written from codes the test chooses, so that what the loader reads can be
// held to the codes (the layouts: engine/compressed_checkpoint.cpp's header):
//   pack-quantized  weight_packed I32 (out, in / (32/bits)), codes q + 2^(bits-1) from
//                   bit 0 up; weight_zero_point I32 packed along the outputs when
//                   asymmetric; weight_shape I64 [out, in]
//   float-quantized weight F8_E4M3; int-quantized weight I8
//   weight_scale    BF16 (F32 for AutoFP8): [1] (tensor; AutoFP8 []), (out, 1) channel,
//                   (out, in/group) group, (out/R, in/C) block; weight_g_idx I32 (in) with
//                   activation order
// Every linear layer of the experts and the attention is quantised; embeddings, norms, the
// router gate and lm_head are bf16 (llm-compressor's `ignore: [lm_head, re:.*gate$]`).
// The scales are bf16 values, so moebench's formats (f32 or bf16 scales) hold them exactly.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
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

struct CompressedOptions {
  std::string format = "pack-quantized";  // or float-quantized, int-quantized, naive-quantized
  int bits = 4;
  bool is_float = false;
  bool sym = true;
  std::string strategy = "group";  // tensor, channel, group, block
  int64_t group = 128;
  int64_t block = 128;             // strategy block: block x block
  bool act_order = false;          // weight_g_idx: input i in group (i * 7 + 3) % groups
  bool autofp8 = false;            // quant_method fp8 without weight_block_size, F32 scale of shape []
  uint32_t seed = 1;
};

// The codes of one matrix (the truth the tests hold to).
struct CompressedCodes {
  int64_t rows = 0, cols = 0, scale_rows = 1, scale_cols = 1;
  std::vector<int8_t> q;         // (rows, cols) signed codes; fp8: the e4m3 bits
  std::vector<int8_t> z;         // (scale_rows, scale_cols) signed zero points, or empty
  std::vector<uint16_t> scale;   // bf16 bits, (scale_rows, scale_cols)
  std::vector<int32_t> g_idx;    // (cols): each input's scale column
  int64_t block_rows = 1;        // rows a scale row covers
  bool is_float = false;
  float value(int64_t r, int64_t c) const {
    const int64_t sr = r / block_rows, g = g_idx[c];
    const float s = bf16_to_f32(scale[sr * scale_cols + g]);
    if (is_float) return e4m3_to_f32(static_cast<uint8_t>(q[r * cols + c])) * s;
    const int zp = z.empty() ? 0 : z[sr * scale_cols + g];
    return static_cast<float>(q[r * cols + c] - zp) * s;
  }
};

inline CompressedCodes compressed_codes(const TensorSpec& s, const CompressedOptions& o) {
  CompressedCodes k;
  k.rows = s.shape[0];
  k.cols = s.shape[1];
  k.is_float = o.is_float;
  auto cdiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  int64_t in_group = k.cols;
  if (o.strategy == "channel") k.scale_rows = k.rows;
  if (o.strategy == "group") k.scale_rows = k.rows, in_group = o.group;
  if (o.strategy == "block") k.scale_rows = cdiv(k.rows, o.block), in_group = o.block, k.block_rows = o.block;
  if (o.strategy == "channel" || o.strategy == "group") k.block_rows = 1;
  if (o.strategy == "tensor") k.block_rows = k.rows;
  k.scale_cols = cdiv(k.cols, in_group);
  NameRng next(s.name, o.seed);
  const int half = 1 << (o.bits - 1);
  k.q.resize(static_cast<size_t>(k.rows * k.cols));
  for (auto& q : k.q) {
    if (o.is_float) {
      uint8_t b;
      do b = static_cast<uint8_t>(next()); while ((b & 0x7f) == 0x7f);  // no NaN
      q = static_cast<int8_t>(b);
    } else {
      q = static_cast<int8_t>(static_cast<int>(next() % (2 * half)) - half);
      if (o.bits == 8 && o.sym && q == -128) q = -127;  // symmetric int8 holds [-127, 127]
    }
  }
  if (!o.sym) {
    k.z.resize(static_cast<size_t>(k.scale_rows * k.scale_cols));
    for (auto& z : k.z) z = static_cast<int8_t>(static_cast<int>(next() % (2 * half)) - half);
  }
  k.scale.resize(static_cast<size_t>(k.scale_rows * k.scale_cols));
  for (auto& sc : k.scale) sc = f32_to_bf16(random_scale(next, 7, -9));
  k.g_idx = input_groups(k.cols, k.scale_cols, in_group, o.act_order);
  return k;
}

// Writes config `c` as a compressed-tensors (or AutoFP8) checkpoint into `dir`; the bf16
// tensors are the synthetic model's of seed 5.
inline void write_compressed_checkpoint(const ModelConfig& c, const CompressedOptions& o, const std::string& dir) {
  write_published_tensors(c, dir, [&o](const TensorSpec& sp, const std::string& base, std::vector<TensorToWrite>& out) {
    const std::string name = base + ".weight";
    const CompressedCodes k = compressed_codes(sp, o);
    const int per = 32 / o.bits, half = 1 << (o.bits - 1);
    if (o.format == "pack-quantized") {
      const int64_t words = (k.cols + per - 1) / per;
      std::vector<uint32_t> w(static_cast<size_t>(k.rows * words));
      for (int64_t r = 0; r < k.rows; ++r)
        for (int64_t i = 0; i < k.cols; ++i)
          w[r * words + i / per] |= static_cast<uint32_t>(k.q[r * k.cols + i] + half) << (o.bits * (i % per));
      out.push_back(tensor_of(base + ".weight_packed", DType::i32, {k.rows, words}, w));
      out.push_back(tensor_of(base + ".weight_shape", DType::i64, {2}, std::vector<int64_t>{k.rows, k.cols}));
      if (!o.sym) {
        const int64_t zrows = (k.scale_rows + per - 1) / per;
        std::vector<uint32_t> zw(static_cast<size_t>(zrows * k.scale_cols));
        for (int64_t r = 0; r < k.scale_rows; ++r)
          for (int64_t g = 0; g < k.scale_cols; ++g)
            zw[(r / per) * k.scale_cols + g] |= static_cast<uint32_t>(k.z[r * k.scale_cols + g] + half) << (o.bits * (r % per));
        out.push_back(tensor_of(base + ".weight_zero_point", DType::i32, {zrows, k.scale_cols}, zw));
      }
    } else {
      out.push_back(tensor_of(name, o.is_float ? DType::f8_e4m3 : DType::i8, sp.shape, k.q));
      if (!o.sym) out.push_back(tensor_of(base + ".weight_zero_point", DType::i8, {k.scale_rows, k.scale_cols}, k.z));
    }
    if (o.autofp8) {
      const float s = bf16_to_f32(k.scale[0]);
      out.push_back(tensor_of(base + ".weight_scale", DType::f32, {}, std::vector<float>{s}));
      out.push_back(tensor_of(base + ".input_scale", DType::f32, {}, std::vector<float>{0.5f}));
    } else {
      const std::vector<int64_t> shape = o.strategy == "tensor" ? std::vector<int64_t>{1} : std::vector<int64_t>{k.scale_rows, k.scale_cols};
      out.push_back(tensor_of(base + ".weight_scale", DType::bf16, shape, k.scale));
    }
    if (o.act_order) out.push_back(tensor_of(base + ".weight_g_idx", DType::i32, {k.cols}, k.g_idx));
  });
  auto cj = config_to_json(c);
  if (o.autofp8) {
    cj["quantization_config"] = {{"quant_method", "fp8"}, {"activation_scheme", "static"}, {"ignored_layers", {"lm_head"}}};
  } else {
    nlohmann::json w = {{"num_bits", o.bits},   {"type", o.is_float ? "float" : "int"},
                        {"symmetric", o.sym},   {"strategy", o.strategy},
                        {"group_size", o.strategy == "group" ? nlohmann::json(o.group) : nlohmann::json()},
                        {"block_structure", o.strategy == "block" ? nlohmann::json{o.block, o.block} : nlohmann::json()},
                        {"dynamic", false},     {"actorder", o.act_order ? nlohmann::json("group") : nlohmann::json()},
                        {"observer", "minmax"}, {"observer_kwargs", nlohmann::json::object()}};
    cj["quantization_config"] = {
        {"quant_method", "compressed-tensors"},
        {"format", o.format},
        {"quantization_status", "compressed"},
        {"config_groups", {{"group_0", {{"targets", {"Linear"}}, {"weights", w}, {"input_activations", nullptr}}}}},
        {"ignore", {"lm_head", "re:.*block_sparse_moe.gate$"}},
        {"kv_cache_scheme", nullptr},
        {"sparsity_config", nlohmann::json::object()}};
  }
  write_file(dir + "/config.json", cj.dump());
}

}  // namespace moebench::test
