// quality.cpp: see quality.h.
#include "suites/quality.h"

#include <cmath>
#include <memory>

#include "engine/engine.h"
#include "common/error.h"
#include "common/log.h"

namespace moebench::suites {

reports::Quality compare_next_token(const float* reference, const float* logits, int positions, int vocab,
                                    const std::string& reference_name) {
  reports::Quality q;
  q.reference = reference_name;
  q.positions = positions;
  if (positions <= 0 || vocab <= 0) fail("quality: {} positions of {} logits: nothing to compare", positions, vocab);
  int agree = 0;
  double kl_sum = 0;
  for (int i = 0; i < positions; ++i) {
    const float* p = reference + static_cast<size_t>(i) * vocab;
    const float* r = logits + static_cast<size_t>(i) * vocab;
    int ap = 0, ar = 0;
    for (int v = 1; v < vocab; ++v) {
      if (p[v] > p[ap]) ap = v;
      if (r[v] > r[ar]) ar = v;
    }
    agree += ap == ar;
    // log-softmax of both, then sum p_ref * (log p_ref - log p).
    double zp = 0, zr = 0;
    for (int v = 0; v < vocab; ++v) {
      zp += std::exp(static_cast<double>(p[v]) - p[ap]);
      zr += std::exp(static_cast<double>(r[v]) - r[ar]);
    }
    const double lzp = std::log(zp) + p[ap], lzr = std::log(zr) + r[ar];
    double kl = 0;
    for (int v = 0; v < vocab; ++v) {
      const double lp = p[v] - lzp, lr = r[v] - lzr;
      kl += std::exp(lp) * (lp - lr);
    }
    kl_sum += std::max(0.0, kl);  // >= 0 up to rounding
  }
  q.top1_agreement = static_cast<double>(agree) / positions;
  q.mean_kl = kl_sum / positions;
  return q;
}

std::vector<float> prompt_logits(Model& m, const std::vector<int32_t>& prompt) {
  const int n = static_cast<int>(prompt.size()), V = m.config().vocab_size;
  std::vector<float> all(static_cast<size_t>(n) * V), last(V);
  m.reset();
  m.forward(prompt.data(), n, 0, last.data(), all.data());
  m.reset();
  return all;
}

std::unique_ptr<Model> reference_model(EngineContext ctx, const ModelFactory& create, bool* offloaded) {
  *offloaded = false;
  try {
    return create(ctx);
  } catch (const Error& e) {
    // A device too small for the bf16 original resident (Mixtral-8x7B's 87 GiB on an
    // 80 GiB GPU) runs it with its experts offloaded to pinned host memory: every tier
    // computes the same logits, only slower. The CPU backend has no such tier.
    if (ctx.backend != "cuda") throw;
    log::warn("quality: the bf16 original does not load resident ({}); running it with its experts offloaded "
              "(expert_tier=pinned), which fills a bf16 host store and runs at the link's speed (--no-quality skips "
              "the quality pass)",
              e.what());
    ctx.settings.expert_tier = "pinned";
    try {
      auto m = create(ctx);
      *offloaded = true;
      return m;
    } catch (const Error& e2) {
      fail("quality: the bf16 original loads neither resident ({}) nor with its experts offloaded ({})", e.what(),
           e2.what());
    }
  }
}

std::optional<reports::Quality> measure_quality(const WeightSource& w, const EngineSettings& s, const std::string& backend,
                                                const std::vector<int32_t>& prompt) {
  const QuantFormat f = resolve_expert_format(s.expert_dtype, w), a = resolve_weight_format(s.weight_dtype, w);
  if (f == QuantFormat::bf16 && a == QuantFormat::bf16) return std::nullopt;
  if (w.expert_format() != QuantFormat::bf16 && !w.is_synthetic()) {
    log::info("quality: {} stores its experts as {}; there is no bf16 original to compare with", w.describe(),
              quant_format_name(w.expert_format()));
    return std::nullopt;
  }
  if (w.attention_format() != QuantFormat::bf16) {
    log::info("quality: {} stores its attention projections as {}; there is no bf16 original to compare with",
              w.describe(), quant_format_name(w.attention_format()));
    return std::nullopt;
  }
  // The bf16 original: the same weights (a synthetic model before quantisation).
  const WeightSource original =
      w.is_synthetic() ? WeightSource::synthetic(w.config(), w.seed(), w.synth_dtype(), QuantFormat::bf16) : w;
  // The quantised model as the case runs it (its tier and budget: on CUDA an offloaded
  // case reuses the host store its own model filled); every tier computes the same
  // logits. The bf16 original runs resident with the device's whole free memory, so
  // a budget sized for quantised experts does not refuse it and no bf16 host store
  // replaces the quantised one; on a GPU too small for it, offloaded (reference_model).
  EngineContext ctx;
  ctx.backend = backend;
  ctx.settings = s;
  ctx.weights = &w;
  std::vector<float> got;
  {
    auto m = create_model(ctx);
    got = prompt_logits(*m, prompt);
  }
  ctx.weights = &original;
  ctx.settings.expert_dtype = "bf16";
  ctx.settings.weight_dtype = "bf16";
  ctx.settings.expert_tier = "resident";
  ctx.settings.cache_slots = 0;
  ctx.settings.gpu_mem_budget.clear();
  std::string reference = f == QuantFormat::bf16   ? "bf16 attention projections"
                          : a == QuantFormat::bf16 ? "bf16 experts"
                                                   : "bf16 experts and attention projections";
  bool offloaded = false;
  auto m = reference_model(ctx, create_model, &offloaded);
  if (offloaded) reference += " (offloaded: too large for the device resident)";
  const std::vector<float> ref = prompt_logits(*m, prompt);
  m.reset();
  return compare_next_token(ref.data(), got.data(), static_cast<int>(prompt.size()), w.config().vocab_size,
                            reference);
}

}  // namespace moebench::suites
