// quant_test.cpp: the quantised expert formats (engine/quant.h) and their checkpoints.
//   e4m3: every code decodes and re-encodes to itself; rounding and saturation.
//   round trip per format, with the per-element error bound the format implies:
//     bf16 |e| <= |w| 2^-8; fp8 |e| <= max(|w| 2^-4, s 2^-10) (3 mantissa bits,
//     subnormal step 2^-9 s); int8 |e| <= s/2 (no clipping: s = amax/127);
//     int4 |e| <= s/2 (scales rounded up so nothing clips, symmetric and asymmetric);
//   the int4 packing (nibble order, offset 8) and the sizes of each format;
//   make-model checkpoints in each format read back as the synthetic model holds them;
//   an fp8 checkpoint in the published layout (attention fp8 too) loads and dequantises;
//   malformed quantised tensors give one line naming the tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "common/error.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "engine/synth_checkpoint.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "tests/test_util.h"
#include "variants/simulator.h"

namespace quant_test {

using namespace moebench;

namespace {

std::vector<float> random_matrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& x : w) x = n(g);
  w[3] = 0.9f;  // an outlier: one block/row/group with a much larger scale
  w[w.size() - 5] = 0;
  return w;
}

float f32_at(const std::vector<uint8_t>& b, int64_t i) {
  float s;
  std::memcpy(&s, b.data() + 4 * i, 4);
  return s;
}
float bf16_at(const std::vector<uint8_t>& b, int64_t i) {
  uint16_t h;
  std::memcpy(&h, b.data() + 2 * i, 2);
  return bf16_to_f32(h);
}

// The largest error seen divided by its bound (<= 1 passes).
double worst_ratio(const QuantMatrix& m, const std::vector<float>& w) {
  std::vector<float> d(w.size());
  dequantize(m, d.data());
  const int64_t R = m.rows, C = m.cols;
  double worst = 0;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float x = w[r * C + c], e = std::fabs(x - d[r * C + c]);
      double bound = 0;
      switch (m.format) {
        case QuantFormat::bf16: bound = std::fabs(x) / 256; break;
        case QuantFormat::fp8: {
          const float s = f32_at(m.scale, (r / kFp8Block) * ((C + kFp8Block - 1) / kFp8Block) + c / kFp8Block);
          bound = std::max(std::fabs(x) / 16, s / 1024);
          break;
        }
        case QuantFormat::int8: bound = f32_at(m.scale, r) / 2; break;
        case QuantFormat::int4: bound = bf16_at(m.scale, r * ((C + kInt4Group - 1) / kInt4Group) + c / kInt4Group) / 2; break;
      }
      bound = bound * (1 + 1e-6) + 1e-12;  // the fp32 product in dequantize
      worst = std::max(worst, e / bound);
    }
  return worst;
}

}  // namespace

TEST(Quant, E4m3CodesRoundTrip) {
  for (int v = 0; v < 256; ++v) {
    if ((v & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(e4m3_to_f32(static_cast<uint8_t>(v))));
      continue;
    }
    EXPECT_EQ(f32_to_e4m3(e4m3_to_f32(static_cast<uint8_t>(v))), v) << v;
  }
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0x01), 1.0f / 512);
  EXPECT_EQ(f32_to_e4m3(1000.0f), 0x7e);     // saturates
  EXPECT_EQ(f32_to_e4m3(-1000.0f), 0xfe);
  EXPECT_EQ(f32_to_e4m3(1.0625f), 0x38);     // halfway between 1 and 1.125: to even (1)
  EXPECT_EQ(f32_to_e4m3(1.1875f), 0x3a);     // halfway between 1.125 and 1.25: to even (1.25)
  EXPECT_EQ(f32_to_e4m3(1.5f / 512), 0x02);  // subnormal halfway 1.5 steps: to even (2)
  EXPECT_EQ(f32_to_e4m3(15.5f / 1024), 0x08);  // rounds up into the smallest normal 2^-6
}

TEST(Quant, RoundTripWithinTheFormatsBound) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{256, 128}, {200, 264}, {7, 8}}) {
    auto w = random_matrix(rows, cols, static_cast<uint32_t>(rows * cols));
    for (QuantFormat f : {QuantFormat::bf16, QuantFormat::fp8, QuantFormat::int8, QuantFormat::int4}) {
      for (bool zp : {false, true}) {
        if (zp && f != QuantFormat::int4) continue;
        QuantMatrix m = quantize(f, w.data(), rows, cols, zp);
        EXPECT_EQ(m.nbytes(), quant_matrix_bytes(f, rows, cols, zp));
        const double r = worst_ratio(m, w);
        EXPECT_LE(r, 1.0) << quant_format_name(f) << (zp ? " asymmetric " : " ") << rows << "x" << cols;
        // The bound is tight, not vacuous: quantisation error reaches a good part of it.
        if (f != QuantFormat::bf16 && rows * cols > 1000) {
          EXPECT_GT(r, 0.5) << quant_format_name(f) << " " << rows << "x" << cols;
        }
      }
    }
  }
}

TEST(Quant, ZeroMatrixAndExactValues) {
  std::vector<float> z(16 * 16, 0.0f), d(z.size(), 1.0f);
  for (QuantFormat f : {QuantFormat::fp8, QuantFormat::int8, QuantFormat::int4}) {
    dequantize(quantize(f, z.data(), 16, 16), d.data());
    for (float x : d) EXPECT_EQ(x, 0.0f) << quant_format_name(f);
  }
  // Multiples of the scale come back exactly: int8 row with amax 127 -> scale 1.
  std::vector<float> w(8);
  for (int i = 0; i < 8; ++i) w[i] = static_cast<float>(i * 18 - 7 * 18 + 1);  // -125 .. 1, then amax 127
  w[7] = 127;
  std::vector<float> back(8);
  dequantize(quantize(QuantFormat::int8, w.data(), 1, 8), back.data());
  EXPECT_EQ(back, w);
}

TEST(Quant, Int4PackingIsLowNibbleFirstWithOffsetEight) {
  // One row of 8 inputs -7..0 (amax 7: scale 1): stored nibbles u = q + 8 = 1..8.
  std::vector<float> w = {-7, -6, -5, -4, -3, -2, -1, 0};
  QuantMatrix m = quantize(QuantFormat::int4, w.data(), 1, 8);
  ASSERT_EQ(m.q.size(), 4u);
  EXPECT_EQ(m.q[0], 0x21);  // element 0 in the low nibble, element 1 in the high one
  EXPECT_EQ(m.q[1], 0x43);
  EXPECT_EQ(m.q[2], 0x65);
  EXPECT_EQ(m.q[3], 0x87);
  EXPECT_EQ(bf16_at(m.scale, 0), 1.0f);
  auto parts = quant_parts(QuantFormat::int4, 1, 8);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_STREQ(parts[0].suffix, ".weight_packed");
  EXPECT_EQ(parts[0].dtype, DType::i32);
  EXPECT_EQ(parts[0].shape, (std::vector<int64_t>{1, 1}));
  // Asymmetric: 0..15 over [0, 15]: zero point 0, scale 1, u = w.
  std::vector<float> a(8);
  for (int i = 0; i < 8; ++i) a[i] = static_cast<float>(2 * i + 1);
  QuantMatrix ma = quantize(QuantFormat::int4, a.data(), 1, 8, true);
  EXPECT_EQ(ma.zero.at(0), 0);
  EXPECT_EQ(ma.q[0], 0x31);
  EXPECT_THROW(quant_parts(QuantFormat::int4, 4, 12), Error);  // 12 inputs do not pack into int32
}

TEST(Quant, SizesOfTheMixtralExpert) {
  const ModelConfig c = preset_config("mixtral-8x7b");
  const uint64_t H = 4096, I = 14336, m = H * I;
  EXPECT_EQ(expert_bytes(c, QuantFormat::bf16), 3 * m * 2);
  EXPECT_EQ(expert_bytes(c, QuantFormat::fp8), 3 * m + 3 * 4 * (I / 128) * (H / 128));
  EXPECT_EQ(expert_bytes(c, QuantFormat::int8), 3 * m + 4 * (2 * I + H));
  EXPECT_EQ(expert_bytes(c, QuantFormat::int4), 3 * m / 2 + 3 * 2 * (m / 128));
  EXPECT_EQ(static_cast<int64_t>(expert_bytes(c, QuantFormat::bf16)), kMixtral8x7bExpertBytes);  // the simulator's default
  // int4 experts are about 3.9x smaller than bf16 ones (the scales cost 1/32 of the nibbles).
  const double ratio = static_cast<double>(expert_bytes(c, QuantFormat::bf16)) / expert_bytes(c, QuantFormat::int4);
  EXPECT_NEAR(ratio, 3.879, 0.001);
  EXPECT_EQ(expert_bytes(c, QuantFormat::int4), 90832896u);
}

TEST(Quant, ParseNamesTheKnob) {
  EXPECT_EQ(parse_quant_format("int4", "x"), QuantFormat::int4);
  try {
    parse_quant_format("int3", "setting expert_dtype");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "setting expert_dtype=int3: expected one of bf16|fp8|int8|int4");
  }
}

TEST(QuantCheckpoint, MakeModelWritesWhatTheSyntheticModelHolds) {
  const ModelConfig c = preset_config("micro");  // hidden 64: partial fp8 blocks and int4 groups
  for (QuantFormat f : {QuantFormat::fp8, QuantFormat::int8, QuantFormat::int4}) {
    test::TempDir d;
    write_synthetic_checkpoint(c, 3, DType::bf16, d.str(), 64 * 1024, f);  // several shards
    const WeightSource ck = WeightSource::checkpoint(d.str());
    const WeightSource syn = WeightSource::synthetic(c, 3, DType::bf16, f);
    EXPECT_EQ(ck.expert_format(), f);
    const std::string cfg = test::read_file(d.str("config.json"));
    EXPECT_NE(cfg.find("quantization_config"), std::string::npos);
    for (int l = 0; l < c.num_hidden_layers; ++l)
      for (const char* w : {"w1", "w2", "w3"}) {
        const TensorSpec s = tensor_spec(c, names::expert(l, 1, w));
        const QuantMatrix a = ck.read_quant(s, f), b = syn.read_quant(s, f);
        EXPECT_EQ(a.q, b.q) << s.name;
        EXPECT_EQ(a.scale, b.scale) << s.name;
        std::vector<float> x(static_cast<size_t>(s.numel())), y(x.size());
        ck.read_f32(s, x.data());
        syn.read_f32(s, y.data());
        EXPECT_EQ(x, y) << s.name;  // read_f32 dequantises on both
      }
    // Non-expert tensors stay bf16.
    const TensorSpec q = tensor_spec(c, names::layer(0, "self_attn.q_proj.weight"));
    EXPECT_EQ(ck.stored_format(q), QuantFormat::bf16);
    EXPECT_EQ(ck.dtype_of(q), DType::bf16);
    // A quantised model is never quantised again into another format.
    const QuantFormat other = f == QuantFormat::int4 ? QuantFormat::int8 : QuantFormat::int4;
    EXPECT_THROW(resolve_expert_format(quant_format_name(other), ck), Error);
    EXPECT_EQ(resolve_expert_format("bf16", ck), QuantFormat::bf16);
    EXPECT_EQ(resolve_expert_format(quant_format_name(f), ck), f);
  }
}

TEST(QuantCheckpoint, SyntheticSpecTakesADtype) {
  ModelConfig c;
  QuantFormat f = QuantFormat::bf16;
  ASSERT_TRUE(parse_synthetic_model("synthetic:tiny:layers=2:dtype=int4", &c, &f));
  EXPECT_EQ(f, QuantFormat::int4);
  EXPECT_EQ(c.num_hidden_layers, 2);
  ASSERT_TRUE(parse_synthetic_model("tiny:dtype=fp8", &c, &f));
  EXPECT_EQ(f, QuantFormat::fp8);
  EXPECT_EQ(WeightSource::open("synthetic:micro:dtype=int8", 1).expert_format(), QuantFormat::int8);
  try {
    parse_synthetic_model("synthetic:tiny:dtype=int2", &c, &f);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "model 'synthetic:tiny:dtype=int2': dtype=int2: expected one of bf16|fp8|int8|int4");
  }
}

// An fp8 checkpoint laid out as transformers' FineGrainedFP8Config saves it: every
// linear layer but the router gate and lm_head in F8_E4M3 with 128x128 F32
// weight_scale_inv; norms and embeddings bf16.
TEST(QuantCheckpoint, PublishedFp8LayoutLoads) {
  const ModelConfig c = preset_config("micro");
  const WeightSource ref = WeightSource::synthetic(c, 9, DType::bf16);
  test::TempDir d;
  std::vector<TensorToWrite> out;
  auto quantised = [](const std::string& n) {
    return n.find("_proj.") != std::string::npos || n.find(".experts.") != std::string::npos;
  };
  for (auto& sp : model_tensor_specs(c)) {
    if (!quantised(sp.name)) {
      out.push_back({sp.name, DType::bf16, sp.shape, [ref, sp](uint8_t* dst, size_t) {
                       ref.read_bf16(sp, reinterpret_cast<uint16_t*>(dst));
                     }});
      continue;
    }
    const std::string base = sp.name.substr(0, sp.name.size() - 7);
    auto parts = quant_parts(QuantFormat::fp8, sp.shape[0], sp.shape[1]);
    for (int i = 0; i < 2; ++i)
      out.push_back({base + parts[i].suffix, parts[i].dtype, parts[i].shape, [ref, sp, i](uint8_t* dst, size_t n) {
                       QuantMatrix m = ref.read_quant(sp, QuantFormat::fp8);
                       std::memcpy(dst, i == 0 ? m.q.data() : m.scale.data(), n);
                     }});
  }
  write_safetensors(d.str("model.safetensors"), out);
  auto cj = config_to_json(c);
  cj["quantization_config"] = {{"quant_method", "fp8"}, {"activation_scheme", "dynamic"}, {"weight_block_size", {128, 128}}};
  test::write_file(d.str("config.json"), cj.dump());
  const WeightSource ck = WeightSource::checkpoint(d.str());
  EXPECT_EQ(ck.expert_format(), QuantFormat::fp8);
  for (const std::string& n : {names::layer(1, "self_attn.o_proj.weight"), names::expert(1, 2, "w2")}) {
    const TensorSpec s = tensor_spec(c, n);
    std::vector<float> got(static_cast<size_t>(s.numel())), want(got.size());
    ck.read_f32(s, got.data());
    dequantize(ref.read_quant(s, QuantFormat::fp8), want.data());
    EXPECT_EQ(got, want) << n;
  }
  // A block size other than 128x128 is refused in one line.
  cj["quantization_config"]["weight_block_size"] = {64, 64};
  test::write_file(d.str("config.json"), cj.dump());
  try {
    WeightSource::checkpoint(d.str());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight_block_size is [64,64], expected [128, 128]"), std::string::npos) << e.what();
  }
}

TEST(QuantCheckpoint, MalformedScalesNameTheTensor) {
  const ModelConfig c = preset_config("micro");
  test::TempDir d;
  write_synthetic_checkpoint(c, 3, DType::bf16, d.str(), 1ull << 30, QuantFormat::int8);
  // Rewrite one scale with the wrong shape.
  SafetensorsFile f(d.str("model.safetensors"));
  std::vector<TensorToWrite> out;
  const std::string bad = "model.layers.0.block_sparse_moe.experts.0.w1.weight_scale";
  for (auto& [name, v] : f.tensors()) {
    std::vector<int64_t> shape = v.shape;
    const TensorView* pv = &v;
    if (name == bad) shape = {shape[0] / 2, 2};
    out.push_back({name, v.dtype, shape, [pv](uint8_t* dst, size_t n) { std::memcpy(dst, pv->data, n); }});
  }
  write_safetensors(d.str("model2.safetensors"), out);
  std::filesystem::rename(d.str("model2.safetensors"), d.str("model.safetensors"));
  try {
    WeightSource::checkpoint(d.str());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor '" + bad + "' has shape [64, 2], expected [128, 1]"), std::string::npos)
        << e.what();
  }
}

}  // namespace quant_test
