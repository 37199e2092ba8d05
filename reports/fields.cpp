// fields.cpp: see fields.h.
#include "reports/fields.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "profiler/stats.h"

namespace moebench::reports {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
bool ok(const Case& c) { return c.status == CaseStatus::ok; }
double none(const Case&) { return kNaN; }
// A value of an ok case, or NaN.
double when_ok(const Case& c, double v) { return ok(c) && std::isfinite(v) ? v : kNaN; }
std::string dash_or(double v, std::string (*f)(double)) { return std::isfinite(v) ? f(v) : "-"; }

std::string tok_s(double v) { return profiler::format_rate(v, "tok/s"); }
std::string ns(double v) { return profiler::format_ns(v); }
std::string pct(double v) { return profiler::format_percent(v); }
std::string bytes(double v) { return profiler::format_bytes(v); }
std::string pct100(double v) { return profiler::format_percent(v / 100); }

double ttft_cold(const Case& c) { return c.aggregates.ttft_cold_ns > 0 ? when_ok(c, c.aggregates.ttft_cold_ns) : kNaN; }
// "-" rather than 0% when the engine counted no expert lookups at all.
double hit_rate(const Case& c) {
  // No sum: a file's counters may be anything up to 2^63 (found by fuzz_results).
  return c.experts.hits > 0 || c.experts.misses > 0 ? when_ok(c, c.aggregates.hit_rate) : kNaN;
}
double mem_peak(const Case& c) { return when_ok(c, static_cast<double>(memory_peak_bytes(c))); }
double load_time(const Case& c) { return c.experts.loads > 0 ? when_ok(c, c.aggregates.mean_expert_load_ns) : kNaN; }
double bound_pct(const Case& c) { return c.bound ? when_ok(c, c.bound->percent) : kNaN; }
double top1(const Case& c) { return c.quality ? when_ok(c, c.quality->top1_agreement) : kNaN; }
double kl(const Case& c) { return c.quality ? when_ok(c, c.quality->mean_kl) : kNaN; }
std::string kl_text(double v) { return fmt::format("{:.3g}", v); }

}  // namespace

int64_t memory_peak_bytes(const Case& c) {
  const int64_t device = std::max(c.memory.arena_peak_bytes, c.memory.device_used_peak_bytes);
  return device > 0 ? device : c.memory.host_peak_rss_bytes;
}

const std::vector<SummaryColumn>& summary_columns() {
  static const std::vector<SummaryColumn> cols = {
      {"suite", "suite", false, [](const Case& c) { return c.suite; }, none},
      {"case", "case", false, [](const Case& c) { return c.name; }, none},
      {"stage", "stage", false, [](const Case& c) { return c.settings.stage; }, none},
      {"status", "status", false, [](const Case& c) { return std::string(to_string(c.status)); }, none},
      {"prefill_tok_s", "prefill tok/s", true,
       [](const Case& c) { return dash_or(when_ok(c, c.aggregates.prefill_tok_s), tok_s); },
       [](const Case& c) { return when_ok(c, c.aggregates.prefill_tok_s); }},
      {"decode_tok_s", "decode tok/s", true,
       [](const Case& c) { return dash_or(when_ok(c, c.aggregates.decode_tok_s), tok_s); },
       [](const Case& c) { return when_ok(c, c.aggregates.decode_tok_s); }},
      {"ttft_cold_ns", "TTFT cold", true, [](const Case& c) { return dash_or(ttft_cold(c), ns); }, ttft_cold},
      {"ttft_warm_ns", "TTFT warm", true,
       [](const Case& c) { return dash_or(when_ok(c, c.aggregates.ttft_warm_ns), ns); },
       [](const Case& c) { return when_ok(c, c.aggregates.ttft_warm_ns); }},
      {"hit_rate", "hit rate", true, [](const Case& c) { return dash_or(hit_rate(c), pct); }, hit_rate},
      {"mean_expert_load_ns", "expert load", true, [](const Case& c) { return dash_or(load_time(c), ns); },
       load_time},
      {"memory_peak_bytes", "memory peak", true, [](const Case& c) { return dash_or(mem_peak(c), bytes); },
       mem_peak},
      {"bound_percent", "% of bound", true, [](const Case& c) { return dash_or(bound_pct(c), pct100); },
       bound_pct},
      // Quantised experts: next-token agreement and KL against the same model in bf16.
      {"expert_dtype", "experts", false,
       [](const Case& c) {
         auto it = c.settings.knobs.find("expert_dtype");
         if (it == c.settings.knobs.end()) return std::string("-");
         return it->second.is_string() ? it->second.get<std::string>() : it->second.dump();
       },
       none},
      {"top1_agreement", "top-1 vs bf16", true, [](const Case& c) { return dash_or(top1(c), pct); }, top1},
      {"mean_kl", "KL vs bf16", true, [](const Case& c) { return dash_or(kl(c), kl_text); }, kl},
  };
  return cols;
}

}  // namespace moebench::reports
