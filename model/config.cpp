// config.cpp: see config.h.
#include "model/config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace moebench {

using nlohmann::json;

int64_t ModelConfig::attention_params() const {
  return static_cast<int64_t>(hidden_size) * (2LL * q_dim() + 2LL * kv_dim());
}
int64_t ModelConfig::family_params() const {
  int64_t n = 0;
  if (qk_norm == QkNorm::per_head) n += 2LL * head_dim;
  if (qk_norm == QkNorm::whole) n += q_dim() + kv_dim();
  if (qkv_bias) n += q_dim() + 2LL * kv_dim();
  if (shared_expert_intermediate_size > 0) n += 3LL * hidden_size * shared_expert_intermediate_size + hidden_size;
  return n;
}
int64_t ModelConfig::layer_dense_params() const {
  return attention_params() + 2LL * hidden_size + static_cast<int64_t>(num_local_experts) * hidden_size +
         family_params();
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

// A token id field: an int or a non-empty list of ints (eos_token_id lists every id that ends
// a generation); empty when the field is absent or null. The range is checked against the
// vocabulary by validate_config.
std::vector<int> get_token_ids(const json& j, const char* key, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (it->is_array() && it->empty()) fail("{}: field '{}' is [], expected an integer or a list of integers", src, key);
  std::vector<int> ids;
  for (const json& v : it->is_array() ? *it : json::array({*it})) {
    if (!v.is_number_integer())
      fail("{}: field '{}' is {}, expected an integer or a list of integers", src, key, it->dump());
    const int64_t id = v.get<int64_t>();
    if (id < 0 || id > INT32_MAX) fail("{}: field '{}' is {}, expected a token id (0 or more)", src, key, it->dump());
    ids.push_back(static_cast<int>(id));
  }
  return ids;
}

// bos_token_id: an int, or a list whose first id is used.
int get_token_id(const json& j, const char* key, const std::string& src, int def) {
  const std::vector<int> ids = get_token_ids(j, key, src);
  return ids.empty() ? def : ids[0];
}

// eos_token_id: the first id and the rest of a list.
void set_eos_ids(ModelConfig& c, std::vector<int> ids) {
  if (ids.empty()) return;
  c.eos_token_id = ids[0];
  c.more_eos_token_ids.assign(ids.begin() + 1, ids.end());
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
    {"shared_expert_intermediate_size", &ModelConfig::shared_expert_intermediate_size, 1 << 18},
    {"num_hidden_layers", &ModelConfig::num_hidden_layers, kMaxLayers},
    {"num_attention_heads", &ModelConfig::num_attention_heads, 1024},
    {"num_key_value_heads", &ModelConfig::num_key_value_heads, 1024},
    {"head_dim", &ModelConfig::head_dim, 1024},
    {"num_local_experts", &ModelConfig::num_local_experts, kMaxExperts},
    {"max_position_embeddings", &ModelConfig::max_position_embeddings, 1 << 24},
};

}  // namespace

const std::vector<std::string>& model_families() {
  static const std::vector<std::string> f = {"mixtral", "qwen3_moe", "olmoe", "qwen2_moe"};
  return f;
}

namespace {

bool get_bool(const json& j, const char* key, const std::string& src, bool def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean()) fail("{}: field '{}' is {}, expected true or false", src, key, it->dump());
  return it->get<bool>();
}

// A field the engine does not implement must hold the value it assumes (absent or null
// counts as that value): one line naming the field otherwise.
void require_value(const json& j, const char* key, const json& expected, const std::string& src, const char* why) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null() || *it == expected) return;
  fail("{}: field '{}' is {}, expected {} ({})", src, key, it->dump(), expected.dump(), why);
}

// Qwen's decoder_sparse_step / mlp_only_layers put dense MLP layers between the sparse
// ones; the engine runs every layer as MoE, so any dense layer is refused by name.
void require_all_sparse(const json& j, const std::string& src, int layers) {
  const int step = get_int(j, "decoder_sparse_step", src, false, 1);
  if (step <= 0) fail("{}: field 'decoder_sparse_step' is {}, expected a positive integer", src, step);
  std::vector<int> dense_only;
  if (auto m = j.find("mlp_only_layers"); m != j.end() && !m->is_null()) {
    if (!m->is_array()) fail("{}: field 'mlp_only_layers' is {}, expected a list of layer indices", src, m->dump());
    for (auto& v : *m) {
      if (!v.is_number_integer()) fail("{}: field 'mlp_only_layers' holds {}, expected layer indices", src, v.dump());
      dense_only.push_back(v.get<int>());
    }
  }
  for (int l = 0; l < layers; ++l) {
    const bool listed = std::find(dense_only.begin(), dense_only.end(), l) != dense_only.end();
    if (listed || (l + 1) % step != 0)
      fail("{}: layer {} is a dense MLP layer (decoder_sparse_step {}, mlp_only_layers {}); expected every layer "
           "to be sparse (dense layers are not supported)", src, l, step, j.value("mlp_only_layers", json::array()).dump());
  }
}

}  // namespace

ModelConfig config_from_json(const json& j, const std::string& src) {
  if (!j.is_object()) fail("{}: expected a JSON object at the top level", src);
  ModelConfig c;
  c.name = src;
  if (auto mt = j.find("model_type"); mt != j.end() && !mt->is_null()) {
    const auto& fam = model_families();
    if (!mt->is_string() || std::find(fam.begin(), fam.end(), mt->get<std::string>()) == fam.end())
      fail("{}: field 'model_type' is {}, expected one of \"mixtral\", \"qwen3_moe\", \"olmoe\", \"qwen2_moe\"", src,
           mt->dump());
    c.model_type = mt->get<std::string>();
  }
  const bool mixtral = c.model_type == "mixtral";
  c.vocab_size = get_int(j, "vocab_size", src, true, 0);
  c.hidden_size = get_int(j, "hidden_size", src, true, 0);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", src, true, 0);
  c.num_attention_heads = get_int(j, "num_attention_heads", src, true, 0);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", src, false, c.num_attention_heads);
  // The expert count and width: Mixtral's num_local_experts / intermediate_size; the
  // others' num_experts, with the experts' width in moe_intermediate_size (Qwen) or
  // intermediate_size (OLMoE, whose MLPs are all experts).
  // Either spelling is accepted in every family (transformers 5.17 writes Qwen3-MoE's as
  // num_local_experts); the family's own is read first.
  {
    const char* own = mixtral ? "num_local_experts" : "num_experts";
    const char* other = mixtral ? "num_experts" : "num_local_experts";
    const bool has_own = j.contains(own) && !j.at(own).is_null();
    if (!has_own && !(j.contains(other) && !j.at(other).is_null()))
      fail("{}: missing field '{}' (expected an integer; '{}' is accepted too)", src, own, other);
    c.num_local_experts = get_int(j, has_own ? own : other, src, true, 0);
  }
  if (c.model_type == "qwen3_moe" || c.model_type == "qwen2_moe") {
    c.intermediate_size = get_int(j, "moe_intermediate_size", src, true, 0);
    c.dense_intermediate_size = get_int(j, "intermediate_size", src, false, 0);
  } else {
    c.intermediate_size = get_int(j, "intermediate_size", src, true, 0);
  }
  c.num_experts_per_tok = get_int(j, "num_experts_per_tok", src, true, 0);
  int hd_default = c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  c.head_dim = get_int(j, "head_dim", src, false, hd_default);
  c.rms_norm_eps = get_float(j, "rms_norm_eps", src, false, 1e-5f);
  c.rope_theta = get_float(j, "rope_theta", src, false, 1e6f);
  if (auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object()) {
    if (rp->contains("rope_theta"))
      c.rope_theta = get_float(*rp, "rope_theta", src + ":rope_parameters", false, c.rope_theta);
    require_value(*rp, "rope_type", "default", src + ":rope_parameters", "only plain RoPE is supported");
  }
  require_value(j, "rope_scaling", nullptr, src, "only plain RoPE is supported");
  require_value(j, "hidden_act", "silu", src, "the experts are SwiGLU");
  c.max_position_embeddings = get_int(j, "max_position_embeddings", src, false, 32768);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", src, false);
  c.bos_token_id = get_token_id(j, "bos_token_id", src, 1);
  set_eos_ids(c, get_token_ids(j, "eos_token_id", src));
  if (!mixtral) {
    // Families with a norm_topk_prob switch default to the full softmax's weights.
    c.norm_topk_prob = get_bool(j, "norm_topk_prob", src, false);
    require_value(j, "attention_bias", false, src, "attention projections without bias");
    require_value(j, "use_sliding_window", false, src, "full attention only");
    require_all_sparse(j, src, c.num_hidden_layers);
  }
  if (c.model_type == "qwen3_moe") c.qk_norm = QkNorm::per_head;
  if (c.model_type == "olmoe") {
    c.qk_norm = QkNorm::whole;
    require_value(j, "clip_qkv", nullptr, src, "no q/k/v clipping");
  }
  if (c.model_type == "qwen2_moe") {
    c.qkv_bias = get_bool(j, "qkv_bias", src, true);
    c.shared_expert_intermediate_size = get_int(j, "shared_expert_intermediate_size", src, true, 0);
    if (c.shared_expert_intermediate_size <= 0)
      fail("{}: field 'shared_expert_intermediate_size' is {}, expected a positive integer", src,
           c.shared_expert_intermediate_size);
  }
  validate_config(c, src);
  return c;
}

// The config.json name of a field in c's family (errors name what the file says).
static std::string field_name(const ModelConfig& c, const std::string& key) {
  if (c.model_type == "mixtral") return key;
  if (key == "num_local_experts") return "num_experts";
  if (key == "intermediate_size" && (c.model_type == "qwen3_moe" || c.model_type == "qwen2_moe"))
    return "moe_intermediate_size";
  return key;
}

void validate_config(const ModelConfig& c, const std::string& src) {
  auto positive = [&](const char* k, int v) {
    if (v <= 0) fail("{}: field '{}' is {}, expected a positive integer", src, field_name(c, k), v);
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
    if (c.*l.field > l.max)
      fail("{}: field '{}' is {}, expected at most {}", src, field_name(c, l.key), c.*l.field, l.max);
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
  for (int id : c.more_eos_token_ids)
    if (id < 0 || id >= c.vocab_size)
      fail("{}: field 'eos_token_id' lists {}, expected token ids in [0, vocab_size {})", src, id, c.vocab_size);
}

namespace {
// A checkpoint's JSON file (config.json, generation_config.json); `expected` names it in
// the error when it cannot be opened.
json read_json_file(const std::string& path, const char* expected) {
  std::ifstream f(path);
  if (!f) fail("{}: cannot open (expected {})", path, expected);
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", path, e.what());
  }
}
}  // namespace

void apply_generation_config(ModelConfig& c, const std::string& path) {
  const json j = read_json_file(path, "an HF generation_config.json");
  if (!j.is_object()) fail("{}: expected a JSON object, found {}", path, j.type_name());
  ModelConfig g = c;
  set_eos_ids(g, get_token_ids(j, "eos_token_id", path));
  validate_config(g, path);
  c = g;
}

ModelConfig load_config(const std::string& path) { return config_from_json(read_json_file(path, "an HF config.json"), path); }

namespace {
json eos_json(const ModelConfig& c) {
  if (c.more_eos_token_ids.empty()) return c.eos_token_id;
  json ids = json::array({c.eos_token_id});
  for (int id : c.more_eos_token_ids) ids.push_back(id);
  return ids;
}
}  // namespace

json config_to_json(const ModelConfig& c) {
  json j{{"model_type", c.model_type},
         {"vocab_size", c.vocab_size},
         {"hidden_size", c.hidden_size},
         {"num_hidden_layers", c.num_hidden_layers},
         {"num_attention_heads", c.num_attention_heads},
         {"num_key_value_heads", c.num_key_value_heads},
         {"head_dim", c.head_dim},
         {"num_experts_per_tok", c.num_experts_per_tok},
         {"rms_norm_eps", c.rms_norm_eps},
         {"rope_theta", c.rope_theta},
         {"max_position_embeddings", c.max_position_embeddings},
         {"tie_word_embeddings", c.tie_word_embeddings},
         {"bos_token_id", c.bos_token_id},
         {"eos_token_id", eos_json(c)},
         {"hidden_act", "silu"},
         {"torch_dtype", "bfloat16"}};
  if (c.model_type == "mixtral") {
    j["architectures"] = {"MixtralForCausalLM"};
    j["num_local_experts"] = c.num_local_experts;
    j["intermediate_size"] = c.intermediate_size;
    return j;
  }
  j["num_experts"] = c.num_local_experts;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["attention_bias"] = false;
  if (c.model_type == "olmoe") {
    j["architectures"] = {"OlmoeForCausalLM"};
    j["intermediate_size"] = c.intermediate_size;
    j["clip_qkv"] = nullptr;
    return j;
  }
  j["architectures"] = {c.model_type == "qwen3_moe" ? "Qwen3MoeForCausalLM" : "Qwen2MoeForCausalLM"};
  j["moe_intermediate_size"] = c.intermediate_size;
  j["intermediate_size"] = c.dense_intermediate_size > 0 ? c.dense_intermediate_size : c.intermediate_size;
  j["decoder_sparse_step"] = 1;
  j["mlp_only_layers"] = json::array();
  j["use_sliding_window"] = false;
  if (c.model_type == "qwen2_moe") {
    j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
    j["qkv_bias"] = c.qkv_bias;
  }
  return j;
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
// The family fields of a preset: Mixtral's renormalised top-k and no extras, or one of
// the other families with its own (norm_topk_prob as the real model's config.json).
ModelConfig family(ModelConfig c, const char* type, bool norm_topk, int head_dim, int shared_inter = 0,
                   int dense_inter = 0) {
  c.model_type = type;
  c.norm_topk_prob = norm_topk;
  if (head_dim > 0) c.head_dim = head_dim;
  const std::string t = type;
  c.qk_norm = t == "qwen3_moe" ? QkNorm::per_head : t == "olmoe" ? QkNorm::whole : QkNorm::none;
  c.qkv_bias = t == "qwen2_moe";
  c.shared_expert_intermediate_size = shared_inter;
  c.dense_intermediate_size = dense_inter;
  return c;
}
ModelConfig with_tokens(ModelConfig c, float eps, float theta, int bos, int eos) {
  c.rms_norm_eps = eps;
  c.rope_theta = theta;
  c.bos_token_id = bos;
  c.eos_token_id = eos;
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
      // Mixtral-8x22B-v0.1: 56 layers, 8 x top-2, vocabulary 32768.
      {"mixtral-8x22b", make("mixtral-8x22b", 32768, 6144, 16384, 56, 48, 8, 8, 2, 65536)},
      // Qwen3-30B-A3B: 128 experts of width 768, top-8 renormalised, per-head q/k norm,
      // head_dim 128 beside hidden 2048 / 32 heads.
      {"qwen3-30b-a3b", with_tokens(family(make("qwen3-30b-a3b", 151936, 2048, 768, 48, 32, 4, 128, 8, 40960),
                                           "qwen3_moe", true, 128, 0, 6144),
                                    1e-6f, 1e6f, 151643, 151645)},
      // OLMoE-1B-7B-0924: 64 experts of width 1024, top-8 without renormalisation, q/k
      // norm over the whole projections.
      {"olmoe-1b-7b", with_tokens(family(make("olmoe-1b-7b", 50304, 2048, 1024, 16, 16, 16, 64, 8, 4096), "olmoe",
                                         false, 0),
                                  1e-5f, 1e4f, 1, 50279)},
      // Qwen1.5-MoE-A2.7B: 60 experts of width 1408, top-4 without renormalisation, a
      // shared expert of width 5632 behind a sigmoid gate, q/k/v bias.
      {"qwen2-moe-a2.7b", with_tokens(family(make("qwen2-moe-a2.7b", 151936, 2048, 1408, 24, 16, 16, 60, 4, 8192),
                                             "qwen2_moe", false, 0, 5632, 5632),
                                      1e-6f, 1e6f, 151643, 151643)},
      // Tiny random shapes of each family: many small experts, top-4 of 16, head_dim
      // unlike hidden / heads where the family allows it; Mistral's vocabulary size, so
      // text prompts (the embedded tokenizer) run on them.
      {"tiny-qwen3", family(make("tiny-qwen3", 32000, 64, 32, 2, 4, 2, 16, 4, 512), "qwen3_moe", true, 32, 0, 128)},
      {"tiny-olmoe", family(make("tiny-olmoe", 32000, 64, 32, 2, 4, 2, 16, 4, 512), "olmoe", false, 0)},
      {"tiny-qwen2-moe",
       family(make("tiny-qwen2-moe", 32000, 64, 32, 2, 4, 2, 16, 4, 512), "qwen2_moe", false, 0, 96, 128)},
  };
  return p;
}
}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> n;
  for (auto& p : presets()) n.push_back(p.name);
  return n;
}

std::string preset_list(const char* sep) {
  std::string all;
  for (auto& p : presets()) all += (all.empty() ? "" : sep) + std::string(p.name);
  return all;
}

ModelConfig preset_config(const std::string& name) {
  for (auto& p : presets())
    if (name == p.name) return p.cfg;
  fail("unknown preset '{}', expected one of {}", name, preset_list());
}

}  // namespace moebench
