// quant.h: the quantised weight formats of the experts (the `expert_dtype` knob) in
// one place: how a matrix is quantised, dequantised, sized and stored in a checkpoint.
// A matrix is W (rows = output features, cols = input features), PyTorch's layout.
//
//   bf16  the weights as bf16, no scales.
//   fp8   e4m3 values and one f32 scale per 128x128 block (ceil(rows/128) x
//         ceil(cols/128)): W = e4m3 * scale. The layout of published FP8 checkpoints
//         (transformers' FineGrainedFP8Config, DeepSeek-V3, Qwen3-FP8): `.weight`
//         F8_E4M3 and `.weight_scale_inv` F32; scale = amax(block) / 448.
//   int8  int8 values in [-127, 127] and one f32 scale per output row (symmetric):
//         W = q * scale; `.weight` I8 (rows, cols), `.weight_scale` F32 (rows, 1).
//   int4  4-bit values, groups of 128 along the input dimension, one bf16 scale per
//         (row, group) and, when asymmetric, one zero point per (row, group):
//         W = (u - z) * scale, u the stored nibble 0..15, z = 8 when symmetric.
//         Packed along the input dimension, eight per little-endian int32, element
//         8k + j in bits 4j..4j+3 (so byte b of a row holds element 2b in its low
//         nibble, 2b + 1 in its high one): `.weight_packed` I32 (rows, cols / 8),
//         `.weight_scale` BF16 (rows, ceil(cols / 128)), and for asymmetric groups
//         `.weight_zero_point` U8 (rows, ceil(cols / 128)).
// The CPU reference dequantises with dequantize() and computes in fp32: that is the
// definition of each format's values.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "engine/dtype.h"

namespace moebench {

enum class QuantFormat { bf16, fp8, int8, int4 };
const char* quant_format_name(QuantFormat f);  // "bf16" | "fp8" | "int8" | "int4"
// Parses "bf16|fp8|int8|int4"; throws Error naming `what`, the value and the choices.
QuantFormat parse_quant_format(const std::string& s, const std::string& what);

constexpr int64_t kFp8Block = 128;   // fp8: one scale per kFp8Block x kFp8Block block
constexpr int64_t kInt4Group = 128;  // int4: one scale per kInt4Group inputs of a row
// ceil(a / b) for a >= 0, b > 0: the scale grid of a matrix (blocks, groups, packed words).
constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One stored tensor of a quantised matrix: the suffix that follows the module name
// (e.g. ".weight_scale_inv" after "model.layers.0.block_sparse_moe.experts.3.w1"),
// its dtype and shape.
struct QuantPart {
  const char* suffix;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};
// The parts in storage order: values, scales, zero points. Throws Error when the shape
// cannot hold the format (int4 needs cols % 8 == 0).
std::vector<QuantPart> quant_parts(QuantFormat f, int64_t rows, int64_t cols, bool zero_points = false);

// The other dtypes a checkpoint may store the part whose dtype is `want` (quant_parts) of
// format f in, converted to `want` when read (WeightSource::read_quant): fp8 scales as BF16
// or F16 (some of Qwen's published FP8 files), held as F32 exactly; int4 scales as F16, held
// as BF16 (rounded). Empty for every other part. The disk tier, which copies stored bytes,
// refuses such files.
std::vector<DType> dtypes_converted_when_read(QuantFormat f, DType want);

// One quantised matrix: its parts' bytes, as stored.
struct QuantMatrix {
  QuantFormat format = QuantFormat::bf16;
  int64_t rows = 0, cols = 0;
  bool zero_points = false;    // int4: asymmetric groups
  std::vector<uint8_t> q;      // values (bf16: the weights)
  std::vector<uint8_t> scale;  // scales (empty for bf16)
  std::vector<uint8_t> zero;   // int4 zero points (empty unless zero_points)
  uint64_t nbytes() const { return q.size() + scale.size() + zero.size(); }
};

// Bytes of one matrix in format f: values + scales (+ zero points).
uint64_t quant_matrix_bytes(QuantFormat f, int64_t rows, int64_t cols, bool zero_points = false);
// Bytes of one expert (w1, w3, w2) in format f: what a slot, the host store, a miss and
// every bound count.
uint64_t expert_bytes(const ModelConfig& c, QuantFormat f);

// Quantises W (rows x cols floats, row-major). bf16 rounds to nearest even; fp8 and
// int8 use f32 scales from the block/row maximum; int4 scales are bf16, rounded up so
// that no value clips. zero_points selects asymmetric int4 groups (range includes 0).
QuantMatrix quantize(QuantFormat f, const float* w, int64_t rows, int64_t cols, bool zero_points = false);
// W as the format defines it (rows x cols floats).
void dequantize(const QuantMatrix& m, float* out);
// The same from the parts' bytes where they lie (a checkpoint mapping, a staging
// buffer); zero may be null (symmetric int4, other formats).
void dequantize(QuantFormat f, int64_t rows, int64_t cols, const uint8_t* q, const uint8_t* scale,
                const uint8_t* zero, float* out);

}  // namespace moebench
