// generate.h: the generation loop — prefill the prompt, then decode one token at a
// time — with per-token timing (steady_clock, int64 ns). With a profiler it also
// records every step there (record_token: prefill with the prompt's token count,
// then one decode step per token). Under valgrind's callgrind it can count the work
// of the steps alone (set_work_count_label; the CI gate, docs/GATE.md).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
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
  // Test hook of the CI regression gate (MOEBENCH_INJECT_SLOWDOWN): factor F > 1
  // makes every CPU linear op do F times its work (cpu::set_extra_work) during the
  // generation: real extra instructions and memory reads, not a delay. The CUDA
  // backend is unaffected. 1 = off.
  double inject_slowdown = 1.0;
  // The clock steps are timed with, int64 ns. Default: the profiler's steady clock
  // (wall time). The ci suite uses thread CPU time instead (suites/suite.h
  // "clock"), which a busy machine's scheduler cannot inflate.
  int64_t (*clock_ns)() = nullptr;
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

// Counting the engine's work under callgrind (valgrind --tool=callgrind
// --collect-atstart=no). While a label is set and the process runs under valgrind,
// generate() switches collection on only around each timed step (the model's
// forward pass and the token choice: what prefill_ns and the decode latencies time)
// and dumps the costs twice per generation, the dump descriptions being
//   "moebench-gate LABEL prefill 1" and "moebench-gate LABEL decode N"
// (N decode steps). The label must be one word. Outside valgrind, or with no label,
// nothing changes (the client requests are a few no-op instructions, and builds
// without valgrind's headers leave them out).
void set_work_count_label(const std::string& label);  // "" = off
// MOEBENCH_INJECT_SLOWDOWN=F (the CI gate's test switch) as a factor for
// GenerateOptions::inject_slowdown: 1 when unset; a bad value fails with one line.
double inject_slowdown_from_env();
// Whether this process runs under valgrind (always false in a build without
// valgrind's headers, where counting is left out).
bool running_under_valgrind();
#if __has_include(<valgrind/callgrind.h>)
#define MOEBENCH_CALLGRIND_HEADERS 1
#else
#define MOEBENCH_CALLGRIND_HEADERS 0
#endif

// Throws Error when prompt_tokens + max_new_tokens exceed what the model takes (its
// max_seq_len: the smaller of max_model_len and max_position_embeddings, the line naming
// the one that binds). generate() checks it first; a caller that prints before
// generating checks it before printing.
void check_sequence_fits(const Model& model, size_t prompt_tokens, int max_new_tokens);

// on_token(id, index) is called as each token is produced (for streaming output).
GenerateResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        const std::function<void(int32_t, int)>& on_token = {});

}  // namespace moebench
