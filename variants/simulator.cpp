// simulator.cpp: see simulator.h.
#include "variants/simulator.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <optional>

#include "common/error.h"
#include "variants/prediction.h"

namespace moebench {

namespace {

// The simulated clocks and byte counts are int64: a sum or product that would not fit
// (a huge expert size over a slow link, a huge compute time) is an error, not a wrap.
int64_t add_ns(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    fail("simulate: the simulated time passes 2^63 ns (292 years): expert_bytes / h2d_gbps or the compute time "
         "is too large");
  return r;
}

int64_t times(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    fail("simulate: {} passes 2^63: expert_bytes or the compute time is too large", what);
  return r;
}

// The two links as fluid queues on one clock (the joint model, simulator.h): copies FIFO
// at full speed alone and at `fc` of it beside the host's kernel; the host's work after
// its fixed cost at full speed alone and at `fh` beside copies. Times in ns (double).
class FluidLinks {
 public:
  FluidLinks(double fc, double fh, std::vector<int64_t>& ready_at) : fc_(fc), fh_(fh), ready_at_(ready_at) {}
  // Queues a copy of `solo_ns` (key -1: a split part, nothing lands); returns its number.
  int64_t copy(int64_t key, int64_t solo_ns) {
    q_.push_back(Item{key, static_cast<double>(solo_ns), next_++});
    return next_ - 1;
  }
  bool in_flight(int64_t n) const { return n >= popped_; }
  // The copies still queued, in solo ns (the split's backlog).
  int64_t backlog_ns() const {
    double sum = 0;
    for (const Item& i : q_) sum += i.left;
    return std::llround(sum);
  }
  // The host starts `work_ns` of kernel work after `overhead_ns` from now.
  void host(int64_t overhead_ns, int64_t work_ns) {
    host_from_ = t_ + static_cast<double>(overhead_ns);
    host_left_ = static_cast<double>(work_ns);
    host_busy_ += static_cast<double>(overhead_ns);
  }
  // Runs both to time `t` (nothing past it).
  void run_to(double t) {
    while (t_ < t && step(t)) {
    }
    t_ = std::max(t_, t);
  }
  // Runs until the host's work is done (the copies beside it as far as they get).
  void run_until_host_done() {
    while (host_left_ > 0) step(std::numeric_limits<double>::infinity());
  }
  // Runs until copy number `last` (and every one before it) has landed and the host is
  // done; returns the time.
  double run_until_done(int64_t last) {
    while ((last >= popped_ && !q_.empty()) || host_left_ > 0) step(std::numeric_limits<double>::infinity());
    return t_;
  }
  // Runs both to `t`, then lands every copy still queued and ends the host's work there
  // (an untimed prompt follows: what was in flight is through by its end).
  void settle(double t) {
    run_to(t);
    for (const Item& i : q_)
      if (i.key >= 0) ready_at_[static_cast<size_t>(i.key)] = std::llround(t_);
    popped_ = next_;
    q_.clear();
    host_left_ = 0;
  }
  double now() const { return t_; }
  double copy_busy() const { return copy_busy_; }
  double host_busy() const { return host_busy_; }

 private:
  struct Item {
    int64_t key;
    double left;
    int64_t n;
  };
  // One event: the head copy lands, the host finishes or starts, or `limit`. False when
  // nothing runs before `limit`.
  bool step(double limit) {
    const bool host_waits = host_left_ > 0 && t_ < host_from_;
    const bool host_on = host_left_ > 0 && !host_waits;
    const bool copy_on = !q_.empty();
    if (!host_on && !copy_on && !host_waits) return false;
    const double rc = host_on ? fc_ : 1.0, rh = copy_on ? fh_ : 1.0;
    double dt = limit - t_;
    if (host_waits) dt = std::min(dt, host_from_ - t_);
    if (copy_on) dt = std::min(dt, q_.front().left / rc);
    if (host_on) dt = std::min(dt, host_left_ / rh);
    dt = std::max(0.0, dt);
    t_ += dt;
    if (copy_on) {
      copy_busy_ += dt;
      Item& f = q_.front();
      f.left -= dt * rc;
      if (f.left <= 1e-6 * std::max(1.0, dt)) {
        if (f.key >= 0) ready_at_[static_cast<size_t>(f.key)] = std::llround(t_);
        popped_ = f.n + 1;
        q_.pop_front();
      }
    }
    if (host_on) {
      host_busy_ += dt;
      host_left_ -= dt * rh;
      if (host_left_ <= 1e-6 * std::max(1.0, dt)) host_left_ = 0;
    }
    return true;
  }
  double fc_, fh_;
  std::vector<int64_t>& ready_at_;
  std::deque<Item> q_;
  int64_t next_ = 0, popped_ = 0;
  double t_ = 0, host_from_ = 0, host_left_ = 0, copy_busy_ = 0, host_busy_ = 0;
};

CacheCounters counters_minus(CacheCounters a, const CacheCounters& b) {
  a.accesses -= b.accesses;
  a.hits -= b.hits;
  a.misses -= b.misses;
  a.prefetch_loads -= b.prefetch_loads;
  a.evictions -= b.evictions;
  a.prefetch_hits -= b.prefetch_hits;
  a.prefetch_wasted -= b.prefetch_wasted;
  a.prefetch_skipped -= b.prefetch_skipped;
  a.host_computed -= b.host_computed;
  return a;  // warm_loads: before the prompt, kept
}

// The prompt (SimOptions::prefill_tokens): its steps in forwards through every layer, every
// miss loaded (the cpu layers' on the host), no prefetch; not timed.
void run_prefill(const RoutingTrace& trace, int prefill_tokens, int cpu_moe_layers, ExpertCache& cache) {
  const CacheShape& shape = cache.shape();
  // As the engine: the whole prompt in one forward when a layer's experts all fit in the
  // slots, else chunks of capacity / top_k tokens (each chunk's experts fit at once).
  const int chunk = shape.capacity >= shape.n_experts ? std::max(1, prefill_tokens)
                                                      : std::max(1, shape.capacity / std::max(1, shape.top_k));
  std::vector<int32_t> ids, misses;
  std::vector<char> host;
  std::vector<AccessResult> res;
  for (int s0 = 0; s0 < prefill_tokens; s0 += chunk) {
    const int s1 = std::min(prefill_tokens, s0 + chunk);
    for (int l = 0; l < trace.n_layers; ++l) {
      ids.clear();
      for (int s = s0; s < s1; ++s) ids.insert(ids.end(), trace.ids(s, l).begin(), trace.ids(s, l).end());
      if (l < cpu_moe_layers) {
        distinct_misses(cache, l, ids, misses);
        mark_host_experts(misses, static_cast<int>(misses.size()), trace.n_experts, host);
        cache.access_layer(s0, l, ids, res, host);
      } else {
        cache.access_layer(s0, l, ids, res);
      }
    }
  }
}

}  // namespace

SimResult simulate(const RoutingTrace& trace, const std::string& policy, int capacity, const SimOptions& opt) {
  const LinkParams& link = opt.link;
  if (!(link.h2d_gbps > 0)) fail("simulate: h2d_gbps is {}, expected a positive bandwidth in GB/s", link.h2d_gbps);
  if (link.expert_bytes <= 0) fail("simulate: expert_bytes is {}, expected a positive size", link.expert_bytes);
  if (link.compute_ns_per_layer < 0)
    fail("simulate: compute_ns_per_layer is {}, expected >= 0", link.compute_ns_per_layer);
  if (opt.prediction.accuracy < 0 || opt.prediction.accuracy > 1)
    fail("simulate: prefetch accuracy is {}, expected a share in [0, 1]", opt.prediction.accuracy);

  const bool host_link = opt.exec != ExpertExec::gpu || opt.cpu_moe_layers > 0;
  if (opt.cpu_moe_layers < 0) fail("simulate: cpu_moe_layers is {}, expected >= 0", opt.cpu_moe_layers);
  HybridRates rates{link.h2d_gbps,    link.host_gbps,    link.expert_bytes,    link.host_overhead_ns,
                    link.split_units, link.split_copies, link.joint_copy_gbps, link.joint_host_gbps};
  if (host_link) check_hybrid_rates(rates, "simulate (host link)");
  // The split's decisions may take the copies at another rate than the clock runs them at
  // (model_copy_gbps: e.g. an engine's measured solo rate): decisions use `model`.
  HybridRates model = rates;
  if (link.model_copy_gbps > 0) model.copy_gbps = link.model_copy_gbps;
  if (opt.runs < 1 || opt.warmup_runs < 0)
    fail("simulate: runs {} and warmup_runs {}: expected at least one timed run and no negative count", opt.runs,
         opt.warmup_runs);
  if (opt.prefill_tokens < 0 || opt.prefill_tokens >= trace.n_steps())
    fail("simulate: prefill_tokens is {}, expected 0 .. {} (the trace's steps less one to decode)", opt.prefill_tokens,
         trace.n_steps() - 1);
  if (opt.prefill_tokens > 0)
    for (int s = 0; s < opt.prefill_tokens; ++s)
      if (trace.steps[s].n_tokens != 1)
        fail("simulate: prefill_tokens needs a trace of one token a step; step {} has {}", s, trace.steps[s].n_tokens);
  if (opt.warmup_trace) {
    const RoutingTrace& w = *opt.warmup_trace;
    if (w.n_layers != trace.n_layers || w.n_experts != trace.n_experts || w.top_k != trace.top_k ||
        w.n_steps() != trace.n_steps())
      fail("simulate: the warm-up trace ({} layers, {} experts, top-{}, {} steps) is not the trace's shape ({}, {}, "
           "top-{}, {} steps)",
           w.n_layers, w.n_experts, w.top_k, w.n_steps(), trace.n_layers, trace.n_experts, trace.top_k,
           trace.n_steps());
    for (int st = 0; st < trace.n_steps(); ++st)
      if (w.steps[st].n_tokens != trace.steps[st].n_tokens)
        fail("simulate: the warm-up trace's step {} has {} tokens, the trace's {}", st, w.steps[st].n_tokens,
             trace.steps[st].n_tokens);
  }
  const bool fluid = host_link && rates.joint();
  // hybrid_split=balance: the link's share by feedback, as the engine's (hybrid_split.h)
  std::optional<BalanceShare> balance;
  if (link.split_balance && opt.exec == ExpertExec::hybrid)
    balance.emplace(link.split_units, balance_initial_share(model));
  auto balanced = [&](int l) { return balance.has_value() && l >= opt.cpu_moe_layers; };

  CacheShape shape{trace.n_layers, trace.n_experts, trace.top_k, capacity};
  PolicyContext ctx{shape, &trace, opt.static_usage};
  ExpertCache cache(shape, make_cache_policy(policy, ctx));

  const double load_ns_exact = static_cast<double>(link.expert_bytes) / link.h2d_gbps;
  if (!(load_ns_exact < 0x1p62))
    fail("simulate: one expert load takes {:.3g} ns (expert_bytes {} / h2d_gbps {}), over the 2^62 ns the clock holds",
         load_ns_exact, link.expert_bytes, link.h2d_gbps);
  const int64_t load_ns = std::llround(load_ns_exact);
  std::vector<int64_t> ready_at(shape.n_keys(), 0);  // when each key's last load lands
  int64_t now = 0;                                   // compute clock
  int64_t link_free = 0;                             // copy engine clock
  int64_t stall = 0;
  int64_t tokens = 0;
  int64_t host_free = 0, host_busy = 0, host_parts = 0, copy_busy = 0, split_parts = 0;
  std::vector<int32_t> misses, kept;
  std::vector<char> host;

  cache.warm_up();  // before step 0: not timed
  const bool spec = cache.speculative();
  FluidLinks links(fluid ? std::clamp(rates.joint_copy_gbps / rates.copy_gbps, 1e-6, 1.0) : 1.0,
                   fluid ? std::clamp(rates.joint_host_gbps / rates.host_gbps, 1e-6, 1.0) : 1.0, ready_at);
  std::vector<int64_t> copy_no(shape.n_keys(), -1);  // fluid: each key's last copy
  Rng rng = prediction_rng(opt.prediction.seed);
  std::vector<AccessResult> res, pre;
  std::vector<int32_t> predicted;

  // The runs (simulator.h): each its prompt (untimed, after what is still in flight has
  // landed) then its decode; the timed runs' decode time, tokens, counters and work add up.
  const int n_runs = opt.warmup_runs + opt.runs;
  CacheCounters timed;
  int64_t timed_ns = 0, timed_stall = 0, timed_tokens = 0, timed_host_parts = 0, timed_split_parts = 0;
  double timed_host_busy = 0, timed_copy_busy = 0;
  for (int run = 0; run < n_runs; ++run) {
    const RoutingTrace& tr = run < opt.warmup_runs && opt.warmup_trace ? *opt.warmup_trace : trace;
    if (run > 0 || opt.prefill_tokens > 0) {
      if (fluid) {
        links.settle(static_cast<double>(now));
      } else {
        for (int64_t& t : ready_at) t = std::min(t, now);
        link_free = std::min(link_free, now);
        host_free = std::min(host_free, now);
      }
    }
    run_prefill(tr, opt.prefill_tokens, opt.cpu_moe_layers, cache);
    if (run > 0) rng = prediction_rng(opt.prediction.seed);  // the engine's routing restarts every generation
    const CacheCounters run_counters = cache.counters();
    const int64_t run_now = now, run_stall = stall, run_tokens = tokens, run_host_parts = host_parts,
                  run_split_parts = split_parts;
    const double run_host_busy = fluid ? links.host_busy() : static_cast<double>(host_busy),
                 run_copy_busy = fluid ? links.copy_busy() : static_cast<double>(copy_busy);
    for (int s = opt.prefill_tokens; s < tr.n_steps(); ++s) {
      const int n_tok = tr.steps[s].n_tokens;
      tokens += n_tok;
      for (int l = 0; l < tr.n_layers; ++l) {
        if (fluid) {  // the joint model: both links on one clock (simulator.h)
          links.run_to(static_cast<double>(now));
          distinct_misses(cache, l, tr.ids(s, l), misses);
          const int n_miss = static_cast<int>(misses.size());
          const HybridPlan plan = balanced(l) ? balance->plan(n_miss)
                                              : hybrid_plan_for(opt.exec, opt.cpu_moe_layers, l, n_miss,
                                                                links.backlog_ns(), model);
          mark_host_experts(misses, plan.flagged(), tr.n_experts, host);
          cache.access_layer(s, l, tr.ids(s, l), res, host);
          int64_t last = -1;  // the last copy this layer waits for
          for (const AccessResult& r : res) {
            if (r.host) continue;
            const KeyIndex k = shape.index(r.key);
            if (!r.hit) copy_no[k] = links.copy(k, load_ns);
            if (copy_no[k] >= 0 && links.in_flight(copy_no[k])) last = std::max(last, copy_no[k]);
          }
          if (plan.split_parts > 0) {  // the split expert's copied parts: after this layer's copies
            last = std::max(last, links.copy(-1, plan_split_copy_ns(plan, rates)));
            split_parts += plan.split_units - plan.split_parts;
          }
          if (plan.host_parts() > 0) {
            links.host(rates.host_overhead_ns, plan_host_work_ns(plan, rates));
            host_parts += plan.host_parts();
          }
          if (balanced(l) && n_miss > 0) {  // was the link still copying when the host was done?
            links.run_until_host_done();
            balance->observe(n_miss, last >= 0 && links.in_flight(last));
          }
          if (spec && !balance && l + 1 < tr.n_layers && prefetch_allowed(opt.exec, opt.cpu_moe_layers, l + 1)) {
            degrade_prediction(tr.ids(s, l + 1), tr.top_k, tr.n_experts, opt.prediction.accuracy, rng, predicted);
            if (opt.exec == ExpertExec::hybrid) {
              distinct_misses(cache, l + 1, predicted, misses);
              const int k = hybrid_prefetch_count(static_cast<int>(misses.size()), links.backlog_ns(), plan, model);
              keep_prefetches(cache, l + 1, predicted, k, kept);
              cache.prefetch(s, l + 1, kept, pre);
            } else {
              cache.prefetch(s, l + 1, predicted, pre);
            }
            for (const AccessResult& r : pre) {  // issued as the layer starts, behind its copies
              const KeyIndex k = shape.index(r.key);
              copy_no[k] = links.copy(k, load_ns);
            }
          }
          const int64_t ready = std::max(now, static_cast<int64_t>(std::llround(links.run_until_done(last))));
          stall = add_ns(stall, ready - now);
          now = add_ns(ready, times(link.compute_ns_per_layer, n_tok, "the compute time of a step"));
          continue;
        }
        HybridPlan plan;
        if (host_link) {
          distinct_misses(cache, l, tr.ids(s, l), misses);
          plan = balanced(l) ? balance->plan(static_cast<int>(misses.size()))
                             : hybrid_plan_for(opt.exec, opt.cpu_moe_layers, l, static_cast<int>(misses.size()),
                                               std::max<int64_t>(0, link_free - now), model);
          mark_host_experts(misses, plan.flagged(), tr.n_experts, host);
          cache.access_layer(s, l, tr.ids(s, l), res, host);
        } else {
          cache.access_layer(s, l, tr.ids(s, l), res);
        }
        int64_t ready = now;
        for (const AccessResult& r : res) {
          if (r.host) continue;
          KeyIndex k = shape.index(r.key);
          if (!r.hit) {
            link_free = add_ns(std::max(link_free, now), load_ns);
            copy_busy = add_ns(copy_busy, load_ns);
            ready_at[k] = link_free;
          }
          ready = std::max(ready, ready_at[k]);
        }
        if (plan.split_parts > 0) {  // the split expert's copied parts: after this layer's copies
          const int64_t part = plan_split_copy_ns(plan, rates);
          link_free = add_ns(std::max(link_free, now), part);
          copy_busy = add_ns(copy_busy, part);
          split_parts += plan.split_units - plan.split_parts;
          ready = std::max(ready, link_free);
        }
        if (plan.host_parts() > 0) {
          const int64_t work = plan_host_ns(plan, rates);
          host_free = add_ns(std::max(host_free, now), work);
          host_busy = add_ns(host_busy, work);
          host_parts += plan.host_parts();
          ready = std::max(ready, host_free);
        }
        if (balanced(l) && !misses.empty())  // each link at its own rate: the link later than the host?
          balance->observe(static_cast<int>(misses.size()), link_free > host_free);
        stall = add_ns(stall, ready - now);
        if (spec && !balance && l + 1 < tr.n_layers && prefetch_allowed(opt.exec, opt.cpu_moe_layers, l + 1)) {
          degrade_prediction(tr.ids(s, l + 1), tr.top_k, tr.n_experts, opt.prediction.accuracy, rng, predicted);
          if (opt.exec == ExpertExec::hybrid) {  // copy ahead only what beats the host (hybrid_split.h)
            const int64_t backlog = std::max<int64_t>(0, link_free - now);
            distinct_misses(cache, l + 1, predicted, misses);
            const int k = hybrid_prefetch_count(static_cast<int>(misses.size()), backlog,
                                                hybrid_layer_left_ns(backlog, plan, model), model);
            keep_prefetches(cache, l + 1, predicted, k, kept);
            cache.prefetch(s, l + 1, kept, pre);
          } else {
            cache.prefetch(s, l + 1, predicted, pre);
          }
          // With the host link the engine issues the prefetches as the layer starts (before
          // the host computes): they queue behind the copies, not behind the layer.
          const int64_t issue = host_link ? now : ready;
          for (const AccessResult& r : pre) {
            link_free = add_ns(std::max(link_free, issue), load_ns);
            copy_busy = add_ns(copy_busy, load_ns);
            ready_at[shape.index(r.key)] = link_free;
          }
        }
        now = add_ns(ready, times(link.compute_ns_per_layer, n_tok, "the compute time of a step"));
      }
    }
    if (run + 1 == n_runs) cache.finish();  // the unused prefetches left count with the last run
    if (run >= opt.warmup_runs) {
      timed += counters_minus(cache.counters(), run_counters);
      timed_ns = add_ns(timed_ns, now - run_now);
      timed_stall = add_ns(timed_stall, stall - run_stall);
      timed_tokens += tokens - run_tokens;
      timed_host_parts += host_parts - run_host_parts;
      timed_split_parts += split_parts - run_split_parts;
      timed_host_busy += (fluid ? links.host_busy() : static_cast<double>(host_busy)) - run_host_busy;
      timed_copy_busy += (fluid ? links.copy_busy() : static_cast<double>(copy_busy)) - run_copy_busy;
    }
  }
  timed.warm_loads = cache.counters().warm_loads;

  SimResult out;
  out.policy = policy;
  out.capacity = capacity;
  out.counters = timed;
  host_busy = std::llround(timed_host_busy);
  copy_busy = std::llround(timed_copy_busy);
  host_parts = timed_host_parts;
  split_parts = timed_split_parts;
  now = timed_ns;
  stall = timed_stall;
  tokens = timed_tokens;
  out.tokens = tokens;
  out.demand_bytes = times(out.counters.misses, link.expert_bytes, "the demand bytes");
  out.prefetch_bytes = times(out.counters.prefetch_loads, link.expert_bytes, "the prefetched bytes");
  out.warm_bytes = times(out.counters.warm_loads, link.expert_bytes, "the warm-up bytes");
  out.host_bytes = times(host_parts, link.expert_bytes, "the host bytes") / std::max(1, link.split_units);
  out.split_bytes = times(split_parts, link.expert_bytes, "the split bytes") / std::max(1, link.split_units);
  out.host_busy_ns = host_busy;
  if (balance) out.balance_link_units = {balance->link_units(1), balance->link_units(2)};
  out.copy_busy_ns = copy_busy;
  out.decode_ns = now;
  out.stall_ns = stall;
  out.tokens_per_s = now > 0 ? static_cast<double>(tokens) * 1e9 / static_cast<double>(now)
                             : std::numeric_limits<double>::infinity();
  return out;
}

std::vector<SimResult> simulate_sweep(const RoutingTrace& trace, std::span<const std::string> policies,
                                      std::span<const int> capacities, const SimOptions& opt) {
  std::vector<SimResult> out;
  out.reserve(policies.size() * capacities.size());
  for (const std::string& p : policies) find_cache_policy(p);  // unknown names fail the whole sweep
  for (int c : capacities) {
    for (const std::string& p : policies) {
      try {
        out.push_back(simulate(trace, p, c, opt));
      } catch (const Error& e) {
        SimResult r;
        r.policy = p;
        r.capacity = c;
        r.error = e.what();
        out.push_back(std::move(r));
      }
    }
  }
  return out;
}

}  // namespace moebench
