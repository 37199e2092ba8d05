// config.h: the model configuration of a Mixtral-class MoE family (mixtral, qwen3_moe,
// olmoe, qwen2_moe), parsed from an HF config.json or taken from a named preset
// (mixtral-8x7b, qwen3-30b-a3b, tiny, ...). What each family changes is a field here:
// the router's renormalisation, q/k RMSNorm, q/k/v bias, a gated shared expert.
#pragma once
#include <algorithm>
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace moebench {

// Where q/k RMSNorm sits: none (Mixtral, Qwen2-MoE), over each head's head_dim values
// (Qwen3-MoE), or over the whole q and k projections before the head split (OLMoE).
enum class QkNorm { none, per_head, whole };

// The largest layer and expert counts moebench takes, from a config.json and wherever
// else they are read or asked for (routing traces, make-trace): beyond every published
// MoE model, and small enough that a table per (layer, expert) stays small.
inline constexpr int kMaxLayers = 1024;
inline constexpr int kMaxExperts = 256;

struct ModelConfig {
  std::string name = "custom";       // preset name or the checkpoint folder
  std::string model_type = "mixtral";  // mixtral | qwen3_moe | olmoe | qwen2_moe
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
  // The rest of an eos_token_id list (config.json or generation_config.json: Qwen3's
  // [151645, 151643]); generation stops at any of them, as transformers' does.
  std::vector<int> more_eos_token_ids;
  bool is_eos(int id) const {
    return id == eos_token_id || std::find(more_eos_token_ids.begin(), more_eos_token_ids.end(), id) != more_eos_token_ids.end();
  }
  // Family fields (Mixtral's values by default).
  bool norm_topk_prob = true;   // top-k weights renormalised to sum 1 (else: the full softmax's)
  QkNorm qk_norm = QkNorm::none;
  bool qkv_bias = false;        // q/k/v projections carry a bias (Qwen2-MoE)
  int shared_expert_intermediate_size = 0;  // a SwiGLU shared expert with a sigmoid gate; 0: none
  int dense_intermediate_size = 0;  // the dense MLP's width a family's config names (unused: every layer is sparse)

  int q_dim() const { return num_attention_heads * head_dim; }
  int kv_dim() const { return num_key_value_heads * head_dim; }
  // Parameter counts (elements) of the parts of the model.
  int64_t expert_params() const { return 3LL * hidden_size * intermediate_size; }
  // q/k norm weights, q/k/v biases, the shared expert and its gate (read by every token).
  int64_t family_params() const;
  int64_t attention_params() const;
  int64_t layer_dense_params() const;  // attention + norms + router
  int64_t total_params() const;
};

// Parses an HF config.json object; `source` names the file in errors.
// Missing or mistyped required fields throw Error naming the field.
ModelConfig config_from_json(const nlohmann::json& j, const std::string& source);
ModelConfig load_config(const std::string& path);  // reads and parses config.json
nlohmann::json config_to_json(const ModelConfig& c);  // HF layout of c.model_type
// The families config.json may name (model_type values).
const std::vector<std::string>& model_families();
// Checks internal consistency (divisibility, top-k <= experts, ...).
void validate_config(const ModelConfig& c, const std::string& source);
// A checkpoint's generation_config.json: its eos_token_id (an int or a list), when given,
// replaces config.json's, as transformers' generate takes it. Errors name the file and field.
void apply_generation_config(ModelConfig& c, const std::string& path);

// Named shapes. `mixtral-8x7b`, `mixtral-8x22b`, `qwen3-30b-a3b`, `olmoe-1b-7b` and
// `qwen2-moe-a2.7b` (Qwen1.5-MoE-A2.7B) are the real models' shapes; `tiny-*` are small
// random-weight shapes of each family for tests.
std::vector<std::string> preset_names();
// The names joined by `sep` ("tiny|micro|..."), for help texts and messages.
std::string preset_list(const char* sep = "|");
ModelConfig preset_config(const std::string& name);  // throws Error listing the presets

}  // namespace moebench
