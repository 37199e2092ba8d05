// simulator.cpp: see simulator.h.
#include "variants/simulator.h"

#include <algorithm>
#include <cmath>
#include <limits>

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
  HybridRates rates{link.h2d_gbps,        link.host_gbps,   link.expert_bytes, link.host_overhead_ns,
                    link.split_units, link.split_copies};
  if (host_link) check_hybrid_rates(rates, "simulate (host link)");

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
  Rng rng = prediction_rng(opt.prediction.seed);
  std::vector<AccessResult> res, pre;
  std::vector<int32_t> predicted;

  for (int s = 0; s < trace.n_steps(); ++s) {
    const int n_tok = trace.steps[s].n_tokens;
    tokens += n_tok;
    for (int l = 0; l < trace.n_layers; ++l) {
      HybridPlan plan;
      if (host_link) {
        distinct_misses(cache, l, trace.ids(s, l), misses);
        plan = hybrid_plan_for(opt.exec, opt.cpu_moe_layers, l, static_cast<int>(misses.size()),
                               std::max<int64_t>(0, link_free - now), rates);
        mark_host_experts(misses, plan.flagged(), trace.n_experts, host);
        cache.access_layer(s, l, trace.ids(s, l), res, host);
      } else {
        cache.access_layer(s, l, trace.ids(s, l), res);
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
      stall = add_ns(stall, ready - now);
      if (spec && l + 1 < trace.n_layers && prefetch_allowed(opt.exec, opt.cpu_moe_layers, l + 1)) {
        degrade_prediction(trace.ids(s, l + 1), trace.top_k, trace.n_experts, opt.prediction.accuracy, rng, predicted);
        if (opt.exec == ExpertExec::hybrid) {  // copy ahead only what beats the host (hybrid_split.h)
          const int64_t backlog = std::max<int64_t>(0, link_free - now);
          distinct_misses(cache, l + 1, predicted, misses);
          const int k = hybrid_prefetch_count(static_cast<int>(misses.size()), backlog,
                                              hybrid_layer_left_ns(backlog, plan, rates), rates);
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
  cache.finish();

  SimResult out;
  out.policy = policy;
  out.capacity = capacity;
  out.counters = cache.counters();
  out.tokens = tokens;
  out.demand_bytes = times(out.counters.misses, link.expert_bytes, "the demand bytes");
  out.prefetch_bytes = times(out.counters.prefetch_loads, link.expert_bytes, "the prefetched bytes");
  out.warm_bytes = times(out.counters.warm_loads, link.expert_bytes, "the warm-up bytes");
  out.host_bytes = times(host_parts, link.expert_bytes, "the host bytes") / std::max(1, link.split_units);
  out.split_bytes = times(split_parts, link.expert_bytes, "the split bytes") / std::max(1, link.split_units);
  out.host_busy_ns = host_busy;
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
