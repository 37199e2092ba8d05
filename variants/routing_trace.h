// routing_trace.h: the expert choices of a run, as plain data, and its JSON file.
//
// A trace is a list of steps (one decode position, or one prefill chunk); each
// step holds, for every layer and every token of the step, the top-k expert ids
// (and optionally their gate weights). Produced by a routing source (synthetic or
// the real gate via --record-routing), replayed by `trace:FILE`, read by the
// simulator and by the `belady` / `static` cache policies.
//
// File (JSON, written atomically: temp file + rename):
//   { "format": "moebench-routing-trace", "version": 1,
//     "layers": 32, "experts": 8, "top_k": 2, "source": "mixtral-locality seed=1",
//     "steps": [ { "n_tokens": 1, "ids": [..layers*n_tokens*top_k ints..],
//                  "weights": [..same length, optional..] }, ... ] }
// ids of a step are flat in (layer, token, k) order.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace moebench {

inline constexpr const char* kRoutingTraceFormat = "moebench-routing-trace";
inline constexpr int kRoutingTraceVersion = 1;
// The most expert ids `make-trace` writes (4 bytes each: 1 GiB), over all the steps.
inline constexpr int64_t kMaxTraceIds = int64_t{1} << 28;

struct RoutingStep {
  int n_tokens = 0;
  std::vector<int32_t> ids;    // (n_layers, n_tokens, top_k)
  std::vector<float> weights;  // (n_layers, n_tokens, top_k), or empty when not recorded
};

struct RoutingTrace {
  int n_layers = 0;
  int n_experts = 0;
  int top_k = 0;
  std::string source;  // what produced it, e.g. "mixtral-locality seed=1" or "model"
  std::vector<RoutingStep> steps;

  int n_steps() const { return static_cast<int>(steps.size()); }
  int64_t n_tokens() const;  // sum of n_tokens over steps
  // The (n_tokens, top_k) ids of one step at one layer.
  std::span<const int32_t> ids(int step, int layer) const;
  std::span<const float> weights(int step, int layer) const;  // empty when not recorded
  // Appends a step with zeroed ids (n_layers, n_tokens, top_k); returns it to fill.
  RoutingStep& add_step(int n_tokens, bool with_weights);
  // (n_layers, n_experts) count of routings (token, k) per expert.
  std::vector<int64_t> usage_counts() const;
};

// Checks shape (layers and experts within a model's limits, kMaxLayers and kMaxExperts of
// model/config.h), lengths and id ranges; `where` names the trace in errors.
void validate_trace(const RoutingTrace& t, const std::string& where);
// Writes the JSON file atomically (path + ".tmp" then rename). Throws Error.
void save_trace(const RoutingTrace& t, const std::string& path);
// Reads and validates a trace file. Errors name the file, the field and what was expected.
RoutingTrace load_trace(const std::string& path);
RoutingTrace trace_from_json_text(const std::string& text, const std::string& where);
std::string trace_to_json_text(const RoutingTrace& t);

// Locality statistics as the published Mixtral routing statistics define them, per layer, over
// consecutive token pairs of the whole trace (across step boundaries).
struct LayerRoutingStats {
  double first_repeat = 0;   // share of pairs whose first-choice expert repeats
  double topk_overlap = 0;   // share of pairs whose top-k sets intersect
  double top_share = 0;      // routings (token, k) to the most-used expert / all routings
  double least_share = 0;    // same, least-used expert
};
std::vector<LayerRoutingStats> measure_routing(const RoutingTrace& t);  // (n_layers)

}  // namespace moebench
