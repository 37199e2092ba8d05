// quality.h: what quantised experts (expert_dtype) and attention projections
// (weight_dtype) cost in quality. A model's next-token distributions over the
// teacher-forced positions of a prompt (one forward over the prompt: position i predicts
// token i + 1 from the true tokens 0..i) are compared with those of the same model all
// in bf16: the fraction of positions whose top-1
// token agrees and the mean KL(p_bf16 || p_quantised), in nats.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/model.h"
#include "model/settings.h"
#include "engine/weight_source.h"
#include "reports/results.h"

namespace moebench::suites {

// Compares next-token logits (positions x vocab, row-major) with a reference's.
reports::Quality compare_next_token(const float* reference, const float* logits, int positions, int vocab,
                                    const std::string& reference_name);

// The logits of every position of `prompt`, from a freshly reset model (reset again after).
std::vector<float> prompt_logits(Model& m, const std::vector<int32_t>& prompt);

// The quality pass's bf16 original: create(ctx) as given (its experts resident); on the CUDA
// backend, where that fails (a device too small for it), once more with its experts offloaded
// to pinned host memory (expert_tier=pinned: every tier computes the same logits), and
// *offloaded then true. A second failure fails naming both; on the CPU backend the first
// failure is rethrown.
using ModelFactory = std::function<std::unique_ptr<Model>(const EngineContext&)>;
std::unique_ptr<Model> reference_model(EngineContext ctx, const ModelFactory& create, bool* offloaded);

// The quality of a case whose experts or attention projections run in a quantised format: two models of its
// weights on its backend compared over `prompt`: the quantised one with the case's own
// settings (tier, budget; on CUDA an offloaded case reuses the host store its model
// filled), and the bf16 original resident with the device's whole free memory (on a GPU
// too small for it, with its experts offloaded to pinned host memory: the reference then
// says "offloaded"). The
// tier, cache and MoE strategy do not change what is computed, and the case's own
// model is not touched (the runner frees it first when it can). nullopt when both run in
// bf16, or when the weights store either quantised (a quantised checkpoint has no bf16
// original to compare with; synthetic models do: the same values before quantisation).
std::optional<reports::Quality> measure_quality(const WeightSource& w, const EngineSettings& s, const std::string& backend,
                                                const std::vector<int32_t>& prompt);

}  // namespace moebench::suites
