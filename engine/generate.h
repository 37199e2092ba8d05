// generate.h: the generation loop — prefill the prompt, then decode one token at a
// time — with per-token timing (steady_clock, int64 ns). With a profiler it also
// records every step there (record_token: prefill with the prompt's token count,
// then one decode step per token).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/model.h"
#include "engine/sampler.h"

namespace moebench {

namespace profiler {
struct Profiler;
}

struct GenerateOptions {
  int max_new_tokens = 32;
  SamplingParams sampling;
  bool stop_at_eos = true;
  profiler::Profiler* prof = nullptr;  // optional: steps are recorded here
  // Test hook of the CI regression gate (MOEBENCH_INJECT_SLOWDOWN): each timed
  // step is stretched to this multiple of its duration by spinning before its end
  // timestamp. 1 = off.
  double inject_slowdown = 1.0;
};

struct GenerateResult {
  std::vector<int32_t> output;            // generated ids (n_out)
  std::vector<int64_t> token_latency_ns;  // (n_out): [0] is TTFT (prefill + first sample)
  int64_t prefill_ns = 0;
  int64_t decode_ns = 0;                  // sum of latencies after the first token
  int prompt_tokens = 0;
  bool stopped_at_eos = false;
  double decode_tokens_per_s() const;
  double prefill_tokens_per_s() const;
};

// on_token(id, index) is called as each token is produced (for streaming output).
GenerateResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        const std::function<void(int32_t, int)>& on_token = {});

}  // namespace moebench
