// config.cpp: see config.h.
#include "model/config.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace moebench {

using nlohmann::json;

int64_t ModelConfig::attention_params() const {
  return static_cast<int64_t>(hidden_size) * (2LL * q_dim() + 2LL * kv_dim());
}
int64_t ModelConfig::layer_dense_params() const {
  return attention_params() + 2LL * hidden_size + static_cast<int64_t>(num_local_experts) * hidden_size;
}
int64_t ModelConfig::total_params() const {
  int64_t per_layer = layer_dense_params() + num_local_experts * expert_params();
  int64_t emb = static_cast<int64_t>(vocab_size) * hidden_size;
  return num_hidden_layers * per_layer + emb * (tie_word_embeddings ? 1 : 2) + hidden_size;
}

namespace {

int get_int(const json& j, const char* key, const std::string& src, bool required, int def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) fail("{}: missing field '{}' (expected an integer)", src, key);
    return def;
  }
  if (!it->is_number_integer()) fail("{}: field '{}' is {}, expected an integer", src, key, it->dump());
  int64_t v = it->get<int64_t>();
  if (v < 0 || v > (1LL << 31) - 1) fail("{}: field '{}' is {}, expected a non-negative 32-bit integer", src, key, v);
  return static_cast<int>(v);
}

float get_float(const json& j, const char* key, const std::string& src, bool required, float def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) fail("{}: missing field '{}' (expected a number)", src, key);
    return def;
  }
  if (!it->is_number()) fail("{}: field '{}' is {}, expected a number", src, key, it->dump());
  return it->get<float>();
}

// eos_token_id may be an int or a list of ints (first one is used). The range is
// checked against the vocabulary by validate_config.
int get_token_id(const json& j, const char* key, const std::string& src, int def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  const json* v = it->is_array() && !it->empty() ? &(*it)[0] : &*it;
  if (!v->is_number_integer())
    fail("{}: field '{}' is {}, expected an integer or a list of integers", src, key, it->dump());
  const int64_t id = v->get<int64_t>();
  if (id < 0 || id > INT32_MAX) fail("{}: field '{}' is {}, expected a token id (0 or more)", src, key, it->dump());
  return static_cast<int>(id);
}

// Upper limits of the shape fields: far above any Mixtral-class model (Mixtral-8x22B:
// 56 layers, hidden 6144, 32768 vocab), low enough that a typo or a corrupt config is
// this one-line error instead of gigabytes of tensor specs and buffers.
struct Limit {
  const char* key;
  int ModelConfig::*field;
  int max;
};
constexpr Limit kLimits[] = {
    {"vocab_size", &ModelConfig::vocab_size, 1 << 22},
    {"hidden_size", &ModelConfig::hidden_size, 1 << 16},
    {"intermediate_size", &ModelConfig::intermediate_size, 1 << 18},
    {"num_hidden_layers", &ModelConfig::num_hidden_layers, 1024},
    {"num_attention_heads", &ModelConfig::num_attention_heads, 1024},
    {"num_key_value_heads", &ModelConfig::num_key_value_heads, 1024},
    {"head_dim", &ModelConfig::head_dim, 1024},
    {"num_local_experts", &ModelConfig::num_local_experts, 256},
    {"max_position_embeddings", &ModelConfig::max_position_embeddings, 1 << 24},
};

}  // namespace

ModelConfig config_from_json(const json& j, const std::string& src) {
  if (!j.is_object()) fail("{}: expected a JSON object at the top level", src);
  if (auto mt = j.find("model_type"); mt != j.end() && mt->is_string() && *mt != "mixtral")
    fail("{}: field 'model_type' is \"{}\", expected \"mixtral\"", src, mt->get<std::string>());
  ModelConfig c;
  c.name = src;
  c.vocab_size = get_int(j, "vocab_size", src, true, 0);
  c.hidden_size = get_int(j, "hidden_size", src, true, 0);
  c.intermediate_size = get_int(j, "intermediate_size", src, true, 0);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", src, true, 0);
  c.num_attention_heads = get_int(j, "num_attention_heads", src, true, 0);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", src, false, c.num_attention_heads);
  c.num_local_experts = get_int(j, "num_local_experts", src, true, 0);
  c.num_experts_per_tok = get_int(j, "num_experts_per_tok", src, true, 0);
  int hd_default = c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  c.head_dim = get_int(j, "head_dim", src, false, hd_default);
  c.rms_norm_eps = get_float(j, "rms_norm_eps", src, false, 1e-5f);
  c.rope_theta = get_float(j, "rope_theta", src, false, 1e6f);
  if (auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object() && rp->contains("rope_theta"))
    c.rope_theta = get_float(*rp, "rope_theta", src + ":rope_parameters", false, c.rope_theta);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", src, false, 32768);
  if (auto t = j.find("tie_word_embeddings"); t != j.end() && !t->is_null()) {
    if (!t->is_boolean()) fail("{}: field 'tie_word_embeddings' is {}, expected true or false", src, t->dump());
    c.tie_word_embeddings = t->get<bool>();
  }
  c.bos_token_id = get_token_id(j, "bos_token_id", src, 1);
  c.eos_token_id = get_token_id(j, "eos_token_id", src, 2);
  validate_config(c, src);
  return c;
}

void validate_config(const ModelConfig& c, const std::string& src) {
  auto positive = [&](const char* k, int v) {
    if (v <= 0) fail("{}: field '{}' is {}, expected a positive integer", src, k, v);
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("intermediate_size", c.intermediate_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("num_key_value_heads", c.num_key_value_heads);
  positive("head_dim", c.head_dim);
  positive("num_local_experts", c.num_local_experts);
  positive("num_experts_per_tok", c.num_experts_per_tok);
  positive("max_position_embeddings", c.max_position_embeddings);
  for (const Limit& l : kLimits)
    if (c.*l.field > l.max) fail("{}: field '{}' is {}, expected at most {}", src, l.key, c.*l.field, l.max);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", src, c.num_attention_heads,
         c.num_key_value_heads);
  if (c.head_dim % 2 != 0) fail("{}: head_dim {} is odd, expected an even value for RoPE", src, c.head_dim);
  if (c.num_experts_per_tok > c.num_local_experts)
    fail("{}: num_experts_per_tok {} exceeds num_local_experts {}", src, c.num_experts_per_tok, c.num_local_experts);
  if (!(c.rms_norm_eps > 0)) fail("{}: rms_norm_eps {} must be positive", src, c.rms_norm_eps);
  if (!(c.rope_theta > 0)) fail("{}: rope_theta {} must be positive", src, c.rope_theta);
  if (c.bos_token_id < 0 || c.bos_token_id >= c.vocab_size)
    fail("{}: field 'bos_token_id' is {}, expected a token id in [0, vocab_size {})", src, c.bos_token_id, c.vocab_size);
  if (c.eos_token_id < 0 || c.eos_token_id >= c.vocab_size)
    fail("{}: field 'eos_token_id' is {}, expected a token id in [0, vocab_size {})", src, c.eos_token_id, c.vocab_size);
}

ModelConfig load_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail("{}: cannot open (expected an HF config.json)", path);
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", path, e.what());
  }
  return config_from_json(j, path);
}

json config_to_json(const ModelConfig& c) {
  return json{{"architectures", {"MixtralForCausalLM"}},
              {"model_type", "mixtral"},
              {"vocab_size", c.vocab_size},
              {"hidden_size", c.hidden_size},
              {"intermediate_size", c.intermediate_size},
              {"num_hidden_layers", c.num_hidden_layers},
              {"num_attention_heads", c.num_attention_heads},
              {"num_key_value_heads", c.num_key_value_heads},
              {"head_dim", c.head_dim},
              {"num_local_experts", c.num_local_experts},
              {"num_experts_per_tok", c.num_experts_per_tok},
              {"rms_norm_eps", c.rms_norm_eps},
              {"rope_theta", c.rope_theta},
              {"max_position_embeddings", c.max_position_embeddings},
              {"tie_word_embeddings", c.tie_word_embeddings},
              {"bos_token_id", c.bos_token_id},
              {"eos_token_id", c.eos_token_id},
              {"hidden_act", "silu"},
              {"torch_dtype", "bfloat16"}};
}

namespace {
struct Preset {
  const char* name;
  ModelConfig cfg;
};
ModelConfig make(const char* name, int vocab, int hidden, int inter, int layers, int heads, int kv, int experts,
                 int topk, int max_pos) {
  ModelConfig c;
  c.name = name;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv;
  c.head_dim = hidden / heads;
  c.num_local_experts = experts;
  c.num_experts_per_tok = topk;
  c.max_position_embeddings = max_pos;
  c.rope_theta = 1e6f;
  c.rms_norm_eps = 1e-5f;
  return c;
}
const std::vector<Preset>& presets() {
  static const std::vector<Preset> p = {
      // The real Mixtral-8x7B-v0.1 shape.
      {"mixtral-8x7b", make("mixtral-8x7b", 32000, 4096, 14336, 32, 32, 8, 8, 2, 32768)},
      // Small shapes for tests and CPU runs. `tiny` is the embedded default.
      {"tiny", make("tiny", 32000, 128, 256, 4, 4, 2, 8, 2, 2048)},
      {"micro", make("micro", 512, 64, 128, 2, 4, 2, 4, 2, 512)},
      {"small", make("small", 32000, 512, 1024, 8, 8, 2, 8, 2, 4096)},
  };
  return p;
}
}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> n;
  for (auto& p : presets()) n.push_back(p.name);
  return n;
}

ModelConfig preset_config(const std::string& name) {
  for (auto& p : presets())
    if (name == p.name) return p.cfg;
  std::string all;
  for (auto& p : presets()) all += (all.empty() ? "" : "|") + std::string(p.name);
  fail("unknown preset '{}', expected one of {}", name, all);
}

}  // namespace moebench
