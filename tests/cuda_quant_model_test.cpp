// cuda_quant_model_test.cpp: the CUDA model with quantised experts (expert_dtype fp8,
// int8, int4) against the CPU backend with the same dtype, on a make-model checkpoint
// whose experts are stored in that format (the bytes `synthetic:micro` quantised on
// load gives: quant_store_test), in the resident, pinned and disk tiers, with each
// dispatch — skipped, with a message, without a GPU.
//   prefill (a 9-token prompt, 18 pairs): by default one pass of the decode launches
//   (quant_decode_tokens 64: up to 32 tokens at top-2); with the decode launches held to 8
//   tokens (the rule before session 47) and the slices off (quant_prefill_slices 0), each
//   needed expert dequantised to bf16 on the device, then the bf16 expert path; with the
//   slices on, the decode launches on 8 tokens and then 1 (both held to decode's
//   tolerance: they multiply the same exact values);
//   decode (teacher-forced steps, m = 1): the dequantising GEMV (quant_moe_gemv).
// Tolerance: both backends compute with the same dequantised values (value x scale in
// fp32, exactly as quant.cpp defines them); the CUDA side rounds activations to bf16 as
// in the bf16 test (kLogitTol = 4 eps(bf16) of the largest logit, see cuda_model_test),
// and prefill also rounds each dequantised weight to bf16: one more independent relative
// rounding of 2^-8 per product term, so prefill logits are held to twice that. Greedy
// tokens must be identical up to the CPU's first near-tie (top-2 margin within twice
// the tolerance), and the tiers must agree with each other bit for bit (offloading
// moves bytes; it changes none).
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/cpu_model.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/device.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/quant_linear.h"
#include "engine/generate.h"
#include "engine/synth_checkpoint.h"
#include "profiler/counters.h"
#include "suites/quality.h"
#include "compressed_checkpoint.h"
#include "gptq_checkpoint.h"
#include "test_util.h"

namespace cuda_quant_model_test {

using namespace moebench;

namespace {

constexpr double kEpsBf16 = 1.0 / 128;
constexpr double kDecodeTol = 4 * kEpsBf16;
constexpr double kPrefillTol = 8 * kEpsBf16;
constexpr int kSteps = 8;

int argmax_of(const float* l, int v) { return static_cast<int>(std::max_element(l, l + v) - l); }

double scale_of(const float* l, int v) {
  double s = 0;
  for (int i = 0; i < v; ++i) s = std::max(s, std::fabs(static_cast<double>(l[i])));
  return s;
}
double max_diff(const float* a, const float* b, int v) {
  double d = 0;
  for (int i = 0; i < v; ++i) d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
  return d;
}
double margin_of(const float* l, int v) {
  std::vector<float> c(l, l + v);
  std::partial_sort(c.begin(), c.begin() + 2, c.end(), std::greater<float>());
  return c[0] - c[1];
}

EngineSettings settings(const std::string& dtype, const std::string& tier, const std::string& dispatch) {
  EngineSettings s;
  s.expert_dtype = dtype;
  s.expert_tier = tier;
  s.dispatch = dispatch;
  s.combine = dispatch == "fused" ? "fused" : "index_add";
  s.buffers = "pooled";
  s.max_model_len = 64;
  s.max_num_batched_tokens = 32;
  s.gpu_mem_budget = "1GiB";
  s.cache_policy = "lru";
  return s;
}

struct Logits {
  std::vector<float> prompt;              // (prompt, V) every prompt position
  std::vector<std::vector<float>> steps;  // kSteps teacher-forced decode steps
};

Logits run_model(Model& m, const std::vector<int32_t>& prompt, const std::vector<int32_t>& toks) {
  const int V = m.config().vocab_size;
  Logits r;
  r.prompt.resize(prompt.size() * V);
  std::vector<float> last(V);
  m.forward(prompt.data(), static_cast<int>(prompt.size()), 0, last.data(), r.prompt.data());
  int pos = static_cast<int>(prompt.size());
  for (int s = 0; s < kSteps; ++s) {
    r.steps.push_back(last);
    m.forward(&toks[s], 1, pos++, last.data());
  }
  return r;
}

// kSteps greedy tokens after the prompt (the model reset afterwards).
std::vector<int32_t> greedy_tokens(Model& m, const std::vector<int32_t>& prompt) {
  const int V = m.config().vocab_size;
  std::vector<int32_t> toks;
  std::vector<float> l(V);
  m.forward(prompt.data(), static_cast<int>(prompt.size()), 0, l.data());
  int pos = static_cast<int>(prompt.size());
  for (int s = 0; s < kSteps; ++s) {
    toks.push_back(argmax_of(l.data(), V));
    m.forward(&toks.back(), 1, pos++, l.data());
  }
  m.reset();
  return toks;
}

class CudaQuantModel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA quantised-expert tests skipped";
  }
};

}  // namespace

TEST_F(CudaQuantModel, EveryTierAndDispatchMatchesTheCpuBackendWithTheSameDtype) {
  for (const char* dtype : {"fp8", "int8", "int4"}) {
    test::TempDir dir;
    write_synthetic_checkpoint(preset_config("micro"), 7, DType::bf16, dir.str(), 4ULL << 30,
                               parse_quant_format(dtype, "dtype"));
    auto w = WeightSource::checkpoint(dir.str());
    const int V = w.config().vocab_size;
    std::vector<int32_t> prompt;
    for (int i = 0; i < 9; ++i) prompt.push_back(3 + (i * 131) % (V - 3));
    // The CPU backend's greedy tokens and logits (same dtype, same checkpoint).
    EngineContext cctx;
    cctx.weights = &w;
    cctx.settings = settings(dtype, "resident", "grouped");
    CpuModel cpu(cctx);
    const std::vector<int32_t> toks = greedy_tokens(cpu, prompt);
    const Logits ref = run_model(cpu, prompt, toks);
    int first_tie = kSteps;
    for (int s = 0; s < kSteps && first_tie == kSteps; ++s)
      if (margin_of(ref.steps[s].data(), V) <= 2 * (s == 0 ? kPrefillTol : kDecodeTol) * scale_of(ref.steps[s].data(), V))
        first_tie = s;
    // (decode tokens, slices): the dequantising path, 8 + 1 tokens, one pass of 9.
    for (auto [pass, slices] : {std::pair<int, int>{8, 0}, {8, 64}, {64, 0}})
    for (const char* dispatch : {"serial", "grouped", "fused"}) {
      const cuda::ScopedSwitch pass_on(cuda::set_quant_decode_tokens, pass);
      const cuda::ScopedSwitch slices_on(cuda::set_quant_prefill_slices, slices);
      // The decode launches multiply the exact dequantised values: decode's tolerance.
      const int n = static_cast<int>(prompt.size());
      const double prefill_tol = slices >= n || pass >= n ? kDecodeTol : kPrefillTol;
      std::vector<float> resident_logits;
      for (const char* tier : {"resident", "pinned", "disk"}) {
        SCOPED_TRACE(std::string(dtype) + " tier=" + tier + " dispatch=" + dispatch + " decode tokens " +
                     std::to_string(pass) + ", prefill slices up to " + std::to_string(slices));
        EngineContext ctx;
        ctx.weights = &w;
        ctx.backend = "cuda";
        ctx.settings = settings(dtype, tier, dispatch);
        cuda::CudaModel m(ctx);
        EXPECT_EQ(m.expert_format(), parse_quant_format(dtype, "dtype"));
        const Logits got = run_model(m, prompt, toks);
        double worst_p = 0, worst_d = 0;
        for (size_t i = 0; i < prompt.size(); ++i) {
          const double tol = prefill_tol * scale_of(&ref.prompt[i * V], V);
          const double d = max_diff(&got.prompt[i * V], &ref.prompt[i * V], V);
          EXPECT_LE(d, tol) << "prompt position " << i;
          worst_p = std::max(worst_p, d / tol);
        }
        for (int s = 0; s < kSteps; ++s) {
          const double tol = (s == 0 ? prefill_tol : kDecodeTol) * scale_of(ref.steps[s].data(), V);
          const double d = max_diff(got.steps[s].data(), ref.steps[s].data(), V);
          EXPECT_LE(d, tol) << "step " << s;
          if (s < first_tie) {
            EXPECT_EQ(argmax_of(got.steps[s].data(), V), toks[s]) << "greedy token " << s;
          }
          worst_d = std::max(worst_d, d / tol);
        }
        // Offloading moves the same bytes: every tier gives the resident tier's logits.
        std::vector<float> all = got.prompt;
        for (auto& st : got.steps) all.insert(all.end(), st.begin(), st.end());
        if (std::string(tier) == "resident") {
          resident_logits = all;
        } else {
          EXPECT_TRUE(all == resident_logits) << "tier " << tier << " differs from resident";
        }
        std::printf("  %s %s %s pass %d slices %d: worst |cuda - cpu| / tol: prefill %.3f, decode %.3f (first cpu "
                    "near-tie at step %d)\n",
                    dtype, tier, dispatch, pass, slices, worst_p, worst_d, first_tie);
      }
    }
  }
}

// The CUDA model on checkpoint `ck` gives the logits it gives on `mine` (its copy in
// moebench's layout), bit for bit, with its experts in format `f` resident and pinned and
// at bf16 resident and pinned: the same bytes reach the device.
void expect_cuda_runs_as_copy(const WeightSource& ck, const WeightSource& mine, QuantFormat f) {
  const int V = ck.config().vocab_size;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 9; ++i) prompt.push_back(3 + (i * 131) % (V - 3));
  for (const std::string& dtype : {std::string(quant_format_name(f)), std::string("bf16")})
    for (const char* tier : {"resident", "pinned"}) {
      SCOPED_TRACE(dtype + " " + tier);
      std::vector<Logits> got;
      for (const WeightSource* w : {&mine, &ck}) {
        EngineContext ctx;
        ctx.weights = w;
        ctx.backend = "cuda";
        ctx.settings = settings(dtype, tier, "grouped");
        cuda::CudaModel model(ctx);
        const std::vector<int32_t> toks = greedy_tokens(model, prompt);
        got.push_back(run_model(model, prompt, toks));
      }
      EXPECT_TRUE(got[0].prompt == got[1].prompt);
      EXPECT_TRUE(got[0].steps == got[1].steps);
    }
}

// A GPTQ checkpoint (asymmetric, so zero points too) and an AWQ one run as the same model
// written in moebench's int4 layout (dequantised when read at bf16).
TEST_F(CudaQuantModel, GptqCheckpointRunsAsItsMoebenchInt4Copy) {
  for (const test::GptqOptions& o : {test::GptqOptions{.sym = false}, test::GptqOptions{.v1 = false, .sym = false, .awq = true}}) {
    SCOPED_TRACE(o.awq ? "awq" : "gptq");
    test::TempDir g, m;
    test::write_gptq_checkpoint(preset_config("micro"), o, g.str());
    const WeightSource gptq = WeightSource::checkpoint(g.str());
    test::write_moebench_copy(gptq, QuantFormat::int4, m.str());
    expect_cuda_runs_as_copy(gptq, WeightSource::checkpoint(m.str()), QuantFormat::int4);
  }
}

// compressed-tensors checkpoints whose scheme moebench's formats hold (int4 groups of 128
// with zero points, int8 one scale a row, fp8 one scale a tensor as AutoFP8 writes it) run
// as the same model written in moebench's layout (the attention projections dequantised in
// both).
TEST_F(CudaQuantModel, CompressedCheckpointRunsAsItsMoebenchCopy) {
  using test::CompressedOptions;
  const std::vector<std::pair<CompressedOptions, QuantFormat>> schemes = {
      {CompressedOptions{.sym = false}, QuantFormat::int4},
      {CompressedOptions{.format = "int-quantized", .bits = 8, .strategy = "channel"}, QuantFormat::int8},
      {CompressedOptions{.format = "float-quantized", .bits = 8, .is_float = true, .strategy = "tensor", .autofp8 = true},
       QuantFormat::fp8}};
  for (const auto& [o, f] : schemes) {
    SCOPED_TRACE(quant_format_name(f));
    test::TempDir d, m;
    test::write_compressed_checkpoint(preset_config("micro"), o, d.str());
    const WeightSource ck = WeightSource::checkpoint(d.str());
    test::write_moebench_copy(ck, f, m.str());
    expect_cuda_runs_as_copy(ck, WeightSource::checkpoint(m.str()), f);
  }
}

// Quantised attention projections (weight_dtype fp8, int8), with bf16 and int4 experts:
// the CUDA model against the CPU backend with the same settings. Decode multiplies the
// exact codes: the decode tolerance. Prefill with its slices off dequantises each
// projection into bf16 for cuBLAS, one more rounding of 2^-8 per term on top of the
// activations' (the prefill tolerance, as for quantised experts), and with int4 experts
// their own dequantising one as well: 4 eps(bf16) more; with the slices on (the 9-token
// prompt as 8 + 1 tokens) it multiplies the exact codes as decode does: the decode
// tolerance. Greedy tokens identical up to the CPU's first near-tie; its weights hold
// the quantised bytes (fewer than bf16).
TEST_F(CudaQuantModel, QuantisedAttentionMatchesTheCpuBackend) {
  auto w = WeightSource::open("synthetic:micro", 7);
  const int V = w.config().vocab_size;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 9; ++i) prompt.push_back(3 + (i * 131) % (V - 3));
  size_t bf16_bytes = 0;
  {
    EngineContext ctx;
    ctx.weights = &w;
    ctx.backend = "cuda";
    ctx.settings = settings("bf16", "resident", "fused");
    bf16_bytes = cuda::CudaModel(ctx).weight_bytes();
  }
  for (int slices : {0, 64})
  for (const char* wd : {"fp8", "int8"})
    for (const char* ed : {"bf16", "int4"}) {
      const cuda::ScopedSwitch slices_on(cuda::set_quant_prefill_slices, slices);
      // Slices off: the experts dequantised too (decode launches held to 8 tokens).
      const cuda::ScopedSwitch pass_on(cuda::set_quant_decode_tokens, slices == 0 ? 8 : -1);
      SCOPED_TRACE(std::string("weight_dtype=") + wd + " expert_dtype=" + ed + " prefill slices up to " +
                   std::to_string(slices));
      EngineContext cctx;
      cctx.weights = &w;
      cctx.settings = settings(ed, "resident", "grouped");
      cctx.settings.weight_dtype = wd;
      CpuModel cpu(cctx);
      const std::vector<int32_t> toks = greedy_tokens(cpu, prompt);
      const Logits ref = run_model(cpu, prompt, toks);
      EngineContext ctx;
      ctx.weights = &w;
      ctx.backend = "cuda";
      ctx.settings = settings(ed, "resident", "fused");
      ctx.settings.weight_dtype = wd;
      cuda::CudaModel m(ctx);
      EXPECT_LT(m.weight_bytes(), bf16_bytes);
      const Logits got = run_model(m, prompt, toks);
      const double prefill_tol =
          slices >= static_cast<int>(prompt.size()) ? kDecodeTol
                                                    : kPrefillTol + (std::string(ed) == "bf16" ? 0.0 : kDecodeTol);
      for (size_t i = 0; i < prompt.size(); ++i)
        EXPECT_LE(max_diff(&got.prompt[i * V], &ref.prompt[i * V], V), prefill_tol * scale_of(&ref.prompt[i * V], V))
            << "prompt position " << i;
      bool tied = false;
      for (int s = 0; s < kSteps; ++s) {
        const double tol = (s == 0 ? prefill_tol : kDecodeTol) * scale_of(ref.steps[s].data(), V);
        EXPECT_LE(max_diff(got.steps[s].data(), ref.steps[s].data(), V), tol) << "step " << s;
        tied = tied || margin_of(ref.steps[s].data(), V) <= 2 * tol;
        if (!tied) {
          EXPECT_EQ(argmax_of(got.steps[s].data(), V), toks[s]) << "greedy token " << s;
        }
      }
    }
}

// A pair's sums do not depend on the other pairs of its launch: a 20-token forward (40
// pairs at top-2) in one pass of the decode launches (the default) gives, bit for bit,
// what its slices of 8, 8 and 4 tokens give (decode launches held to 8 tokens, the
// slices on), at every prompt position and in the teacher-forced decode steps after it,
// in every format, with the fused and the grouped dispatch.
TEST_F(CudaQuantModel, AForwardInOnePassIsBitForBitItsSlices) {
  for (const char* dtype : {"fp8", "int8", "int4"})
    for (const char* dispatch : {"fused", "grouped"}) {
      SCOPED_TRACE(std::string(dtype) + " dispatch=" + dispatch);
      auto w = WeightSource::open("synthetic:micro", 11);
      const int V = w.config().vocab_size;
      std::vector<int32_t> prompt, toks;
      for (int i = 0; i < 20; ++i) prompt.push_back(3 + (i * 97) % (V - 3));
      for (int s = 0; s < kSteps; ++s) toks.push_back(5 + (s * 61) % (V - 5));
      std::vector<Logits> got;
      for (int pass : {8, 64}) {
        const cuda::ScopedSwitch pass_on(cuda::set_quant_decode_tokens, pass);
        const cuda::ScopedSwitch slices_on(cuda::set_quant_prefill_slices, pass == 8 ? 64 : 0);
        EngineContext ctx;
        ctx.weights = &w;
        ctx.backend = "cuda";
        ctx.settings = settings(dtype, "resident", dispatch);
        cuda::CudaModel m(ctx);
        got.push_back(run_model(m, prompt, toks));
      }
      EXPECT_TRUE(got[0].prompt == got[1].prompt) << "prompt logits";
      for (int s = 0; s < kSteps; ++s) EXPECT_TRUE(got[0].steps[s] == got[1].steps[s]) << "step " << s;
    }
}

// The bytes a miss moves are the quantised expert's, and the slots multiply accordingly.
TEST_F(CudaQuantModel, OffloadedLoadsCountQuantisedBytes) {
  auto w = WeightSource::open("synthetic:micro", 7);
  for (const char* dtype : {"bf16", "int4"}) {
    SCOPED_TRACE(dtype);
    profiler::Profiler prof;
    EngineContext ctx;
    ctx.weights = &w;
    ctx.backend = "cuda";
    ctx.prof = &prof;
    ctx.settings = settings(dtype, "pinned", "fused");
    ctx.settings.cache_slots = 4;  // half of the 8 (layer, expert) keys: misses every step
    cuda::CudaModel m(ctx);
    const uint64_t eb = expert_layout(w.config(), parse_quant_format(dtype, "dtype")).total_bytes;
    ASSERT_NE(m.host_store(), nullptr);
    EXPECT_EQ(m.host_store()->expert_bytes(), eb);
    std::vector<int32_t> prompt{5, 17, 29};
    GenerateOptions opt;
    opt.max_new_tokens = 4;
    opt.stop_at_eos = false;
    generate(m, prompt, opt);
    m.provider().sync_counters();
    int64_t loads = 0, bytes = 0;
    for (int l = 0; l < prof.experts.n_layers(); ++l) {
      loads += prof.experts.layer(l).loads;
      bytes += prof.experts.layer(l).bytes_moved;
    }
    ASSERT_GT(loads, 0);
    EXPECT_EQ(bytes, loads * static_cast<int64_t>(eb));
  }
}

// The quality pass's bf16 original on a device too small for it resident (Mixtral-8x7B's
// 87 GiB on an 80 GiB GPU): it runs with its experts offloaded to pinned host memory and
// gives the figures the resident original gives, and the reference says so. The budget here
// holds the int4 model and the offloaded original (21 GiB of bf16 experts in pinned host
// memory), not the bf16 one resident.
TEST_F(CudaQuantModel, QualityReferenceTooLargeForTheDeviceRunsOffloaded) {
  auto w = WeightSource::open("synthetic:mixtral-8x7b:layers=8", 11);
  const ModelConfig& c = w.config();
  const double n = static_cast<double>(c.num_hidden_layers) * c.num_local_experts;
  const double bf16 = n * static_cast<double>(expert_layout(c, QuantFormat::bf16).total_bytes);
  const double int4 = n * static_cast<double>(expert_layout(c, QuantFormat::int4).total_bytes);
  const double gib = static_cast<double>(1ull << 30);
  size_t free_b = 0, total_b = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_b, &total_b), cudaSuccess);
  EngineSettings s;
  s.expert_dtype = "int4";
  s.max_model_len = 128;
  s.max_num_batched_tokens = 64;
  const std::vector<int32_t> prompt = {1, 415, 293, 90, 285, 114, 287, 461, 75, 2, 33, 907};
  const auto whole = suites::measure_quality(w, s, "cuda", prompt);
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(whole->reference, "bf16 experts");
  // Dense weights, KV cache and workspace of this model: about 1.1 GiB. gpu_memory_utilization
  // takes no less than 0.05 (the settings' range), hence 8 layers: 21 GiB of bf16 experts.
  const double fraction = std::max(0.05, (int4 + bf16 / 4 + 1.5 * gib) / static_cast<double>(free_b));
  ASSERT_LE(fraction, 1.0);
  ASSERT_LT(fraction * static_cast<double>(free_b) + 0.5 * gib, bf16)
      << "the budget must refuse the bf16 experts resident";
  s.gpu_memory_utilization = fraction;
  const auto small = suites::measure_quality(w, s, "cuda", prompt);
  ASSERT_TRUE(small.has_value());
  EXPECT_EQ(small->reference, "bf16 experts (offloaded: too large for the device resident)");
  EXPECT_EQ(small->positions, whole->positions);
  EXPECT_EQ(small->top1_agreement, whole->top1_agreement);
  EXPECT_NEAR(small->mean_kl, whole->mean_kl, 1e-6 + 1e-3 * whole->mean_kl);
  EXPECT_GT(small->mean_kl, 0);
}

}  // namespace cuda_quant_model_test

#endif  // MOEBENCH_HAVE_CUDA
