// fields.cpp: see fields.h.
#include "reports/fields.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "profiler/stats.h"

namespace moebench::reports {

namespace {

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
// "-" rather than 0 B when the case recorded no memory figure at all (a batched bench case
// does not sample the device).
double mem_peak(const Case& c) {
  const int64_t b = memory_peak_bytes(c);
  return b > 0 ? when_ok(c, static_cast<double>(b)) : kNaN;
}
double load_time(const Case& c) { return c.experts.loads > 0 ? when_ok(c, c.aggregates.mean_expert_load_ns) : kNaN; }
double bound_pct(const Case& c) { return c.bound ? when_ok(c, c.bound->percent) : kNaN; }
double top1(const Case& c) { return c.quality ? when_ok(c, c.quality->top1_agreement) : kNaN; }
double kl(const Case& c) { return c.quality ? when_ok(c, c.quality->mean_kl) : kNaN; }
std::string kl_text(double v) { return fmt::format("{:.3g}", v); }

// Per-repetition samples of the timing columns (none for a failed case).
std::vector<double> figures(const Case& c, std::vector<double> RepetitionFigures::*which) {
  return ok(c) ? repetition_figures(c).*which : std::vector<double>{};
}
std::vector<double> prefill_samples(const Case& c) { return figures(c, &RepetitionFigures::prefill_tok_s); }
std::vector<double> decode_samples(const Case& c) { return figures(c, &RepetitionFigures::decode_tok_s); }
std::vector<double> cold_samples(const Case& c) { return figures(c, &RepetitionFigures::ttft_cold_ns); }
std::vector<double> warm_samples(const Case& c) { return figures(c, &RepetitionFigures::ttft_warm_ns); }

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
      // Prompt tokens of every sequence of the case over its prefill time: a total.
      {"prefill_tok_s", "prefill tok/s (total)", true,
       [](const Case& c) { return dash_or(when_ok(c, c.aggregates.prefill_tok_s), tok_s); },
       [](const Case& c) { return when_ok(c, c.aggregates.prefill_tok_s); }, prefill_samples},
      // Decode steps per second: each step adds one token to every sequence, so this
      // is the rate one sequence sees (a batch of B produces B times as many).
      {"decode_tok_s", "decode tok/s (per sequence)", true,
       [](const Case& c) { return dash_or(when_ok(c, c.aggregates.decode_tok_s), tok_s); },
       [](const Case& c) { return when_ok(c, c.aggregates.decode_tok_s); }, decode_samples},
      {"ttft_cold_ns", "TTFT cold (per sequence)", true, [](const Case& c) { return dash_or(ttft_cold(c), ns); },
       ttft_cold, cold_samples},
      {"ttft_warm_ns", "TTFT warm (per sequence)", true,
       [](const Case& c) { return dash_or(when_ok(c, c.aggregates.ttft_warm_ns), ns); },
       [](const Case& c) { return when_ok(c, c.aggregates.ttft_warm_ns); }, warm_samples},
      {"hit_rate", "hit rate", true, [](const Case& c) { return dash_or(hit_rate(c), pct); }, hit_rate},
      // Summed over the repetitions' loads (the counters are not kept per repetition).
      {"mean_expert_load_ns", "expert load (mean per copy)", true, [](const Case& c) { return dash_or(load_time(c), ns); },
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

MedianInterval column_interval(const SummaryColumn& col, const Case& c) {
  return col.samples ? median_interval(col.samples(c), kIntervalLevel) : MedianInterval{};
}

double interval_margin(const MedianInterval& m) {
  if (m.n < 2 || m.median == 0) return 0;
  return std::max(m.hi - m.median, m.median - m.lo) / std::abs(m.median);
}

std::string interval_suffix(const MedianInterval& m) {
  if (m.n == 0) return "";
  if (m.n == 1) return " (n=1, no CI)";
  const std::string pm = fmt::format(" ±{:.1f}%", interval_margin(m) * 100);
  if (m.reached) return fmt::format("{} (n={})", pm, m.n);
  return fmt::format("{} (n={}, {:.0f}% CI)", pm, m.n, std::floor(m.coverage * 100));
}

std::string cell_with_interval(const SummaryColumn& col, const Case& c) {
  std::string text = col.text(c);
  if (!col.samples || !std::isfinite(col.value(c))) return text;
  return text + interval_suffix(column_interval(col, c));
}

std::vector<WideInterval> wide_intervals(const Results& r) {
  std::vector<WideInterval> out;
  for (const Case& c : r.cases)
    for (const SummaryColumn& col : summary_columns()) {
      if (!col.samples || !std::isfinite(col.value(c))) continue;
      const MedianInterval m = column_interval(col, c);
      if (interval_margin(m) > kWideIntervalMargin)
        out.push_back({c.suite + "/" + c.name + " (" + c.settings.stage + ")", col.header, interval_margin(m), m.n});
    }
  return out;
}

IntervalNotes interval_notes(const Results& r) {
  IntervalNotes out;
  bool any = false;
  for (const Case& c : r.cases)
    for (const SummaryColumn& col : summary_columns()) any |= col.samples && column_interval(col, c).n > 0;
  if (!any) return out;
  out.legend = fmt::format(
      "Timings: median over the measured repetitions ± the distance to the farther end of its {:.0f}% confidence "
      "interval (distribution-free, from order statistics); n = repetitions. Fewer than 6 repetitions cannot reach "
      "{:.0f}%: the ± then spans all samples and the confidence it has is shown.",
      kIntervalLevel * 100, kIntervalLevel * 100);
  const std::vector<WideInterval> wide = wide_intervals(r);
  if (wide.empty()) return out;
  for (size_t i = 0; i < wide.size(); ++i) {
    const WideInterval& w = wide[i];
    const std::string cell = fmt::format("{} ±{:.1f}% (n={})", w.column, w.margin * 100, w.n);
    if (i > 0 && wide[i - 1].case_label == w.case_label) out.noisy.back() += ", " + cell;
    else out.noisy.push_back(w.case_label + ": " + cell);
  }
  out.warning = fmt::format("Warning: noisy timings, intervals wider than ±{:.0f}% in {} case(s). To narrow them: more "
                            "repetitions (--repetitions N), an idle machine, or fewer CPU threads than cores "
                            "(--threads N) so the engine does not compete with other work.",
                            kWideIntervalMargin * 100, out.noisy.size());
  return out;
}

}  // namespace moebench::reports
