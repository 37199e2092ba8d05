// compressed_checkpoint.cpp: WeightSource's reader of compressed-tensors checkpoints
// (llm-compressor's dense formats) and AutoFP8's, as published for vLLM:
//   pack-quantized   <linear>.weight_packed I32 (out, ceil(in / (32 / bits))): input
//                    k (32 / bits) + j of a row in bits j·bits of word k, stored as
//                    q + 2^(bits-1) (unsigned); <linear>.weight_zero_point I32, packed the
//                    same way along the outputs (ceil(out / (32 / bits)), groups), when
//                    asymmetric; <linear>.weight_shape I32 or I64 [out, in]
//   float-quantized  <linear>.weight F8_E4M3 (out, in)
//   int-quantized,   <linear>.weight I8 (out, in); <linear>.weight_zero_point (the scale's
//   naive-quantized  shape, I8 or I32) when asymmetric
//   every format     <linear>.weight_scale F32 | BF16 | F16: one (tensor: shape [], [1] or
//                    [1, 1]), (out, 1) (channel), (out, ceil(in / group)) (group),
//                    (ceil(out / R), ceil(in / C)) (block R x C); <linear>.weight_g_idx I32
//                    (in) for group strategy with activation order
//   AutoFP8          <linear>.weight F8_E4M3, <linear>.weight_scale F32 of one value
// W[r, c] = (q − zero) · scale in fp32 (fp8: e4m3 value · scale). Input and output
// activation scales (`input_scale`) are not read: moebench computes with bf16 activations.
// docs/QUANT.md, "compressed-tensors and AutoFP8 checkpoints".
#include <cstring>

#include "common/error.h"
#include "engine/quant.h"
#include "engine/weight_source.h"

namespace moebench {

namespace {
int64_t ct_int(const TensorView& v, int64_t i) {  // an element of an I8, I32 or I64 tensor
  switch (v.dtype) {
    case DType::i8: return static_cast<int8_t>(v.data[i]);
    case DType::i32: return static_cast<int32_t>(v.word(i));
    default: {
      int64_t x;
      std::memcpy(&x, v.data + 8 * i, 8);
      return x;
    }
  }
}
const char* ct_strategy_text(const WeightSource::Compressed& c) {
  using S = WeightSource::Compressed::Strategy;
  switch (c.strategy) {
    case S::tensor: return "one scale a tensor";
    case S::channel: return "one scale a row (strategy channel)";
    case S::group: return "one scale a group of inputs (strategy group)";
    case S::block: return "one scale a block (strategy block)";
  }
  return "?";
}
}  // namespace

std::optional<std::string> WeightSource::compressed_base(const TensorSpec& s) const {
  if (!ckpt_ || !compressed_) return std::nullopt;
  const std::string suffix = ".weight";
  if (s.name.size() < suffix.size() || s.name.compare(s.name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  std::string base = s.name.substr(0, s.name.size() - suffix.size());
  if (ckpt_->find(base + ".weight_packed")) return base;
  const TensorView* v = ckpt_->find(s.name);
  if (v && (v->dtype == DType::f8_e4m3 || v->dtype == DType::i8)) return base;
  return std::nullopt;  // not quantised (norms, the router gate, lm_head, ...)
}

WeightSource::CompressedViews WeightSource::compressed_views(const TensorSpec& s, const std::string& base) const {
  const Compressed& c = *compressed_;
  if (s.shape.size() != 2)
    fail("{}: tensor '{}' is stored in {}'s layout but is not a matrix (shape {})", ckpt_->dir(), s.name, c.name,
         shape_str(s.shape));
  const int64_t rows = s.shape[0], cols = s.shape[1], per = 32 / c.bits;
  auto typed = [&](const TensorView& t, std::initializer_list<DType> ok, const char* want) -> const TensorView* {
    for (DType d : ok)
      if (t.dtype == d) return &t;
    fail("{}: tensor '{}' has dtype {}, expected {} ({})", *t.file, t.name, dtype_name(t.dtype), want, c.name);
  };
  CompressedViews v;
  if (c.packed) {
    v.q = typed(ckpt_->get(base + ".weight_packed", {rows, ceil_div(cols, per)}), {DType::i32}, "I32");
    if (const TensorView* sh = ckpt_->find(base + ".weight_shape")) {
      if (sh->shape != std::vector<int64_t>{2})
        fail("{}: tensor '{}' has shape {}, expected [2]", *sh->file, sh->name, shape_str(sh->shape));
      typed(*sh, {DType::i32, DType::i64}, "I32 or I64");
      if (ct_int(*sh, 0) != rows || ct_int(*sh, 1) != cols)
        fail("{}: tensor '{}' holds [{}, {}], expected [{}, {}] (the weight's shape)", *sh->file, sh->name,
             ct_int(*sh, 0), ct_int(*sh, 1), rows, cols);
    }
  } else {
    const TensorView& t = ckpt_->get(s.name, s.shape);
    v.q = c.is_float ? typed(t, {DType::f8_e4m3}, "F8_E4M3") : typed(t, {DType::i8}, "I8");
  }
  using S = Compressed::Strategy;
  switch (c.strategy) {
    case S::tensor: v.scale_rows = v.scale_cols = 1; break;
    case S::channel: v.scale_rows = rows, v.scale_cols = 1; break;
    case S::group: v.scale_rows = rows, v.scale_cols = ceil_div(cols, c.group); break;
    case S::block: v.scale_rows = ceil_div(rows, c.block_rows), v.scale_cols = ceil_div(cols, c.block_cols); break;
  }
  const std::string scale_name = base + ".weight_scale";
  if (c.strategy == S::tensor) {
    const TensorView* t = ckpt_->find(scale_name);
    if (!t) fail("{}: missing tensor '{}' (expected one scale, shape [] or [1])", ckpt_->dir(), scale_name);
    if (t->numel() != 1)
      fail("{}: tensor '{}' has shape {}, expected one value ({})", *t->file, t->name, shape_str(t->shape), ct_strategy_text(c));
    v.scale = t;
  } else {
    v.scale = &ckpt_->get(scale_name, {v.scale_rows, v.scale_cols});
  }
  typed(*v.scale, {DType::f32, DType::bf16, DType::f16}, "F32, BF16 or F16");
  if (!c.sym) {
    if (c.packed) {
      if (c.strategy != S::group && c.strategy != S::channel)
        fail("{}: tensor '{}' is asymmetric with {}; moebench reads packed zero points for strategy group or channel",
             ckpt_->dir(), s.name, ct_strategy_text(c));
      v.zero = typed(ckpt_->get(base + ".weight_zero_point", {ceil_div(rows, per), v.scale_cols}), {DType::i32}, "I32");
    } else {
      const TensorView* z = ckpt_->find(base + ".weight_zero_point");
      if (!z) fail("{}: missing tensor '{}.weight_zero_point' (asymmetric weights)", ckpt_->dir(), base);
      if (z->numel() != v.scale_rows * v.scale_cols)
        fail("{}: tensor '{}' has shape {}, expected the scale's ({})", *z->file, z->name, shape_str(z->shape),
             shape_str(v.scale->shape));
      v.zero = typed(*z, {DType::i8, DType::i32}, "I8 or I32");
    }
  }
  if (c.strategy == S::group)
    if (const TensorView* g = ckpt_->find(base + ".weight_g_idx")) {
      if (g->shape != std::vector<int64_t>{cols})
        fail("{}: tensor '{}' has shape {}, expected [{}]", *g->file, g->name, shape_str(g->shape), cols);
      v.g_idx = typed(*g, {DType::i32}, "I32");
      for (int64_t i = 0; i < cols; ++i)
        if (const int64_t x = ct_int(*g, i); x < 0 || x >= v.scale_cols)
          fail("{}: tensor '{}' holds {} at input {}, expected a group in [0, {})", *g->file, g->name, x, i, v.scale_cols);
    }
  return v;
}

namespace {
// The codes, zero points and scales of one compressed matrix (rows = out, cols = in).
struct CtReader {
  const WeightSource::Compressed& c;
  const WeightSource::CompressedViews& v;
  int64_t rows, cols;
  std::vector<float> scale;  // (scale_rows, scale_cols)
  CtReader(const WeightSource::Compressed& c_, const WeightSource::CompressedViews& v_, int64_t r, int64_t k)
      : c(c_), v(v_), rows(r), cols(k), scale(static_cast<size_t>(v_.scale_rows * v_.scale_cols)) {
    to_f32(v.scale->dtype, v.scale->data, scale.data(), scale.size());
  }
  int per() const { return 32 / c.bits; }
  int offset() const { return 1 << (c.bits - 1); }
  // The stored unsigned code of a packed matrix at (r, i).
  uint32_t packed_code(int64_t r, int64_t i) const {
    const int64_t words = ceil_div(cols, per());
    return (v.q->word(r * words + i / per()) >> (c.bits * (i % per()))) & ((1u << c.bits) - 1);
  }
  // The signed code (integers) at (r, i).
  int code(int64_t r, int64_t i) const {
    return c.packed ? static_cast<int>(packed_code(r, i)) - offset() : static_cast<int8_t>(v.q->data[r * cols + i]);
  }
  // The zero point of scale row r, group g, in the codes' signed range; 0 when symmetric.
  int zero(int64_t r, int64_t g) const {
    if (!v.zero) return 0;
    if (!c.packed) return static_cast<int>(ct_int(*v.zero, r * v.scale_cols + g));
    const uint32_t w = v.zero->word((r / per()) * v.scale_cols + g);
    return static_cast<int>((w >> (c.bits * (r % per()))) & ((1u << c.bits) - 1)) - offset();
  }
  int64_t group_of(int64_t i) const {
    using S = WeightSource::Compressed::Strategy;
    switch (c.strategy) {
      case S::group: return v.g_idx ? ct_int(*v.g_idx, i) : i / c.group;
      case S::block: return i / c.block_cols;
      default: return 0;
    }
  }
  int64_t scale_row(int64_t r) const {
    using S = WeightSource::Compressed::Strategy;
    return c.strategy == S::tensor ? 0 : c.strategy == S::block ? r / c.block_rows : r;
  }
};
}  // namespace

void WeightSource::compressed_dequantize(const TensorSpec& s, const std::string& base, float* dst) const {
  const CompressedViews v = compressed_views(s, base);
  const int64_t rows = s.shape[0], cols = s.shape[1];
  const CtReader rd(*compressed_, v, rows, cols);
  std::vector<int64_t> group(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) group[i] = rd.group_of(i);
#pragma omp parallel for if (rows * cols > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t sr = rd.scale_row(r);
    for (int64_t i = 0; i < cols; ++i) {
      const int64_t g = group[i];
      const float sc = rd.scale[sr * v.scale_cols + g];
      dst[r * cols + i] = compressed_->is_float
                              ? e4m3_to_f32(v.q->data[r * cols + i]) * sc
                              : static_cast<float>(rd.code(r, i) - rd.zero(sr, g)) * sc;
    }
  }
}

QuantMatrix WeightSource::compressed_quant(const TensorSpec& s, const std::string& base) const {
  const Compressed& c = *compressed_;
  const CompressedViews v = compressed_views(s, base);
  const int64_t rows = s.shape[0], cols = s.shape[1];
  const QuantFormat f = c.format();
  using S = Compressed::Strategy;
  auto refuse = [&](const std::string& what, const char* holds) {
    fail("{}: tensor '{}' is {} with {}; moebench's {} holds {}: run it dequantised (expert_dtype=bf16 for experts, "
         "weight_dtype=bf16 for attention projections)",
         ckpt_->dir(), s.name, c.name, what, quant_format_name(f), holds);
  };
  const CtReader rd(c, v, rows, cols);
  QuantMatrix m;
  m.format = f;
  m.rows = rows;
  m.cols = cols;
  if (f == QuantFormat::fp8) {
    const bool blocks = c.strategy == S::block && c.block_rows == kFp8Block && c.block_cols == kFp8Block;
    if (c.strategy != S::tensor && !blocks)
      refuse(c.strategy == S::block ? fmt::format("blocks of {} x {}", c.block_rows, c.block_cols) : ct_strategy_text(c),
             "one scale per 128 x 128 block");
    m.q.assign(v.q->data, v.q->data + v.q->nbytes);
    const int64_t rb = ceil_div(rows, kFp8Block), cb = ceil_div(cols, kFp8Block);
    std::vector<float> sc(static_cast<size_t>(rb * cb));
    for (int64_t i = 0; i < rb * cb; ++i) sc[i] = c.strategy == S::tensor ? rd.scale[0] : rd.scale[i];
    m.scale.resize(sc.size() * 4);
    std::memcpy(m.scale.data(), sc.data(), m.scale.size());
    return m;
  }
  if (f == QuantFormat::int8) {
    if (!c.sym) refuse("zero points", "symmetric rows (no zero points)");
    if (c.strategy != S::tensor && c.strategy != S::channel) refuse(ct_strategy_text(c), "one scale a row");
    m.q.resize(static_cast<size_t>(rows * cols));
    if (!c.packed) {
      std::memcpy(m.q.data(), v.q->data, m.q.size());
    } else {
#pragma omp parallel for if (rows * cols > (1 << 16))
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < cols; ++i) m.q[r * cols + i] = static_cast<uint8_t>(static_cast<int8_t>(rd.code(r, i)));
    }
    std::vector<float> sc(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) sc[r] = rd.scale[rd.scale_row(r)];
    m.scale.resize(sc.size() * 4);
    std::memcpy(m.scale.data(), sc.data(), m.scale.size());
    return m;
  }
  // int4: weight_packed is moebench's layout (8 codes a word along the input, stored as
  // q + 8); the scales become bf16, the zero points one byte each.
  if (c.strategy != S::group || c.group != kInt4Group)
    refuse(c.strategy == S::group ? fmt::format("groups of {} inputs", c.group) : ct_strategy_text(c),
           "one scale per 128 inputs of a row");
  if (v.g_idx)
    for (int64_t i = 0; i < cols; ++i)
      if (ct_int(*v.g_idx, i) != i / kInt4Group)
        refuse(fmt::format("input {} in group {} (activation order)", i, ct_int(*v.g_idx, i)),
               "groups of consecutive inputs");
  if (cols % 8 != 0) refuse(fmt::format("{} inputs a row", cols), "rows of a multiple of 8 inputs");
  m.zero_points = !c.sym;
  m.q.assign(v.q->data, v.q->data + v.q->nbytes);
  const int64_t groups = v.scale_cols;
  m.scale.resize(static_cast<size_t>(rows * groups * 2));
  auto* sb = reinterpret_cast<uint16_t*>(m.scale.data());
  for (int64_t i = 0; i < rows * groups; ++i) sb[i] = f32_to_bf16(rd.scale[i]);  // moebench's int4 scales are bf16
  if (m.zero_points) {
    m.zero.resize(static_cast<size_t>(rows * groups));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < groups; ++g) m.zero[r * groups + g] = static_cast<uint8_t>(rd.zero(r, g) + 8);
  }
  return m;
}

}  // namespace moebench
