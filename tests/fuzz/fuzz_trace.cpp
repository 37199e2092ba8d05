// fuzz_trace.cpp: fuzz target for routing trace files (load_trace, as `trace:FILE`,
// `simulate --trace` and the static and belady policies read them). An accepted trace
// must be written back by trace_to_json_text into text that loads to the same trace and
// is written again unchanged (the writer prints weights to 6 digits, so the first
// rewrite may round them; after it the text is a fixed point), and its usage counts
// and locality statistics must account for every routing.
#include <cstdint>
#include <numeric>
#include <string>

#include "common/error.h"
#include "tests/fuzz/fuzz_util.h"
#include "variants/routing_trace.h"

using namespace moebench;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input("trace.json", data, size);
  try {
    RoutingTrace t = load_trace(path);
    const std::string text = trace_to_json_text(t);
    RoutingTrace back;
    try {
      back = trace_from_json_text(text, "rewritten");
    } catch (const Error& e) {
      fuzz::check(false, std::string("trace_to_json_text wrote a trace that does not load back: ") + e.what());
    }
    fuzz::check(back.n_layers == t.n_layers && back.n_experts == t.n_experts && back.top_k == t.top_k &&
                    back.source == t.source && back.n_steps() == t.n_steps(),
                "the trace's shape changes in a round trip");
    for (int s = 0; s < t.n_steps(); ++s)
      fuzz::check(back.steps[s].n_tokens == t.steps[s].n_tokens && back.steps[s].ids == t.steps[s].ids &&
                      back.steps[s].weights.size() == t.steps[s].weights.size(),
                  "step " + std::to_string(s) + " changes in a round trip");
    fuzz::check(trace_to_json_text(back) == text, "the rewritten trace is written differently again");

    const std::vector<int64_t> usage = t.usage_counts();
    const int64_t routings = std::accumulate(usage.begin(), usage.end(), int64_t{0});
    fuzz::check(routings == t.n_tokens() * t.n_layers * t.top_k, "usage counts miss routings");
    for (const LayerRoutingStats& l : measure_routing(t))
      fuzz::check(l.first_repeat >= 0 && l.first_repeat <= 1 && l.topk_overlap >= 0 && l.topk_overlap <= 1 &&
                      l.least_share >= 0 && l.least_share <= l.top_share && l.top_share <= 1,
                  "a locality statistic outside [0, 1]");
  } catch (const Error&) {
  }
  return 0;
}
