// compressed_checkpoint_test.cpp: published compressed-tensors checkpoints (llm-compressor's
// pack-quantized, float-quantized and int-quantized formats) and AutoFP8's:
//   every quantised tensor reads back as the codes it was written from, (q − z) · scale
//   exactly (fp8: e4m3 · scale), in every strategy; where moebench's format holds the
//   scheme (int4 groups of 128 in order, symmetric or not; int8 one scale a row or a
//   tensor, 8-bit packed or not; fp8 one scale a tensor or 128 x 128 blocks) it reads as
//   that format value for value and the model generates as its copy in moebench's layout,
//   resident and pinned, and the host store holds the copy's bytes; other schemes run
//   dequantised and are refused in their format in one line; the disk tier refuses them;
//   a malformed config or tensor is one line naming it.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "compressed_checkpoint.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "teacher_forced.h"
#include "test_util.h"

namespace compressed_checkpoint_test {

using namespace moebench;
using test::CompressedOptions;

namespace {

std::vector<float> logits_of(const WeightSource& w, const EngineSettings& s) { return test::checkpoint_logits(w, s); }

struct Scheme {
  const char* name;
  CompressedOptions o;
  QuantFormat format;
  bool exact;  // moebench's format holds it
};

std::vector<Scheme> schemes() {
  return {
      {"int4 group 128", {}, QuantFormat::int4, true},
      {"int4 group 128 asymmetric", {.sym = false}, QuantFormat::int4, true},
      {"int4 group 64", {.group = 64}, QuantFormat::int4, false},
      {"int4 activation order", {.act_order = true}, QuantFormat::int4, false},
      {"int8 channel", {.format = "int-quantized", .bits = 8, .strategy = "channel"}, QuantFormat::int8, true},
      {"int8 tensor", {.format = "naive-quantized", .bits = 8, .strategy = "tensor"}, QuantFormat::int8, true},
      {"int8 packed channel", {.format = "pack-quantized", .bits = 8, .strategy = "channel"}, QuantFormat::int8, true},
      {"int8 channel asymmetric", {.format = "int-quantized", .bits = 8, .sym = false, .strategy = "channel"},
       QuantFormat::int8, false},
      {"fp8 tensor", {.format = "float-quantized", .bits = 8, .is_float = true, .strategy = "tensor"}, QuantFormat::fp8, true},
      {"fp8 block 128", {.format = "float-quantized", .bits = 8, .is_float = true, .strategy = "block"}, QuantFormat::fp8, true},
      {"fp8 channel", {.format = "float-quantized", .bits = 8, .is_float = true, .strategy = "channel"}, QuantFormat::fp8, false},
      {"fp8 block 64", {.format = "float-quantized", .bits = 8, .is_float = true, .strategy = "block", .block = 64},
       QuantFormat::fp8, false},
      {"AutoFP8", {.format = "float-quantized", .bits = 8, .is_float = true, .strategy = "tensor", .autofp8 = true},
       QuantFormat::fp8, true},
  };
}

// The tensors every check reads: an expert of each shape and an attention projection.
std::vector<std::string> probes() {
  return {names::expert(1, 2, "w1"), names::expert(0, 3, "w2"), names::layer(1, "self_attn.o_proj.weight")};
}

int mismatches(const std::vector<float>& got, const test::CompressedCodes& k, const std::string& what) {
  int bad = 0;
  for (int64_t r = 0; r < k.rows; ++r)
    for (int64_t i = 0; i < k.cols; ++i)
      if (got[r * k.cols + i] != k.value(r, i) && ++bad < 4)
        ADD_FAILURE() << what << " [" << r << ", " << i << "]: " << got[r * k.cols + i] << " != " << k.value(r, i);
  return bad;
}

EngineSettings with_dtype(QuantFormat f) { return test::with_expert_dtype(quant_format_name(f)); }

}  // namespace

TEST(CompressedCheckpoint, ReadsAsTheCodesItWasWrittenFrom) {
  const ModelConfig c = preset_config("tiny");  // w2: 256 inputs, two groups of 128
  for (const Scheme& sc : schemes()) {
    SCOPED_TRACE(sc.name);
    test::TempDir d;
    test::write_compressed_checkpoint(c, sc.o, d.str());
    const WeightSource ck = WeightSource::checkpoint(d.str());
    EXPECT_EQ(ck.expert_format(), sc.format);
    EXPECT_EQ(ck.attention_format(), sc.format);
    EXPECT_EQ(ck.expert_zero_points(), sc.format == QuantFormat::int4 && !sc.o.sym);
    for (const std::string& n : probes()) {
      const TensorSpec s = tensor_spec(c, n);
      const test::CompressedCodes k = test::compressed_codes(s, sc.o);
      std::vector<float> got(static_cast<size_t>(s.numel()));
      ck.read_f32(s, got.data());
      EXPECT_EQ(mismatches(got, k, n), 0) << n;
      if (!sc.exact) continue;
      const QuantMatrix m = ck.read_quant(s, sc.format);  // in moebench's format, value for value
      EXPECT_EQ(m.format, sc.format);
      dequantize(m, got.data());
      EXPECT_EQ(mismatches(got, k, n + " as " + quant_format_name(sc.format)), 0) << n;
    }
  }
}

TEST(CompressedCheckpoint, Int4IsMoebenchsLayoutWordForWord) {
  // pack-quantized int4 stores q + 8 from bit 0 up, 8 codes a word along the input: the
  // words are moebench's int4 as they are; zero points are unpacked from along the outputs.
  const ModelConfig c = preset_config("micro");
  for (bool sym : {true, false}) {
    SCOPED_TRACE(sym ? "symmetric" : "asymmetric");
    test::TempDir d;
    const CompressedOptions o{.sym = sym};
    test::write_compressed_checkpoint(c, o, d.str());
    const WeightSource ck = WeightSource::checkpoint(d.str());
    const TensorSpec s = tensor_spec(c, names::expert(1, 2, "w2"));
    const test::CompressedCodes k = test::compressed_codes(s, o);
    const QuantMatrix m = ck.read_quant(s, QuantFormat::int4);
    ASSERT_EQ(m.zero_points, !sym);
    const int64_t groups = k.scale_cols;
    for (int64_t r = 0; r < k.rows; ++r)
      for (int64_t i = 0; i < k.cols; ++i) {
        const int u = (m.q[(r * k.cols + i) / 2] >> (4 * (i % 2))) & 15;
        ASSERT_EQ(u, k.q[r * k.cols + i] + 8) << r << ", " << i;
      }
    for (int64_t r = 0; r < k.rows; ++r)
      for (int64_t g = 0; g < groups; ++g) {
        uint16_t h;
        std::memcpy(&h, m.scale.data() + 2 * (r * groups + g), 2);
        EXPECT_EQ(h, k.scale[r * groups + g]);
        if (!sym) {
          EXPECT_EQ(m.zero[r * groups + g], k.z[r * groups + g] + 8);
        }
      }
  }
}

TEST(CompressedCheckpoint, GeneratesAsItsCopyInMoebenchsLayout) {
  const ModelConfig c = preset_config("micro");
  for (const Scheme& sc : schemes()) {
    if (!sc.exact) continue;
    SCOPED_TRACE(sc.name);
    test::TempDir d, e;
    test::write_compressed_checkpoint(c, sc.o, d.str());
    const WeightSource ck = WeightSource::checkpoint(d.str());
    test::write_moebench_copy(ck, sc.format, e.str());
    const WeightSource mine = WeightSource::checkpoint(e.str());
    test::expect_generates_as_copy(ck, mine, sc.format);
    // The attention projections in their stored format too.
    EngineSettings s = with_dtype(sc.format);
    s.weight_dtype = sc.format == QuantFormat::int4 ? "bf16" : quant_format_name(sc.format);
    EXPECT_NO_THROW(logits_of(ck, s));
    // The CUDA backend's pinned tier (the host store) holds the copy's bytes.
    test::expect_host_store_as_copy(ck, mine, sc.format);
    // The disk tier copies stored bytes; these are converted when read.
    EngineSettings disk = with_dtype(sc.format);
    disk.expert_tier = "disk";
    disk.cache_slots = 3;
    EXPECT_NE(test::error_of([&] { logits_of(ck, disk); }).find("which is converted when read"), std::string::npos);
  }
}

TEST(CompressedCheckpoint, OtherSchemesRunDequantisedOnly) {
  const ModelConfig c = preset_config("tiny");  // w2: 256 inputs, two groups of 128
  for (const Scheme& sc : schemes()) {
    if (sc.exact) continue;
    SCOPED_TRACE(sc.name);
    test::TempDir d;
    test::write_compressed_checkpoint(c, sc.o, d.str());
    const WeightSource ck = WeightSource::checkpoint(d.str());
    EXPECT_FALSE(logits_of(ck, with_dtype(QuantFormat::bf16)).empty());
    const std::string e = test::error_of([&] { logits_of(ck, with_dtype(sc.format)); });
    EXPECT_NE(e.find("run it dequantised (expert_dtype=bf16"), std::string::npos) << e;
    EXPECT_NE(e.find("compressed-tensors"), std::string::npos) << e;
  }
}

// `moebench info --model DIR` says what the file stores and how its experts can run.
TEST(CompressedCheckpoint, InfoSaysHowTheExpertsRun) {
  const ModelConfig c = preset_config("tiny");
  test::TempDir d, g;
  test::write_compressed_checkpoint(c, {}, d.str());
  test::CliRun r = test::run_moebench({"info", "--model", d.str()}, d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("stored: experts int4 (compressed-tensors pack-quantized), attention projections int4"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("bf16  dequantised: 192 KiB an expert, 6.00 MiB all 4 x 8"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("int4  as stored (compressed-tensors pack-quantized): 49.5 KiB an expert"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("fp8   no: setting expert_dtype=fp8:"), std::string::npos) << r.out;
  // Groups of 64: int4 cannot hold them, and the line says why.
  test::write_compressed_checkpoint(c, {.group = 64}, g.str());
  r = test::run_moebench({"info", "--model", g.str()}, g);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("int4  no: " + g.str()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("groups of 64 inputs; moebench's int4 holds one scale per 128 inputs of a row"), std::string::npos)
      << r.out;
}

TEST(CompressedCheckpoint, MalformedConfigOrTensorsNameTheField) {
  const ModelConfig c = preset_config("micro");
  test::TempDir d;
  test::write_compressed_checkpoint(c, {}, d.str());
  const std::string cfg = test::read_file(d.str() + "/config.json");
  auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto j = nlohmann::json::parse(cfg);
    edit(j["quantization_config"]);
    test::write_file(d.str() + "/config.json", j.dump());
    return test::error_of([&] { WeightSource::checkpoint(d.str()); });
  };
  auto g0 = [](nlohmann::json& q) -> nlohmann::json& { return q["config_groups"]["group_0"]["weights"]; };
  EXPECT_NE(with([](auto& q) { q["format"] = "marlin-24"; }).find("quantization_config.format is 'marlin-24', expected pack-quantized"),
            std::string::npos);
  EXPECT_NE(with([](auto& q) { q.erase("config_groups"); }).find("quantization_config.config_groups is missing"),
            std::string::npos);
  EXPECT_NE(with([&](auto& q) { g0(q)["num_bits"] = 3; }).find("weights.num_bits is 3 with type int, expected 8"),
            std::string::npos);
  EXPECT_NE(with([&](auto& q) { g0(q)["strategy"] = "token"; }).find("weights.strategy is \"token\", expected"),
            std::string::npos);
  EXPECT_NE(with([&](auto& q) { g0(q)["group_size"] = nullptr; }).find("weights.group_size is null, expected a positive"),
            std::string::npos);
  EXPECT_NE(with([&](auto& q) { g0(q)["dynamic"] = true; }).find("weights.dynamic is true, expected false"),
            std::string::npos);
  EXPECT_NE(with([](auto& q) { q["sparsity_config"] = {{"format", "sparse-bitmask"}}; }).find("sparsity_config is"),
            std::string::npos);
  EXPECT_NE(with([&](auto& q) {
              q["config_groups"]["group_1"] = q["config_groups"]["group_0"];
              q["config_groups"]["group_1"]["weights"]["group_size"] = 64;
            }).find("share one scheme"),
            std::string::npos);
  // A weight whose weight_shape disagrees with the model, and a scale of the wrong shape.
  test::write_file(d.str() + "/config.json", cfg);
  const std::string name = hf_tensor_name(c, names::expert(0, 1, "w1"));
  const std::string base = name.substr(0, name.size() - 7);
  test::TempDir keep;  // the file as written, each rewrite starts from it
  std::filesystem::copy_file(d.str() + "/model.safetensors", keep.str() + "/model.safetensors");
  auto rewrite = [&](const std::string& tensor, const TensorToWrite& replacement) {
    std::filesystem::copy_file(keep.str() + "/model.safetensors", d.str() + "/model.safetensors",
                               std::filesystem::copy_options::overwrite_existing);
    std::vector<TensorToWrite> out;
    Checkpoint ckpt(d.str());
    for (const std::string& n : ckpt.names()) {
      if (n == tensor) {
        out.push_back(replacement);
        continue;
      }
      const TensorView* v = ckpt.find(n);
      std::vector<uint8_t> b(v->data, v->data + v->nbytes);
      out.push_back({n, v->dtype, v->shape, [b](uint8_t* dst, size_t k) { std::memcpy(dst, b.data(), k); }});
    }
    test::TempDir t;
    write_safetensors(t.str() + "/model.safetensors", out);
    std::filesystem::copy_file(t.str() + "/model.safetensors", d.str() + "/model.safetensors",
                               std::filesystem::copy_options::overwrite_existing);
    return test::error_of([&] {
      const WeightSource w = WeightSource::checkpoint(d.str());
      std::vector<float> v(static_cast<size_t>(tensor_spec(c, names::expert(0, 1, "w1")).numel()));
      w.read_f32(tensor_spec(c, names::expert(0, 1, "w1")), v.data());
    });
  };
  const std::vector<int64_t> wrong_shape = {7, 64};
  EXPECT_NE(rewrite(base + ".weight_shape", {base + ".weight_shape", DType::i64, {2}, [&](uint8_t* dst, size_t n) {
                      std::memcpy(dst, wrong_shape.data(), n);
                    }}).find("weight_shape' holds [7, 64], expected [128, 64]"),
            std::string::npos);
  EXPECT_NE(rewrite(base + ".weight_scale", {base + ".weight_scale", DType::bf16, {128, 2}, [](uint8_t* dst, size_t n) {
                      std::memset(dst, 0, n);
                    }}).find("weight_scale' has shape [128, 2], expected [128, 1]"),
            std::string::npos);
}

}  // namespace compressed_checkpoint_test
