// weights.h: the tensor layout of a model — one table of (name, shape, init) that
// drives the loader's checks, the synthetic checkpoint writer and in-place generation.
// Names are the engine's internal ones: Mixtral's HF names, plus the HF names of what
// other families add (q/k norm, q/k/v bias, shared expert). Each family's checkpoint
// names map onto them through one table of name fragments (hf_tensor_name).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace moebench {

struct TensorSpec {
  std::string name;            // HF name, e.g. model.layers.3.block_sparse_moe.experts.5.w1.weight
  std::vector<int64_t> shape;  // row-major, PyTorch order
  float init_scale = 0;        // synthetic init: fma(scale, u[-1,1), offset)
  float init_offset = 0;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

namespace names {
std::string embed();                 // model.embed_tokens.weight
std::string final_norm();            // model.norm.weight
std::string lm_head();               // lm_head.weight
std::string layer(int l, const char* suffix);  // model.layers.{l}.{suffix}
std::string expert(int l, int e, const char* w);  // ...block_sparse_moe.experts.{e}.{w}.weight (w = w1|w2|w3)
// An expert's three matrices in slot order (w1 | w3 | w2: gate, up, down), as stores lay them out.
inline constexpr const char* kExpertSlotOrder[3] = {"w1", "w3", "w2"};
}  // namespace names

// The checkpoint name of an internal tensor name (or of a prefix/suffix-extended one,
// e.g. a quantised part "...experts.3.w1.weight_scale") in c's family: Mixtral's names
// are the internal ones; Qwen3-MoE, OLMoE and Qwen2-MoE keep their MoE block under
// "mlp." with experts gate_proj / down_proj / up_proj for w1 / w2 / w3.
std::string hf_tensor_name(const ModelConfig& c, const std::string& internal);
struct NameRule {
  const char* internal;  // fragment of the internal name
  const char* hf;        // what it is called in the family's checkpoints
};
const std::vector<NameRule>& family_name_rules(const std::string& model_type);

// Every tensor of the model in file order: embed, layers (attention and its family
// extras, norms, gate, experts, shared expert), final norm, lm_head (absent when
// tie_word_embeddings).
std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c);
// The spec of one named tensor (throws Error if the name is not part of the model).
TensorSpec tensor_spec(const ModelConfig& c, const std::string& name);
std::string shape_str(const std::vector<int64_t>& s);

}  // namespace moebench
