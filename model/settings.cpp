// settings.cpp: see settings.h.
#include "model/settings.h"

#include <fmt/format.h>

#include <functional>

#include "common/error.h"
#include "common/units.h"

namespace moebench {

namespace {

int parse_int(const std::string& key, const std::string& v, int lo) {
  try {
    size_t used = 0;
    long x = std::stol(v, &used);
    if (used == v.size() && x >= lo && x <= (1L << 30)) return static_cast<int>(x);
  } catch (...) {
  }
  fail("setting {}={}: expected an integer >= {}", key, v, lo);
}
double parse_double(const std::string& key, const std::string& v, double lo, double hi) {
  try {
    size_t used = 0;
    double x = std::stod(v, &used);
    if (used == v.size() && x >= lo && x <= hi) return x;
  } catch (...) {
  }
  fail("setting {}={}: expected a number in [{}, {}]", key, v, lo, hi);
}
// A byte count as parse_bytes reads it ("22GiB", "80GB", "4096"), above zero; kept as text.
std::string parse_byte_count(const std::string& key, const std::string& v) {
  uint64_t bytes = 0;
  try {
    bytes = parse_bytes(v);
  } catch (const Error&) {
  }
  if (bytes == 0) fail("setting {}={}: expected a positive byte count, e.g. 22GiB, 512MiB, 80GB", key, v);
  return v;
}
bool parse_bool(const std::string& key, const std::string& v) {
  if (v == "true" || v == "1" || v == "on" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "off" || v == "no") return false;
  fail("setting {}={}: expected true or false", key, v);
}
std::string one_of(const std::string& key, const std::string& v, std::initializer_list<const char*> allowed) {
  std::string all;
  for (auto* a : allowed) {
    if (v == a) return v;
    if (!all.empty()) all += '|';
    all += a;
  }
  fail("setting {}={}: expected one of {}", key, v, all);
}

struct Knob {
  const char* key;
  const char* values;  // what it takes, for `moebench info`
  std::function<std::string(const EngineSettings&)> get;
  std::function<void(EngineSettings&, const std::string&)> set;
};

const std::vector<Knob>& knobs() {
  static const std::vector<Knob> k = {
      {"stage", "a label: the stage preset's name (--stage), custom otherwise", [](auto& s) { return s.stage; }, [](auto& s, auto& v) { s.stage = v; }},
      {"expert_tier", "resident|pinned|disk", [](auto& s) { return s.expert_tier; },
       [](auto& s, auto& v) { s.expert_tier = one_of("expert_tier", v, {"resident", "pinned", "disk"}); }},
      {"cache_policy", "a cache policy (listed below)", [](auto& s) { return s.cache_policy; }, [](auto& s, auto& v) { s.cache_policy = v; }},
      {"cache_slots", "integer >= 0 (0: as many as the budget allows)", [](auto& s) { return std::to_string(s.cache_slots); },
       [](auto& s, auto& v) { s.cache_slots = parse_int("cache_slots", v, 0); }},
      {"warmup", "true|false", [](auto& s) { return std::string(s.warmup ? "true" : "false"); },
       [](auto& s, auto& v) { s.warmup = parse_bool("warmup", v); }},
      {"dispatch", "serial|grouped|fused", [](auto& s) { return s.dispatch; },
       [](auto& s, auto& v) { s.dispatch = one_of("dispatch", v, {"serial", "grouped", "fused"}); }},
      {"combine", "loop|index_add|fused", [](auto& s) { return s.combine; },
       [](auto& s, auto& v) { s.combine = one_of("combine", v, {"loop", "index_add", "fused"}); }},
      {"buffers", "alloc|pooled", [](auto& s) { return s.buffers; },
       [](auto& s, auto& v) { s.buffers = one_of("buffers", v, {"alloc", "pooled"}); }},
      {"routing", "a routing source (listed below)", [](auto& s) { return s.routing; }, [](auto& s, auto& v) { s.routing = v; }},
      {"routing_seed", "integer >= 0", [](auto& s) { return std::to_string(s.routing_seed); },
       [](auto& s, auto& v) { s.routing_seed = static_cast<uint64_t>(parse_int("routing_seed", v, 0)); }},
      {"prefetch_accuracy", "number in [0, 1]", [](auto& s) { return fmt::format("{}", s.prefetch_accuracy); },
       [](auto& s, auto& v) { s.prefetch_accuracy = parse_double("prefetch_accuracy", v, 0.0, 1.0); }},
      {"fused_decode_max_tokens", "1..8", [](auto& s) { return std::to_string(s.fused_decode_max_tokens); },
       [](auto& s, auto& v) {
         const int n = parse_int("fused_decode_max_tokens", v, 1);
         if (n > 8) fail("setting fused_decode_max_tokens={}: expected 1..8", v);
         s.fused_decode_max_tokens = n;
       }},
      {"max_num_batched_tokens", "integer >= 1", [](auto& s) { return std::to_string(s.max_num_batched_tokens); },
       [](auto& s, auto& v) { s.max_num_batched_tokens = parse_int("max_num_batched_tokens", v, 1); }},
      {"max_model_len", "integer >= 1", [](auto& s) { return std::to_string(s.max_model_len); },
       [](auto& s, auto& v) { s.max_model_len = parse_int("max_model_len", v, 1); }},
      {"gpu_memory_utilization", "number in [0.05, 1]", [](auto& s) { return fmt::format("{}", s.gpu_memory_utilization); },
       [](auto& s, auto& v) { s.gpu_memory_utilization = parse_double("gpu_memory_utilization", v, 0.05, 1.0); }},
      {"gpu_mem_budget", "bytes, e.g. 22GiB (empty: utilization x free memory)", [](auto& s) { return s.gpu_mem_budget; },
       [](auto& s, auto& v) { s.gpu_mem_budget = v.empty() ? v : parse_byte_count("gpu_mem_budget", v); }},
      {"expert_dtype", "bf16|fp8|int8|int4", [](auto& s) { return s.expert_dtype; },
       [](auto& s, auto& v) { s.expert_dtype = one_of("expert_dtype", v, {"bf16", "fp8", "int8", "int4"}); }},
      {"weight_dtype", "bf16|fp8|int8 (attention q/k/v/o projections)", [](auto& s) { return s.weight_dtype; },
       [](auto& s, auto& v) { s.weight_dtype = one_of("weight_dtype", v, {"bf16", "fp8", "int8"}); }},
      {"tensor_parallel", "integer >= 1: GPUs, tensor-parallel (1: one GPU)", [](auto& s) { return std::to_string(s.tensor_parallel); },
       [](auto& s, auto& v) { s.tensor_parallel = parse_int("tensor_parallel", v, 1); }},
      {"tp_allreduce", "auto|symmetric|plain|lsa (the multi-GPU all-reduces: NCCL's in symmetric or plain memory, or lsa: decode's in a kernel over NCCL's device API; auto: symmetric at 2 GPUs, else plain)",
       [](auto& s) { return s.tp_allreduce; },
       [](auto& s, auto& v) { s.tp_allreduce = one_of("tp_allreduce", v, {"auto", "symmetric", "plain", "lsa"}); }},
      {"tp_reduce", "residual|partial (what the multi-GPU all-reduces sum)", [](auto& s) { return s.tp_reduce; },
       [](auto& s, auto& v) { s.tp_reduce = one_of("tp_reduce", v, {"residual", "partial"}); }},
      {"expert_parallel", "integer >= 1: GPUs, expert-parallel (1: one GPU)",
       [](auto& s) { return std::to_string(s.expert_parallel); },
       [](auto& s, auto& v) { s.expert_parallel = parse_int("expert_parallel", v, 1); }},
      {"ep_placement", "round-robin|balanced (which GPU holds each expert under expert_parallel)",
       [](auto& s) { return s.ep_placement; },
       [](auto& s, auto& v) { s.ep_placement = one_of("ep_placement", v, {"round-robin", "balanced"}); }},
      {"expert_exec", "gpu|cpu|hybrid (where a missed expert is computed)", [](auto& s) { return s.expert_exec; },
       [](auto& s, auto& v) { s.expert_exec = one_of("expert_exec", v, {"gpu", "cpu", "hybrid"}); }},
      {"cpu_moe_layers", "integer >= 0 (the first N layers' experts stay on the host)",
       [](auto& s) { return std::to_string(s.cpu_moe_layers); },
       [](auto& s, auto& v) { s.cpu_moe_layers = parse_int("cpu_moe_layers", v, 0); }},
      {"hybrid_rates", "load|decode (the rates expert_exec=hybrid splits with: measured at load, or learned from decode)",
       [](auto& s) { return s.hybrid_rates; },
       [](auto& s, auto& v) { s.hybrid_rates = one_of("hybrid_rates", v, {"load", "decode"}); }},
      {"hybrid_split", "host|all|balance|off (which misses expert_exec=hybrid may split between the links: host experts', "
                       "any, any by a feedback share with nothing copied ahead, none)",
       [](auto& s) { return s.hybrid_split; },
       [](auto& s, auto& v) { s.hybrid_split = one_of("hybrid_split", v, {"host", "all", "balance", "off"}); }},
  };
  return k;
}

}  // namespace

std::vector<std::string> setting_keys() {
  std::vector<std::string> r;
  for (auto& k : knobs()) r.push_back(k.key);
  return r;
}

std::vector<SettingDoc> setting_docs() {
  std::vector<SettingDoc> r;
  const EngineSettings defaults;
  for (auto& k : knobs()) r.push_back({k.key, k.values, k.get(defaults)});
  return r;
}

std::vector<std::pair<std::string, std::string>> EngineSettings::to_list() const {
  std::vector<std::pair<std::string, std::string>> r;
  for (auto& k : knobs()) r.emplace_back(k.key, k.get(*this));
  return r;
}

void EngineSettings::set(const std::string& key, const std::string& value) {
  for (auto& k : knobs())
    if (key == k.key) return k.set(*this, value);
  std::string all;
  for (auto& k : knobs()) all += (all.empty() ? "" : ", ") + std::string(k.key);
  fail("unknown setting '{}', expected one of: {}", key, all);
}

void EngineSettings::validate() const {
  for (auto& k : knobs()) {  // re-parse each value through its setter
    EngineSettings copy = *this;
    k.set(copy, k.get(*this));
  }
  if (routing != "model" && routing != "uniform" && routing != "mixtral-locality" && routing != "fine-grained-locality" &&
      routing.rfind("trace:", 0) != 0)
    fail("setting routing={}: expected model|uniform|mixtral-locality|fine-grained-locality|trace:FILE", routing);
}

}  // namespace moebench
