// quant.cpp: see quant.h.
#include "engine/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"

namespace moebench {

namespace {
// The smallest bf16 value >= x (x > 0, finite): scales that never let a value clip.
uint16_t bf16_at_least(float x) {
  uint16_t b = f32_to_bf16(x);
  if (bf16_to_f32(b) < x) ++b;  // positive bf16 values are ordered like their bit patterns
  return b;
}

float scale_f32(const uint8_t* p, int64_t i) {
  float s;
  std::memcpy(&s, p + 4 * i, 4);
  return s;
}
float scale_bf16(const uint8_t* p, int64_t i) {
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return bf16_to_f32(h);
}
}  // namespace

const char* quant_format_name(QuantFormat f) {
  switch (f) {
    case QuantFormat::bf16: return "bf16";
    case QuantFormat::fp8: return "fp8";
    case QuantFormat::int8: return "int8";
    case QuantFormat::int4: return "int4";
  }
  return "?";
}

QuantFormat parse_quant_format(const std::string& s, const std::string& what) {
  for (QuantFormat f : {QuantFormat::bf16, QuantFormat::fp8, QuantFormat::int8, QuantFormat::int4})
    if (s == quant_format_name(f)) return f;
  fail("{}={}: expected one of bf16|fp8|int8|int4", what, s);
}

uint64_t QuantPart::nbytes() const {
  uint64_t n = dtype_size(dtype);
  for (auto d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::vector<QuantPart> quant_parts(QuantFormat f, int64_t rows, int64_t cols, bool zero_points) {
  switch (f) {
    case QuantFormat::bf16: return {{".weight", DType::bf16, {rows, cols}}};
    case QuantFormat::fp8:
      return {{".weight", DType::f8_e4m3, {rows, cols}},
              {".weight_scale_inv", DType::f32, {ceil_div(rows, kFp8Block), ceil_div(cols, kFp8Block)}}};
    case QuantFormat::int8: return {{".weight", DType::i8, {rows, cols}}, {".weight_scale", DType::f32, {rows, 1}}};
    case QuantFormat::int4: {
      if (cols % 8 != 0) fail("int4 packs 8 inputs per int32: a matrix with {} inputs is not a multiple of 8", cols);
      std::vector<QuantPart> p = {{".weight_packed", DType::i32, {rows, cols / 8}},
                                  {".weight_scale", DType::bf16, {rows, ceil_div(cols, kInt4Group)}}};
      if (zero_points) p.push_back({".weight_zero_point", DType::u8, {rows, ceil_div(cols, kInt4Group)}});
      return p;
    }
  }
  return {};
}

std::vector<DType> dtypes_converted_when_read(QuantFormat f, DType want) {
  if (f == QuantFormat::fp8 && want == DType::f32) return {DType::bf16, DType::f16};
  if (f == QuantFormat::int4 && want == DType::bf16) return {DType::f16};
  return {};
}

uint64_t quant_matrix_bytes(QuantFormat f, int64_t rows, int64_t cols, bool zero_points) {
  uint64_t n = 0;
  for (auto& p : quant_parts(f, rows, cols, zero_points)) n += p.nbytes();
  return n;
}

uint64_t expert_bytes(const ModelConfig& c, QuantFormat f) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  return 2 * quant_matrix_bytes(f, I, H) + quant_matrix_bytes(f, H, I);
}

QuantMatrix quantize(QuantFormat f, const float* w, int64_t rows, int64_t cols, bool zero_points) {
  QuantMatrix m;
  m.format = f;
  m.rows = rows;
  m.cols = cols;
  m.zero_points = f == QuantFormat::int4 && zero_points;
  auto parts = quant_parts(f, rows, cols, m.zero_points);
  m.q.resize(parts[0].nbytes());
  if (parts.size() > 1) m.scale.resize(parts[1].nbytes());
  if (parts.size() > 2) m.zero.resize(parts[2].nbytes());
  switch (f) {
    case QuantFormat::bf16: {
      auto* d = reinterpret_cast<uint16_t*>(m.q.data());
      for (int64_t i = 0; i < rows * cols; ++i) d[i] = f32_to_bf16(w[i]);
      break;
    }
    case QuantFormat::fp8: {
      const int64_t rb = ceil_div(rows, kFp8Block), cb = ceil_div(cols, kFp8Block);
#pragma omp parallel for if (rows * cols > (1 << 18))
      for (int64_t b = 0; b < rb * cb; ++b) {
        const int64_t r0 = (b / cb) * kFp8Block, c0 = (b % cb) * kFp8Block;
        const int64_t r1 = std::min(rows, r0 + kFp8Block), c1 = std::min(cols, c0 + kFp8Block);
        float amax = 0;
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
        const float s = amax > 0 ? amax / 448.0f : 1.0f;
        std::memcpy(m.scale.data() + 4 * b, &s, 4);
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) m.q[r * cols + c] = f32_to_e4m3(w[r * cols + c] / s);
      }
      break;
    }
    case QuantFormat::int8: {
#pragma omp parallel for if (rows * cols > (1 << 18))
      for (int64_t r = 0; r < rows; ++r) {
        const float* x = w + r * cols;
        float amax = 0;
        for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(x[c]));
        const float s = amax > 0 ? amax / 127.0f : 1.0f;
        std::memcpy(m.scale.data() + 4 * r, &s, 4);
        for (int64_t c = 0; c < cols; ++c) {
          const float q = std::clamp(std::nearbyint(x[c] / s), -127.0f, 127.0f);
          m.q[r * cols + c] = static_cast<uint8_t>(static_cast<int8_t>(q));
        }
      }
      break;
    }
    case QuantFormat::int4: {
      const int64_t groups = ceil_div(cols, kInt4Group);
#pragma omp parallel for if (rows * cols > (1 << 18))
      for (int64_t r = 0; r < rows; ++r) {
        const float* x = w + r * cols;
        uint8_t* row = m.q.data() + r * (cols / 2);
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t c0 = g * kInt4Group, c1 = std::min(cols, c0 + kInt4Group);
          float lo = 0, hi = 0;  // the range includes 0, so 0 is exact (as GPTQ does)
          for (int64_t c = c0; c < c1; ++c) {
            lo = std::min(lo, x[c]);
            hi = std::max(hi, x[c]);
          }
          float z = 8;
          float span = m.zero_points ? (hi - lo) / 15.0f : std::max(hi, -lo) / 7.0f;
          // Symmetric: |w| / s <= 7 never clips at -8..7. Asymmetric: (hi - lo) / s <= 15.
          const uint16_t sb = span > 0 ? bf16_at_least(span) : f32_to_bf16(1.0f);
          const float s = bf16_to_f32(sb);
          std::memcpy(m.scale.data() + 2 * (r * groups + g), &sb, 2);
          if (m.zero_points) {
            z = std::clamp(std::nearbyint(-lo / s), 0.0f, 15.0f);
            m.zero[r * groups + g] = static_cast<uint8_t>(z);
          }
          for (int64_t c = c0; c < c1; ++c) {
            const auto u = static_cast<uint8_t>(std::clamp(std::nearbyint(x[c] / s) + z, 0.0f, 15.0f));
            row[c / 2] |= static_cast<uint8_t>((c & 1) ? u << 4 : u);
          }
        }
      }
      break;
    }
  }
  return m;
}

void dequantize(QuantFormat f, int64_t rows, int64_t cols, const uint8_t* q, const uint8_t* scale, const uint8_t* zero,
                float* out) {
  switch (f) {
    case QuantFormat::bf16: to_f32(DType::bf16, q, out, static_cast<size_t>(rows * cols)); return;
    case QuantFormat::fp8: {
      const int64_t cb = ceil_div(cols, kFp8Block);
#pragma omp parallel for if (rows * cols > (1 << 18))
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          out[r * cols + c] = e4m3_to_f32(q[r * cols + c]) * scale_f32(scale, (r / kFp8Block) * cb + c / kFp8Block);
      return;
    }
    case QuantFormat::int8: {
#pragma omp parallel for if (rows * cols > (1 << 18))
      for (int64_t r = 0; r < rows; ++r) {
        const float s = scale_f32(scale, r);
        for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = static_cast<float>(static_cast<int8_t>(q[r * cols + c])) * s;
      }
      return;
    }
    case QuantFormat::int4: {
      const int64_t groups = ceil_div(cols, kInt4Group);
#pragma omp parallel for if (rows * cols > (1 << 18))
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = q + r * (cols / 2);
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t g = r * groups + c / kInt4Group;
          const int u = (c & 1) ? row[c / 2] >> 4 : row[c / 2] & 0xf;
          const int z = zero ? zero[g] : 8;
          out[r * cols + c] = static_cast<float>(u - z) * scale_bf16(scale, g);
        }
      }
      return;
    }
  }
}

void dequantize(const QuantMatrix& m, float* out) {
  dequantize(m.format, m.rows, m.cols, m.q.data(), m.scale.data(), m.zero_points ? m.zero.data() : nullptr, out);
}

}  // namespace moebench
