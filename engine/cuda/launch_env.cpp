// launch_env.cpp: see launch_env.h.
#include "engine/cuda/launch_env.h"

#include <atomic>
#include <string>

#include "common/env.h"
#include "common/error.h"

namespace moebench::cuda {

int env_choice(const char* name, std::initializer_list<int> allowed, int unset) {
  return env_choice(name, std::span<const int>(allowed.begin(), allowed.size()), unset);
}

int env_choice(const char* name, std::span<const int> allowed, int unset) {
  const std::string v = env_str(name);
  if (v.empty()) return unset;
  std::string list;
  for (int a : allowed) {
    if (v == std::to_string(a)) return a;
    list += (list.empty() ? "" : ", ") + std::to_string(a);
  }
  fail("{}={}: expected one of {}", name, v, list);
}

int EnvChoice::get() {
  int v = value_.load(std::memory_order_relaxed);
  if (v < 0) {
    v = env_choice(name_, allowed_, unset_);
    value_.store(v, std::memory_order_relaxed);
  }
  return v;
}

int gemv_prefetch_from_env() {
  static const int pf = env_choice("MOEBENCH_GEMV_PREFETCH", {0, 2, 4}, 0);
  return pf;
}

int gemv_rows_from_env() {
  static const int r = env_choice("MOEBENCH_GEMV_ROWS", {0, 1, 2, 4}, 0);
  return r;
}

int qkv_rows_from_env() {
  static const int r = env_choice("MOEBENCH_QKV_ROWS", {0, 1, 2, 4}, 0);
  return r;
}

bool side_prefetch_from_env() {
  static const bool on = env_choice("MOEBENCH_SIDE_PREFETCH", {1, 0}, 1) == 1;
  return on;
}

unsigned qkv_prefetch_bytes_from_env() {
  static const unsigned b = 1024u * static_cast<unsigned>(env_choice("MOEBENCH_QKV_PREFETCH_KB", {2, 4, 8}, 2));
  return b;
}

bool down_early_trigger_from_env() {
  static const bool early = env_choice("MOEBENCH_DOWN_TRIGGER", {0, 1}, 0) == 1;
  return early;
}

int l2_prefetch_warps_from_env() {
  static const int w = env_choice("MOEBENCH_L2_PREFETCH_WARPS", {1, 4}, 4);
  return w;
}

int gate_up_rows_from_env() {
  static const int r = env_choice("MOEBENCH_GATEUP_ROWS", {0, 1, 2}, 0);
  return r;
}

int down_rows_from_env() {
  static const int r = env_choice("MOEBENCH_DOWN_ROWS", {0, 1, 2}, 0);
  return r;
}

bool down_preload_from_env() {
  static const bool on = env_choice("MOEBENCH_DOWN_PRELOAD", {0, 1}, 0) == 1;
  return on;
}

bool step_graph_from_env() {
  static const bool on = env_choice("MOEBENCH_STEP_GRAPH", {0, 1}, 1) == 1;
  return on;
}

bool attention_merge_in_last_split_from_env() {
  static const bool on = env_choice("MOEBENCH_ATTN_MERGE_HERE", {0, 1}, 0) == 1;
  return on;
}

bool rope_in_attention_from_env() {
  static const bool on = env_choice("MOEBENCH_ROPE_IN_ATTENTION", {0, 1}, 1) == 1;
  return on;
}

namespace {
constexpr int kHeadsPerBlock[] = {0, 1, 2, 4};
EnvChoice g_attention_hpb{"MOEBENCH_ATTN_HEADS_PER_BLOCK", kHeadsPerBlock, 0};
}  // namespace

int attention_heads_per_block_setting() { return g_attention_hpb.get(); }

void set_attention_heads_per_block(int hpb) { g_attention_hpb.set(hpb); }

namespace {
EnvSwitch g_o_proj_router{"MOEBENCH_OPROJ_ROUTER", 0};
}

bool o_proj_router_on() { return g_o_proj_router.get(); }

void set_o_proj_router(int on) { g_o_proj_router.force(on); }

namespace {
EnvSwitch g_gate_up_router{"MOEBENCH_GATEUP_ROUTER", 0};
}

bool gate_up_router_on() { return g_gate_up_router.get(); }

void set_gate_up_router(int on) { g_gate_up_router.force(on); }

namespace {
constexpr int kPersistentLevels[] = {0, 1, 2, 3};
EnvChoice g_quant_moe_persistent{"MOEBENCH_QUANT_MOE_PERSISTENT", kPersistentLevels, 0};
}  // namespace

int quant_moe_persistent() { return g_quant_moe_persistent.get(); }

void set_quant_moe_persistent(int level) { g_quant_moe_persistent.set(level); }

int o_proj_staged_from_env() {
  static const int level = env_choice("MOEBENCH_OPROJ_STAGED", {0, 1, 2}, -1);  // unset: -1, by shape
  return level;
}

namespace {
std::atomic<int> g_o_proj_staged{-2};  // -2: the environment's
}

int o_proj_staged_level() {
  const int set = g_o_proj_staged.load();
  return set < -1 ? o_proj_staged_from_env() : set;
}

void set_o_proj_staged(int level) { g_o_proj_staged.store(level < -1 ? -2 : level > 2 ? 2 : level); }

namespace {
EnvSwitch g_quant_down_trigger{"MOEBENCH_QUANT_DOWN_TRIGGER", 1};
}

bool quant_down_late_trigger() { return g_quant_down_trigger.get(); }

void set_quant_down_trigger(int on) { g_quant_down_trigger.force(on); }

namespace {
constexpr int kPredictBytes[] = {8192, 0, 4096, 16384, 32768, 65536};
constexpr int kPredictQuantBytes[] = {1024, 0, 512, 2048, 4096};
EnvChoice g_expert_predict_bytes{"MOEBENCH_EXPERT_PREDICT_BYTES", kPredictBytes, 8192};
EnvChoice g_expert_predict_quant_bytes{"MOEBENCH_EXPERT_PREDICT_QUANT_BYTES", kPredictQuantBytes, 1024};

// A test's byte count: a multiple of 16 (negative: the environment's again).
void set_bytes(EnvChoice& setting, int bytes, const char* what) {
  if (bytes >= 0 && bytes % 16 != 0) fail("{}: {} is not a multiple of 16", what, bytes);
  setting.set(bytes);
}
}  // namespace

unsigned expert_predict_bytes() { return static_cast<unsigned>(g_expert_predict_bytes.get()); }

int expert_predict_at_from_env() {
  static const int at = env_choice("MOEBENCH_EXPERT_PREDICT_AT", {1, 0, 2}, 1);
  return at;
}

void set_expert_predict_bytes(int bytes) { set_bytes(g_expert_predict_bytes, bytes, "set_expert_predict_bytes"); }

unsigned expert_predict_quant_bytes() { return static_cast<unsigned>(g_expert_predict_quant_bytes.get()); }

void set_expert_predict_quant_bytes(int bytes) {
  set_bytes(g_expert_predict_quant_bytes, bytes, "set_expert_predict_quant_bytes");
}

}  // namespace moebench::cuda
