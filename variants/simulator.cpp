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

  cache.warm_up();  // before step 0: not timed
  const bool spec = cache.speculative();
  Rng rng = prediction_rng(opt.prediction.seed);
  std::vector<AccessResult> res, pre;
  std::vector<int32_t> predicted;

  for (int s = 0; s < trace.n_steps(); ++s) {
    const int n_tok = trace.steps[s].n_tokens;
    tokens += n_tok;
    for (int l = 0; l < trace.n_layers; ++l) {
      cache.access_layer(s, l, trace.ids(s, l), res);
      int64_t ready = now;
      for (const AccessResult& r : res) {
        KeyIndex k = shape.index(r.key);
        if (!r.hit) {
          link_free = add_ns(std::max(link_free, now), load_ns);
          ready_at[k] = link_free;
        }
        ready = std::max(ready, ready_at[k]);
      }
      stall = add_ns(stall, ready - now);
      if (spec && l + 1 < trace.n_layers) {
        degrade_prediction(trace.ids(s, l + 1), trace.top_k, trace.n_experts, opt.prediction.accuracy, rng, predicted);
        cache.prefetch(s, l + 1, predicted, pre);
        for (const AccessResult& r : pre) {
          link_free = add_ns(std::max(link_free, ready), load_ns);
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
