// stages.cpp: see stages.h. Values follow the optimisation guide:
//   baseline: disk tier, LRU of 42 experts, serial/loop/alloc, max_num_batched_tokens 2048, max_model_len 1024
//   P0: pinned host tier, as many slots as the budget allows, gpu_memory_utilization 0.95,
//       max_num_batched_tokens 1024, max_model_len 512
//   P1: P0 + warm-up and the `prefetch` cache policy (LRU + next-layer speculative
//       loads overlapped with compute), index_add combine
//   P2: P1 + grouped dispatch, pooled buffers
//   P2-int4, P2-int8, P2-fp8: P2 with the experts quantised (expert_dtype): a slot, a
//       pinned copy and a miss hold a quarter (int4) or half (int8, fp8) of the bf16
//       bytes, so a budget holds ~3.9x / ~2x the slots. They compute with quantised
//       weights: their tokens are the quantised model's, not bf16's (the quality
//       columns measure how far they are).
//   P2-cpu: P2 + expert_exec=cpu: every decode miss is computed on the host.
//   P3, P3-int4: P2 (P2-int4) + expert_exec=hybrid: a decode miss is copied or computed
//       on the host from its pinned copy, whichever the cost model says ends first.
#include "variants/stages.h"

#include <string>

#include "common/error.h"

namespace moebench {

const std::vector<StagePreset>& stage_presets() {
  static const std::vector<StagePreset> p = [] {
    std::vector<StagePreset> v;
    EngineSettings b;
    b.stage = "baseline";
    b.expert_tier = "disk";
    b.cache_policy = "lru";
    b.cache_slots = 42;
    b.warmup = false;
    b.dispatch = "serial";
    b.combine = "loop";
    b.buffers = "alloc";
    b.max_num_batched_tokens = 2048;
    b.max_model_len = 1024;
    b.gpu_memory_utilization = 0.9;
    v.push_back({"baseline", "experts read from disk on every miss, LRU of 42, serial dispatch, loop combine, per-pass allocation", b});
    EngineSettings p0 = b;
    p0.stage = "P0";
    p0.expert_tier = "pinned";
    p0.cache_slots = 0;
    p0.gpu_memory_utilization = 0.95;
    p0.max_num_batched_tokens = 1024;
    p0.max_model_len = 512;
    v.push_back({"P0", "experts preloaded into host pinned memory, as many device slots as the budget allows", p0});
    EngineSettings p1 = p0;
    p1.stage = "P1";
    p1.warmup = true;
    p1.cache_policy = "lfu-prefetch";  // LRU cycles at 0% hits when a token touches more experts than fit (see README)
    p1.combine = "index_add";
    v.push_back({"P1", "P0 + the better policy (LFU) with next-layer prefetch (lfu-prefetch), warm-up, vectorised index_add combine", p1});
    EngineSettings p2 = p1;
    p2.stage = "P2";
    p2.dispatch = "fused";
    p2.combine = "fused";
    p2.buffers = "pooled";
    v.push_back({"P2", "P1 + fused expert dispatch (decode: one kernel over the selected experts; prefill: tokens "
                       "sorted by expert, one GEMM per expert block) and combine, pooled buffers", p2});
    for (const char* q : {"int4", "int8", "fp8"}) {
      EngineSettings pq = p2;
      pq.stage = std::string("P2-") + q;
      pq.expert_dtype = q;
      v.push_back({pq.stage, std::string("P2 with ") + q + " experts (expert_dtype=" + q +
                                 "): decode through the dequantising GEMV, prefill dequantises each needed expert to "
                                 "bf16; fewer bytes per slot and per miss",
                   pq});
    }
    EngineSettings pc = p2;
    pc.stage = "P2-cpu";
    pc.expert_exec = "cpu";
    v.push_back({"P2-cpu", "P2 with every decode miss computed on the host from its pinned copy (expert_exec=cpu: "
                           "attention and the hits on the GPU, no prefetch, nothing copied in decode)",
                 pc});
    // P3: P2 with each miss copied or computed on the host (expert_exec=hybrid), and
    // the same with int4 experts.
    for (const char* q : {"", "int4"}) {
      EngineSettings p3 = p2;
      p3.stage = *q ? std::string("P3-") + q : "P3";
      p3.expert_exec = "hybrid";
      if (*q) p3.expert_dtype = q;
      v.push_back({p3.stage, std::string("P2") + (*q ? std::string(" with ") + q + " experts" : "") +
                                 " + hybrid experts (expert_exec=hybrid): each decode miss is copied or computed on "
                                 "the host from its pinned copy, split by a cost model from the copy and host rates "
                                 "measured in the run",
                   p3});
    }
    return v;
  }();
  return p;
}

std::string stage_list(const char* sep) {
  std::string all;
  for (auto& s : stage_presets()) all += (all.empty() ? "" : sep) + s.name;
  return all;
}

EngineSettings stage_settings(const std::string& name) {
  for (auto& s : stage_presets())
    if (s.name == name) return s.settings;
  fail("unknown stage '{}', expected one of {}", name, stage_list());
}

}  // namespace moebench
