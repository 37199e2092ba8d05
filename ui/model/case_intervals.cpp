// case_intervals.cpp: see case_intervals.h.
#include "ui/model/case_intervals.h"

#include "profiler/stats.h"
#include "ui/model/bench_table.h"

namespace moebench::ui {

bool has_repetition_values(const std::string& key) {
  return key == "decode_tok_s" || key == "prefill_tok_s" || key == "ttft_cold_ns" || key == "ttft_warm_ns";
}

std::vector<double> repetition_values(const reports::Case& c, const std::string& key) {
  std::vector<double> v;
  if (c.status != reports::CaseStatus::ok) return v;
  for (const reports::Repetition& r : c.samples) {
    if (key == "decode_tok_s") {
      profiler::Stats s = profiler::summarize(reports::decode_latencies(r));
      if (s.n > 0 && s.sum_ns > 0) v.push_back(static_cast<double>(s.n) * 1e9 / static_cast<double>(s.sum_ns));
    } else if (key == "prefill_tok_s") {
      int64_t p = reports::prefill_ns(r);
      if (p > 0 && c.prompt_tokens > 0) v.push_back(c.prompt_tokens * 1e9 / static_cast<double>(p));
    } else if (key == "ttft_cold_ns") {
      if (r.ttft_cold_ns && *r.ttft_cold_ns > 0) v.push_back(static_cast<double>(*r.ttft_cold_ns));
    } else if (key == "ttft_warm_ns") {
      v.push_back(static_cast<double>(r.ttft_warm_ns));
    }
  }
  return v;
}

std::optional<reports::MedianInterval> case_interval(const reports::Case& c, const std::string& key) {
  std::vector<double> v = repetition_values(c, key);
  if (v.empty()) return std::nullopt;
  return reports::median_interval(std::move(v));
}

std::string case_interval_text(const reports::Case& c, const std::string& key) {
  auto m = case_interval(c, key);
  if (!m) return "-";
  bool rate = key == "decode_tok_s" || key == "prefill_tok_s";
  if (rate) return interval_text(*m, [](double v) { return profiler::format_rate(v, "tok/s"); });
  return interval_text(*m, [](double v) { return profiler::format_ns(v); });
}

}  // namespace moebench::ui
