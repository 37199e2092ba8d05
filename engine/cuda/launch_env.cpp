// launch_env.cpp: see launch_env.h.
#include "engine/cuda/launch_env.h"

#include <atomic>
#include <string>

#include "common/env.h"
#include "common/error.h"

namespace moebench::cuda {

int env_choice(const char* name, std::initializer_list<int> allowed, int unset) {
  const std::string v = env_str(name);
  if (v.empty()) return unset;
  std::string list;
  for (int a : allowed) {
    if (v == std::to_string(a)) return a;
    list += (list.empty() ? "" : ", ") + std::to_string(a);
  }
  fail("{}={}: expected one of {}", name, v, list);
}

bool EnvSwitch::get() {
  int on = value_.load(std::memory_order_relaxed);
  if (on < 0) {
    on = env_choice(name_, {0, 1}, fallback_);
    value_.store(on, std::memory_order_relaxed);
  }
  return on == 1;
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
std::atomic<int> g_attention_hpb{-1};  // -1: the environment's
}

int attention_heads_per_block_setting() {
  const int set = g_attention_hpb.load(std::memory_order_relaxed);
  if (set >= 0) return set;  // a test's count: the environment is not read
  static const int env = env_choice("MOEBENCH_ATTN_HEADS_PER_BLOCK", {0, 1, 2, 4}, 0);
  return env;
}

void set_attention_heads_per_block(int hpb) {
  g_attention_hpb.store(hpb < 0 ? -1 : hpb, std::memory_order_relaxed);
}

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
std::atomic<int> g_quant_moe_persistent{-1};  // -1: the environment's
}

int quant_moe_persistent() {
  const int set = g_quant_moe_persistent.load(std::memory_order_relaxed);
  if (set >= 0) return set;
  static const int env = env_choice("MOEBENCH_QUANT_MOE_PERSISTENT", {0, 1, 2, 3}, 0);
  return env;
}

void set_quant_moe_persistent(int level) {
  g_quant_moe_persistent.store(level < 0 ? -1 : level, std::memory_order_relaxed);
}

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
// The expert prediction's byte counts: what a test set last (a multiple of 16; -1: none,
// the environment's value then, read only where no test has set one).
std::atomic<int> g_expert_predict_bytes{-1}, g_expert_predict_quant_bytes{-1};

void set_bytes(std::atomic<int>& set, int bytes, const char* what) {
  if (bytes >= 0 && bytes % 16 != 0) fail("{}: {} is not a multiple of 16", what, bytes);
  set.store(bytes < 0 ? -1 : bytes, std::memory_order_relaxed);
}
}  // namespace

unsigned expert_predict_bytes() {
  const int set = g_expert_predict_bytes.load(std::memory_order_relaxed);
  if (set >= 0) return static_cast<unsigned>(set);
  static const int env = env_choice("MOEBENCH_EXPERT_PREDICT_BYTES", {8192, 0, 4096, 16384, 32768, 65536}, 8192);
  return static_cast<unsigned>(env);
}

int expert_predict_at_from_env() {
  static const int at = env_choice("MOEBENCH_EXPERT_PREDICT_AT", {1, 0, 2}, 1);
  return at;
}

void set_expert_predict_bytes(int bytes) { set_bytes(g_expert_predict_bytes, bytes, "set_expert_predict_bytes"); }

unsigned expert_predict_quant_bytes() {
  const int set = g_expert_predict_quant_bytes.load(std::memory_order_relaxed);
  if (set >= 0) return static_cast<unsigned>(set);
  static const int env = env_choice("MOEBENCH_EXPERT_PREDICT_QUANT_BYTES", {1024, 0, 512, 2048, 4096}, 1024);
  return static_cast<unsigned>(env);
}

void set_expert_predict_quant_bytes(int bytes) {
  set_bytes(g_expert_predict_quant_bytes, bytes, "set_expert_predict_quant_bytes");
}

}  // namespace moebench::cuda
