// batch_generate.cpp: see batch_generate.h.
#include "engine/batch_generate.h"

#include "common/error.h"
#include "common/clock.h"

namespace moebench {

int64_t BatchGenerateResult::prefill_ns() const {
  int64_t t = 0;
  for (auto& s : steps) t += s.prefill ? s.ns : 0;
  return t;
}
int64_t BatchGenerateResult::decode_ns() const {
  int64_t t = 0;
  for (auto& s : steps) t += s.prefill ? 0 : s.ns;
  return t;
}
int64_t BatchGenerateResult::decode_tokens() const {
  int64_t n = 0;
  for (auto& s : steps) n += s.prefill ? 0 : s.n_samples;
  return n;
}
double BatchGenerateResult::decode_tokens_per_s() const {
  const int64_t ns = decode_ns();
  return ns > 0 ? static_cast<double>(decode_tokens()) * 1e9 / static_cast<double>(ns) : 0.0;
}

BatchGenerateResult generate_batch(BatchModel& model, const SchedulerConfig& cfg, const std::vector<BatchRequest>& requests,
                                   int vocab, bool want_logits, const BatchStepObserver& on_step) {
  if (cfg.max_num_batched_tokens > model.max_batch_tokens())
    fail("max_num_batched_tokens {} exceeds the model's batch capacity of {} tokens", cfg.max_num_batched_tokens,
         model.max_batch_tokens());
  if (want_logits && vocab <= 0) fail("generate_batch: logits wanted but vocab {} given", vocab);
  Scheduler sched(cfg);
  for (auto& r : requests) sched.add(r.prompt, r.max_new_tokens);
  model.setup_kv_blocks(cfg.block_size, cfg.num_blocks, cfg.max_num_seqs);
  BatchGenerateResult res;
  std::vector<BatchSeq> in;
  std::vector<int32_t> next;
  std::vector<float> logits;
  const int64_t t0 = profiler::now_ns();
  while (!sched.done()) {
    const Step step = sched.schedule();
    if (step.seqs.empty()) fail("scheduler: no step possible with {} free KV blocks", sched.pool().free_blocks());
    const int64_t s0 = profiler::now_ns();
    in.clear();
    for (const StepSeq& ss : step.seqs) {
      const Sequence& q = sched.seq(ss.seq);
      in.push_back(BatchSeq{q.tokens.data() + ss.pos0, ss.n, ss.pos0, q.block_table.data(),
                            static_cast<int>(q.block_table.size()), ss.sample});
    }
    next.assign(static_cast<size_t>(step.n_samples), 0);
    if (want_logits) logits.assign(static_cast<size_t>(step.n_samples) * vocab, 0.0f);
    model.forward_batch(in, next.data(), want_logits ? logits.data() : nullptr);
    res.steps.push_back(BatchStepTiming{step.prefill, step.n_tokens, step.n_samples, profiler::now_ns() - s0});
    sched.update(step, next);
    if (on_step) on_step(step, next, logits);
  }
  res.total_ns = profiler::now_ns() - t0;
  res.preemptions = sched.preemptions();
  for (int i = 0; i < sched.num_seqs(); ++i) {
    const Sequence& q = sched.seq(i);
    res.outputs.emplace_back(q.tokens.begin() + q.prompt_len, q.tokens.end());
  }
  return res;
}

}  // namespace moebench
