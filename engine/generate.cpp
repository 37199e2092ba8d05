// generate.cpp: see generate.h.
#include "engine/generate.h"

#include "engine/error.h"
#include "profiler/clock.h"
#include "profiler/counters.h"

namespace moebench {

namespace {
using profiler::now_ns;

// Ends a step that began at `start`: spins until it has lasted `slowdown` times
// its real duration (the injected-slowdown hook), then returns the end time.
int64_t end_step(int64_t start, double slowdown, int64_t (*clock)()) {
  int64_t end = clock();
  if (slowdown > 1.0) {
    const int64_t until = start + static_cast<int64_t>(static_cast<double>(end - start) * slowdown);
    while ((end = clock()) < until) {
    }
  }
  return end;
}
}  // namespace

double GenerateResult::decode_tokens_per_s() const {
  return decode_ns > 0 ? (static_cast<double>(output.size()) - 1) * 1e9 / static_cast<double>(decode_ns) : 0.0;
}
double GenerateResult::prefill_tokens_per_s() const {
  return prefill_ns > 0 ? prompt_tokens * 1e9 / static_cast<double>(prefill_ns) : 0.0;
}

GenerateResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        const std::function<void(int32_t, int)>& on_token) {
  validate_sampling(opt.sampling);
  if (prompt.empty()) fail("the prompt is empty (expected at least one token)");
  if (opt.max_new_tokens < 0) fail("max-new-tokens {} must be >= 0", opt.max_new_tokens);
  if (!(opt.inject_slowdown >= 1.0)) fail("inject_slowdown {} must be >= 1", opt.inject_slowdown);
  const int total = static_cast<int>(prompt.size()) + opt.max_new_tokens;
  if (total > model.max_seq_len())
    fail("prompt ({} tokens) + max-new-tokens ({}) = {} exceeds max_model_len {}", prompt.size(), opt.max_new_tokens,
         total, model.max_seq_len());
  const ModelConfig& c = model.config();
  GenerateResult r;
  r.prompt_tokens = static_cast<int>(prompt.size());
  model.reset();
  Sampler sampler(opt.sampling);
  std::vector<float> logits(c.vocab_size);
  if (opt.max_new_tokens == 0) return r;
  int64_t (*clock)() = opt.clock_ns ? opt.clock_ns : &now_ns;
  int64_t t0 = clock();
  // Greedy: the model picks the token (on the device for CUDA: no logits copy).
  const bool greedy = opt.sampling.temperature == 0.0f;
  auto step = [&](const int32_t* toks, int n, int pos0) {
    try {
      if (greedy) return model.forward_argmax(toks, n, pos0);
      model.forward(toks, n, pos0, logits.data());
      return sampler.sample(logits.data(), c.vocab_size);
    } catch (const NonFiniteLogits& e) {  // no token from them: say which step
      fail("{}: {}", pos0 == 0 ? "prefill" : fmt::format("decode step {}", pos0 - r.prompt_tokens + 1), e.what());
    }
  };
  int32_t tok = step(prompt.data(), static_cast<int>(prompt.size()), 0);
  int64_t t1 = end_step(t0, opt.inject_slowdown, clock);
  if (opt.prof) opt.prof->record_token(profiler::Phase::prefill, static_cast<int32_t>(prompt.size()), t0, t1);
  r.prefill_ns = t1 - t0;
  r.output.push_back(tok);
  r.token_latency_ns.push_back(t1 - t0);
  if (on_token) on_token(tok, 0);
  int pos = static_cast<int>(prompt.size());
  for (int i = 1; i < opt.max_new_tokens; ++i) {
    if (opt.stop_at_eos && tok == c.eos_token_id) {
      r.stopped_at_eos = true;
      break;
    }
    int64_t s = clock();
    tok = step(&tok, 1, pos++);
    int64_t e = end_step(s, opt.inject_slowdown, clock);
    if (opt.prof) opt.prof->record_token(profiler::Phase::decode, 1, s, e);
    r.output.push_back(tok);
    r.token_latency_ns.push_back(e - s);
    r.decode_ns += e - s;
    if (on_token) on_token(tok, i);
  }
  if (opt.stop_at_eos && tok == c.eos_token_id) r.stopped_at_eos = true;
  return r;
}

}  // namespace moebench
