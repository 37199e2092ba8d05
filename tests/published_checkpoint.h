// published_checkpoint.h: what the tests of published quantised layouts (GPTQ, AWQ,
// compressed-tensors, AutoFP8) share: the codes' generator, the unquantised tensors of a
// written checkpoint, the model written again in moebench's own layout (its experts in a
// format as WeightSource::read_quant gives them), and the checks that hold a published
// file to that copy on the CPU backend and in the host store.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/expert_host_store.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "model/config.h"
#include "teacher_forced.h"
#include "test_util.h"

namespace moebench::test {

// splitmix64 seeded by a tensor's name: each matrix's codes, whatever the order of writing.
struct NameRng {
  uint64_t x;
  NameRng(const std::string& name, uint32_t seed) : x(std::hash<std::string>{}(name) ^ (0x9e3779b97f4a7c15ull * seed)) {}
  uint64_t operator()() {
    uint64_t v = (x += 0x9e3779b97f4a7c15ull);
    v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ull;
    v = (v ^ (v >> 27)) * 0x94d049bb133111ebull;
    return v ^ (v >> 31);
  }
};

// The linear layers published quantised files store quantised: the experts and the
// attention projections (embeddings, norms, the router gate and lm_head stay bf16).
inline bool published_quantised(const std::string& name) {
  return name.find("_proj.weight") != std::string::npos || name.find(".experts.") != std::string::npos;
}

// A positive scale with `bits` mantissa bits below its leading one, 2^e0 down to 2^(e0 - 3).
inline float random_scale(NameRng& next, int bits, int e0) {
  const uint64_t m = next() % (1ull << bits);
  return std::ldexp(1.0f + static_cast<float>(m) / static_cast<float>(1ull << bits), e0 - static_cast<int>(next() % 4));
}

// Each input's group: i / group, or with activation order (i * 7 + 3) % groups.
inline std::vector<int32_t> input_groups(int64_t cols, int64_t groups, int64_t group, bool act_order) {
  std::vector<int32_t> g(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) g[c] = static_cast<int32_t>(act_order ? (c * 7 + 3) % groups : c / group);
  return g;
}

// A tensor to write holding the bytes of `v` (a vector of any element type).
template <class V>
TensorToWrite tensor_of(const std::string& name, DType dtype, std::vector<int64_t> shape, V v) {
  return {name, dtype, std::move(shape), [v](uint8_t* dst, size_t n) { std::memcpy(dst, v.data(), n); }};
}

// Writes config `c`'s tensors into dir/model.safetensors: the unquantised ones (see
// published_quantised) as the synthetic model's of seed 5 in bf16, each quantised linear
// layer's as `quantised(spec, its HF name without ".weight", out)` appends them.
inline void write_published_tensors(
    const ModelConfig& c, const std::string& dir,
    const std::function<void(const TensorSpec&, const std::string&, std::vector<TensorToWrite>&)>& quantised) {
  const WeightSource ref = WeightSource::synthetic(c, 5, DType::bf16);
  std::vector<TensorToWrite> out;
  for (auto& sp : model_tensor_specs(c)) {
    const std::string name = hf_tensor_name(c, sp.name);
    if (published_quantised(sp.name))
      quantised(sp, name.substr(0, name.size() - 7), out);
    else
      out.push_back({name, DType::bf16, sp.shape,
                     [ref, sp](uint8_t* dst, size_t) { ref.read_bf16(sp, reinterpret_cast<uint16_t*>(dst)); }});
  }
  write_safetensors(dir + "/model.safetensors", out);
}

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


// The prompt the checkpoint tests teacher-force, and its CPU logits under `s`.
inline const std::vector<int32_t> kCheckpointPrompt = {1, 415, 293, 90, 285, 114, 287, 461, 75, 2};
inline std::vector<float> checkpoint_logits(const WeightSource& w, const EngineSettings& s) {
  return cpu_teacher_forced_logits(w, s, kCheckpointPrompt);
}

// `ck` generates as its copy `mine` on the CPU backend, with the experts in format `f` and
// at bf16, resident and pinned.
inline void expect_generates_as_copy(const WeightSource& ck, const WeightSource& mine, QuantFormat f) {
  for (QuantFormat g : {f, QuantFormat::bf16}) {
    const auto want = checkpoint_logits(mine, with_expert_dtype(quant_format_name(g)));
    EXPECT_EQ(checkpoint_logits(ck, with_expert_dtype(quant_format_name(g))), want) << quant_format_name(g);
    EngineSettings s = with_expert_dtype(quant_format_name(g));
    s.expert_tier = "pinned";
    s.cache_policy = "lru";
    s.cache_slots = std::max(3, ck.config().num_experts_per_tok);  // fewer than the experts, at least one token's
    EXPECT_EQ(checkpoint_logits(ck, s), want) << quant_format_name(g) << " pinned";
  }
}

// The CUDA backend's pinned tier (the host store) holds the same bytes for `ck` as for its
// copy `mine`, with the experts in format `f` and at bf16 (every expert).
inline void expect_host_store_as_copy(const WeightSource& ck, const WeightSource& mine, QuantFormat f) {
  HostStoreOptions opt;
  opt.progress = 0;
  for (QuantFormat g : {f, QuantFormat::bf16}) {
    SCOPED_TRACE(quant_format_name(g));
    auto got = ExpertHostStore::pinned(ck, aligned_host_allocator(), opt, g);
    auto want = ExpertHostStore::pinned(mine, aligned_host_allocator(), opt, g);
    ASSERT_EQ(got->expert_bytes(), want->expert_bytes());
    for (int l = 0; l < got->n_layers(); ++l)
      for (int x = 0; x < got->n_experts(); ++x)
        EXPECT_EQ(std::memcmp(got->expert(l, x), want->expert(l, x), got->expert_bytes()), 0)
            << "layer " << l << " expert " << x;
  }
}

}  // namespace moebench::test
