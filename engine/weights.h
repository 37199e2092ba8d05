// weights.h: the HF Mixtral tensor layout — one table of (name, shape, init) that
// drives the loader's checks, the synthetic checkpoint writer and in-place generation.
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
}  // namespace names

// Every tensor of the model in file order: embed, layers (attention, norms, gate,
// experts), final norm, lm_head (absent when tie_word_embeddings).
std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c);
// The spec of one named tensor (throws Error if the name is not part of the model).
TensorSpec tensor_spec(const ModelConfig& c, const std::string& name);
std::string shape_str(const std::vector<int64_t>& s);

}  // namespace moebench
