// generate.cpp: see generate.h.
#include "engine/generate.h"

#include <cstdlib>

#include "common/error.h"
#include "common/log.h"
#include "engine/ops/ops.h"
#include "common/clock.h"
#include "profiler/counters.h"

// Callgrind's client requests (valgrind's headers): without them the build leaves
// the counting hooks out and running_under_valgrind() is false.
#if MOEBENCH_CALLGRIND_HEADERS
#include <valgrind/callgrind.h>
#endif

namespace moebench {

namespace {
using profiler::now_ns;

std::string g_count_label;  // set_work_count_label

// Callgrind's client requests around the timed steps (see set_work_count_label).
class WorkCount {
 public:
  WorkCount() : on_(!g_count_label.empty() && running_under_valgrind()) {}
  // Collection on for the step (the gate runs callgrind with --collect-atstart=no).
  void begin() const {
#if MOEBENCH_CALLGRIND_HEADERS
    if (on_) CALLGRIND_TOGGLE_COLLECT;
#endif
  }
  void end() const { begin(); }  // a toggle again: collection off
  // Writes what was collected since the last dump as one part, then zeroes it.
  void dump(const char* phase, int steps) const {
    if (!on_ || steps == 0) return;
    const std::string desc = fmt::format("moebench-gate {} {} {}", g_count_label, phase, steps);
#if MOEBENCH_CALLGRIND_HEADERS
    CALLGRIND_DUMP_STATS_AT(desc.c_str());
#endif
  }

 private:
  bool on_;
};

// Sets cpu::set_extra_work for one generation and restores it after.
struct ExtraWork {
  explicit ExtraWork(double f) : prev(cpu::extra_work()) { cpu::set_extra_work(f); }
  ~ExtraWork() { cpu::set_extra_work(prev); }
  double prev;
};
}  // namespace

void set_work_count_label(const std::string& label) {
  if (label.find_first_of(" \t\n") != std::string::npos)
    fail("work-count label '{}' must be one word (no blanks)", label);
  g_count_label = label;
}

double inject_slowdown_from_env() {
  const char* e = std::getenv("MOEBENCH_INJECT_SLOWDOWN");
  if (!e || !*e) return 1.0;
  char* end = nullptr;
  const double v = std::strtod(e, &end);
  if (end == e || *end != '\0' || !(v >= 1.0 && v <= 10.0))
    fail("MOEBENCH_INJECT_SLOWDOWN={}: expected a factor in [1, 10], e.g. 1.2", e);
  if (v != 1.0)
    log::warn("MOEBENCH_INJECT_SLOWDOWN={}: every CPU linear op does {}x its work (test hook)", e, v);
  return v;
}

bool running_under_valgrind() {
#if MOEBENCH_CALLGRIND_HEADERS
  return RUNNING_ON_VALGRIND != 0;
#else
  return false;
#endif
}

double GenerateResult::decode_tokens_per_s() const {
  return decode_ns > 0 ? (static_cast<double>(output.size()) - 1) * 1e9 / static_cast<double>(decode_ns) : 0.0;
}
double GenerateResult::prefill_tokens_per_s() const {
  return prefill_ns > 0 ? prompt_tokens * 1e9 / static_cast<double>(prefill_ns) : 0.0;
}

void check_sequence_fits(const Model& model, size_t prompt_tokens, int max_new_tokens) {
  const int64_t total = static_cast<int64_t>(prompt_tokens) + max_new_tokens;
  if (total > model.max_seq_len())  // the smaller of max_model_len and the model's positions: name the one that binds
    fail("prompt ({} tokens) + max-new-tokens ({}) = {} exceeds {} {}", prompt_tokens, max_new_tokens, total,
         model.max_seq_len() < model.config().max_position_embeddings ? "max_model_len"
                                                                      : "the model's max_position_embeddings",
         model.max_seq_len());
}

GenerateResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        const std::function<void(int32_t, int)>& on_token) {
  validate_sampling(opt.sampling);
  if (prompt.empty()) fail("the prompt is empty (expected at least one token)");
  if (opt.max_new_tokens < 0) fail("max-new-tokens {} must be >= 0", opt.max_new_tokens);
  if (!(opt.inject_slowdown >= 1.0 && opt.inject_slowdown <= 10.0))
    fail("inject_slowdown {} must be in [1, 10]", opt.inject_slowdown);
  check_sequence_fits(model, prompt.size(), opt.max_new_tokens);
  const ModelConfig& c = model.config();
  GenerateResult r;
  r.prompt_tokens = static_cast<int>(prompt.size());
  model.reset();
  Sampler sampler(opt.sampling);
  std::vector<float> logits(c.vocab_size);
  if (opt.max_new_tokens == 0) return r;
  int64_t (*clock)() = opt.clock_ns ? opt.clock_ns : &now_ns;
  const WorkCount count;
  const ExtraWork extra(opt.inject_slowdown);
  int64_t t0 = clock();
  // Greedy: the model picks the token (on the device for CUDA: no logits copy).
  const bool greedy = opt.sampling.temperature == 0.0f;
  auto step = [&](const int32_t* toks, int n, int pos0) {
    count.begin();
    int32_t t;
    try {
      if (greedy) {
        t = model.forward_argmax(toks, n, pos0);
      } else {
        model.forward(toks, n, pos0, logits.data());
        t = sampler.sample(logits.data(), c.vocab_size);
      }
    } catch (const NonFiniteLogits& e) {  // no token from them: say which step
      count.end();
      fail("{}: {}", pos0 == 0 ? "prefill" : fmt::format("decode step {}", pos0 - r.prompt_tokens + 1), e.what());
    }
    count.end();
    return t;
  };
  int32_t tok = step(prompt.data(), static_cast<int>(prompt.size()), 0);
  int64_t t1 = clock();
  count.dump("prefill", 1);
  if (opt.prof) opt.prof->record_token(profiler::Phase::prefill, static_cast<int32_t>(prompt.size()), t0, t1);
  r.prefill_ns = t1 - t0;
  r.output.push_back(tok);
  r.token_latency_ns.push_back(t1 - t0);
  if (on_token) on_token(tok, 0);
  int pos = static_cast<int>(prompt.size());
  int decode_steps = 0;
  for (int i = 1; i < opt.max_new_tokens; ++i) {
    if (opt.stop_at_eos && c.is_eos(tok)) {
      r.stopped_at_eos = true;
      break;
    }
    int64_t s = clock();
    tok = step(&tok, 1, pos++);
    int64_t e = clock();
    ++decode_steps;
    if (opt.prof) opt.prof->record_token(profiler::Phase::decode, 1, s, e);
    r.output.push_back(tok);
    r.token_latency_ns.push_back(e - s);
    r.decode_ns += e - s;
    if (on_token) on_token(tok, i);
  }
  count.dump("decode", decode_steps);
  if (opt.stop_at_eos && c.is_eos(tok)) r.stopped_at_eos = true;
  return r;
}

}  // namespace moebench
