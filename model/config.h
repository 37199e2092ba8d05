// config.h: the Mixtral model configuration, parsed from an HF config.json or
// taken from a named preset (mixtral-8x7b, tiny, ...).
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace moebench {

struct ModelConfig {
  std::string name = "custom";       // preset name or the checkpoint folder
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;          // per expert
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;                   // hidden_size / num_attention_heads unless given
  int num_local_experts = 0;
  int num_experts_per_tok = 0;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 1e6f;
  int max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  int bos_token_id = 1;
  int eos_token_id = 2;

  int q_dim() const { return num_attention_heads * head_dim; }
  int kv_dim() const { return num_key_value_heads * head_dim; }
  // Parameter counts (elements) of the parts of the model.
  int64_t expert_params() const { return 3LL * hidden_size * intermediate_size; }
  int64_t attention_params() const;
  int64_t layer_dense_params() const;  // attention + norms + router
  int64_t total_params() const;
};

// Parses an HF config.json object; `source` names the file in errors.
// Missing or mistyped required fields throw Error naming the field.
ModelConfig config_from_json(const nlohmann::json& j, const std::string& source);
ModelConfig load_config(const std::string& path);  // reads and parses config.json
nlohmann::json config_to_json(const ModelConfig& c);  // HF layout (model_type mixtral)
// Checks internal consistency (divisibility, top-k <= experts, ...).
void validate_config(const ModelConfig& c, const std::string& source);

// Named shapes. `mixtral-8x7b` is the real Mixtral-8x7B-v0.1 shape.
std::vector<std::string> preset_names();
ModelConfig preset_config(const std::string& name);  // throws Error listing the presets

}  // namespace moebench
