// compare.cpp: see compare.h.
#include "reports/compare.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <optional>

#include "common/error.h"
#include "profiler/stats.h"
#include "reports/markdown.h"
#include "reports/significance.h"

namespace moebench::reports {

namespace {

// ---- the timing metrics: samples per case, compared by their medians and by a test
// of whether the two sample sets differ beyond their noise.
struct TimingMetric {
  const char* name;
  std::vector<double> (*samples)(const Case&);
  bool normalisable;  // divided by the reference case's median under --normalize-by
  // The text of a median value.
  std::string (*text)(double);
};

std::vector<double> per_rep(const Case& c, std::optional<double> (*f)(const Repetition&)) {
  std::vector<double> v;
  for (const Repetition& r : c.samples)
    if (auto x = f(r)) v.push_back(*x);
  return v;
}

std::string ns_text(double v) { return profiler::format_ns(v); }

const std::vector<TimingMetric>& timing_metrics() {
  static const std::vector<TimingMetric> m = {
      // Every decode step is a sample.
      {"decode_step_ns",
       [](const Case& c) {
         std::vector<double> v;
         for (const Repetition& r : c.samples)
           for (int64_t x : decode_latencies(r)) v.push_back(static_cast<double>(x));
         return v;
       },
       true, ns_text},
      {"prefill_ns",
       [](const Case& c) {
         return per_rep(c, [](const Repetition& r) -> std::optional<double> {
           int64_t p = prefill_ns(r);
           if (p <= 0) return std::nullopt;
           return static_cast<double>(p);
         });
       },
       true, ns_text},
      {"ttft_warm_ns",
       [](const Case& c) {
         return per_rep(c, [](const Repetition& r) -> std::optional<double> {
           if (r.ttft_warm_ns <= 0) return std::nullopt;
           return static_cast<double>(r.ttft_warm_ns);
         });
       },
       true, ns_text},
      {"ttft_cold_ns",
       [](const Case& c) {
         return per_rep(c, [](const Repetition& r) -> std::optional<double> {
           if (!r.ttft_cold_ns || *r.ttft_cold_ns <= 0) return std::nullopt;
           return static_cast<double>(*r.ttft_cold_ns);
         });
       },
       true, ns_text},
      // Each decode step's time in units of the bound's time per token (1 = at the
      // bound): the bound comes from bandwidths measured in the same run, so this
      // carries across machines and runs; shown as % of bound (100 / value).
      {"decode_vs_bound",
       [](const Case& c) {
         std::vector<double> v;
         if (!c.bound || c.bound->unit != "tok/s" || !(c.bound->value > 0)) return v;
         for (const Repetition& r : c.samples)
           for (int64_t x : decode_latencies(r)) v.push_back(static_cast<double>(x) * c.bound->value / 1e9);
         return v;
       },
       false, [](double v) { return v > 0 ? fmt::format("{:.1f}% of bound", 100 / v) : std::string("-"); }},
  };
  return m;
}

std::optional<double> median_of(const std::vector<double>& v) {
  if (v.empty()) return std::nullopt;
  return profiler::median(v);
}

std::string case_key(const Case& c) { return c.suite + "/" + c.name + "@" + c.settings.stage; }

// The reference case named by `sel` in `r`: "suite/case@stage", "suite/case" or "case".
const Case& find_reference(const Results& r, const std::string& sel, const char* which) {
  std::vector<const Case*> hits;
  for (const Case& c : r.cases) {
    std::string sc = c.suite + "/" + c.name;
    if (sel == c.name || sel == sc || sel == case_key(c)) hits.push_back(&c);
  }
  if (hits.empty()) fail("--normalize-by {}: no such case in {} (use CASE, SUITE/CASE or SUITE/CASE@STAGE)", sel, which);
  if (hits.size() > 1)
    fail("--normalize-by {}: {} cases match in {} ({} and {}...); name it as SUITE/CASE@STAGE", sel, hits.size(), which,
         case_key(*hits[0]), case_key(*hits[1]));
  if (hits[0]->status != CaseStatus::ok)
    fail("--normalize-by {}: the reference case failed in {}: {}", sel, which, hits[0]->error);
  // Dividing by a zero timing would leave nothing to compare: refuse it rather than
  // skip every row and pass.
  bool any = false;
  for (const TimingMetric& m : timing_metrics()) {
    if (!m.normalisable) continue;
    std::vector<double> v = m.samples(*hits[0]);
    if (v.empty()) continue;
    const double med = profiler::median(v);
    if (!(med > 0))
      fail("--normalize-by {}: the reference case's {} is {} in {}, expected a positive time to divide by", sel,
           m.name, med, which);
    any = true;
  }
  if (!any) fail("--normalize-by {}: the reference case has no timing in {} (every timing is zero or absent)", sel, which);
  return *hits[0];
}

std::string hit_rate_text(const ExpertCounters& e) {
  return fmt::format("{:.4f}% ({}/{})", e.hit_rate() * 100, e.hits, static_cast<double>(e.hits) + static_cast<double>(e.misses));
}

std::string knob_text(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

class Comparer {
 public:
  Comparer(const CompareOptions& opt, CompareReport& rep) : opt_(opt), rep_(rep) {}

  void set_reference(const Case* base_ref, const Case* cur_ref) {
    base_ref_ = base_ref;
    cur_ref_ = cur_ref;
  }

  void compare_case(const Case& b, const Case& n) {
    settings_notes(b, n);
    if (b.status == CaseStatus::failed) {
      row(b, "status", "failed", to_string(n.status), kNaN, Verdict::skipped, "failed in BASE: nothing to compare with");
      return;
    }
    if (n.status == CaseStatus::failed) {
      row(b, "status", "ok", "failed", kNaN, Verdict::failed, n.error);
      return;
    }
    exact(b, "output_token_hash", b.output_token_hash, n.output_token_hash,
          b.output_token_hash.empty() || n.output_token_hash.empty());
    // A NEW case whose repetitions disagree among themselves has no one answer to compare.
    if (!n.other_tokens_repetitions.empty())
      row(b, "repetition_tokens", b.other_tokens_repetitions.empty() ? "same" : "differ", "differ", kNaN,
          Verdict::changed, other_tokens_note(n));
    bool hr_equal = b.experts.hit_rate() == n.experts.hit_rate();
    row(b, "hit_rate", hit_rate_text(b.experts), hit_rate_text(n.experts), kNaN, hr_equal ? Verdict::ok : Verdict::changed, "");
    exact(b, "bytes_moved", std::to_string(b.experts.bytes_moved), std::to_string(n.experts.bytes_moved), false);
    if (b.memory.allocation_count && n.memory.allocation_count)
      exact(b, "allocation_count", std::to_string(*b.memory.allocation_count), std::to_string(*n.memory.allocation_count),
            false);
    for (const TimingMetric& m : timing_metrics()) timing(b, n, m);
  }

  void row(const Case& c, const std::string& metric, std::string base, std::string cur, double ratio, Verdict v,
           std::string note) {
    rep_.rows.push_back({c.suite, c.name, c.settings.stage, metric, std::move(base), std::move(cur), ratio, v, std::move(note)});
  }

 private:
  void exact(const Case& b, const char* metric, const std::string& bv, const std::string& nv, bool absent) {
    if (absent) {
      row(b, metric, bv, nv, kNaN, Verdict::skipped, "absent in one file");
      return;
    }
    row(b, metric, bv, nv, kNaN, bv == nv ? Verdict::ok : Verdict::changed, "");
  }

  void timing(const Case& b, const Case& n, const TimingMetric& m) {
    std::vector<double> bs_v = m.samples(b), ns_v = m.samples(n);
    std::optional<double> bv = median_of(bs_v), nv = median_of(ns_v);
    if (!bv && !nv) return;  // not measured in either: no row
    std::string bs = bv ? m.text(*bv) : "", ns = nv ? m.text(*nv) : "";
    if (!bv || !nv) {
      row(b, m.name, bs, ns, kNaN, Verdict::skipped, bv ? "not measured in NEW" : "not measured in BASE");
      return;
    }
    if (base_ref_ && m.normalisable) {
      if (case_key(b) == case_key(*base_ref_)) {
        row(b, m.name, bs, ns, *nv / *bv, Verdict::skipped, "reference case (raw ratio shown)");
        return;
      }
      std::optional<double> br = median_of(m.samples(*base_ref_)), nr = median_of(m.samples(*cur_ref_));
      if (!br || !nr) {
        row(b, m.name, bs, ns, kNaN, Verdict::skipped, fmt::format("reference case has no {}", m.name));
        return;
      }
      for (double& x : bs_v) x /= *br;
      for (double& x : ns_v) x /= *nr;
      bs += fmt::format(" ({:.3f}x ref)", *bv / *br);
      ns += fmt::format(" ({:.3f}x ref)", *nv / *nr);
    }
    if (!(*median_of(bs_v) > 0)) {
      row(b, m.name, bs, ns, kNaN, Verdict::skipped, "BASE value is 0");
      return;
    }
    const UTest u = mann_whitney_u(bs_v, ns_v);
    // Fewer draws for very large sample sets keep compare fast; the seed is fixed.
    const size_t total = bs_v.size() + ns_v.size();
    const int draws = static_cast<int>(std::clamp<size_t>(20'000'000 / std::max<size_t>(total, 1), 200, 2000));
    const RatioInterval ci = bootstrap_median_ratio(bs_v, ns_v, 0.95, draws);
    const std::string stats = fmt::format("n {} vs {}, 95% CI {:+.1f}%..{:+.1f}%, p {:.2g}", bs_v.size(), ns_v.size(),
                                          (ci.lo - 1) * 100, (ci.hi - 1) * 100, u.p);
    Verdict v = Verdict::ok;
    std::string note;
    if (u.min_p > kSignificance) {
      v = Verdict::inconclusive;
      note = fmt::format("too few samples to tell a change from noise ({})", stats);
    } else if (u.p >= kSignificance) {
      note = fmt::format("within noise ({})", stats);
    } else if (ci.lo > 1 + opt_.max_slowdown) {
      v = Verdict::regression;
      note = stats;
    } else if (ci.hi < 1 - opt_.max_slowdown) {
      v = Verdict::faster;
      note = stats;
    } else {
      note = fmt::format("a change, but its interval reaches within the allowed {} ({})",
                         profiler::format_percent(opt_.max_slowdown), stats);
    }
    row(b, m.name, bs, ns, ci.ratio, v, note);
  }

  void settings_notes(const Case& b, const Case& n) {
    std::string diff;
    auto add = [&](const std::string& k, const std::string& x, const std::string& y) {
      diff += fmt::format("{}{}: {} -> {}", diff.empty() ? "" : ", ", k, x, y);
    };
    for (const auto& [k, v] : b.settings.knobs) {
      auto it = n.settings.knobs.find(k);
      if (it == n.settings.knobs.end()) add(k, knob_text(v), "(absent)");
      else if (it->second != v) add(k, knob_text(v), knob_text(it->second));
    }
    for (const auto& [k, v] : n.settings.knobs)
      if (!b.settings.knobs.count(k)) add(k, "(absent)", knob_text(v));
    if (b.routing_source != n.routing_source) add("routing_source", b.routing_source, n.routing_source);
    if (b.prompt_tokens != n.prompt_tokens) add("prompt_tokens", std::to_string(b.prompt_tokens), std::to_string(n.prompt_tokens));
    if (b.new_tokens != n.new_tokens) add("new_tokens", std::to_string(b.new_tokens), std::to_string(n.new_tokens));
    if (!diff.empty()) rep_.notes.push_back(fmt::format("{}: settings differ: {}", case_key(b), diff));
  }

  const CompareOptions& opt_;
  CompareReport& rep_;
  const Case* base_ref_ = nullptr;
  const Case* cur_ref_ = nullptr;
};

}  // namespace

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::ok: return "ok";
    case Verdict::faster: return "faster";
    case Verdict::regression: return "REGRESSION";
    case Verdict::changed: return "CHANGED";
    case Verdict::missing: return "MISSING";
    case Verdict::failed: return "FAILED";
    case Verdict::added: return "added";
    case Verdict::skipped: return "skipped";
    case Verdict::inconclusive: return "inconclusive";
  }
  return "?";
}

bool is_failure(Verdict v) {
  return v == Verdict::regression || v == Verdict::changed || v == Verdict::missing || v == Verdict::failed;
}

int CompareReport::failures() const {
  int n = 0;
  for (const CompareRow& r : rows) n += is_failure(r.verdict);
  return n;
}

CompareReport compare_results(const Results& base, const Results& cur, const CompareOptions& opt) {
  CompareReport rep;
  rep.max_slowdown = opt.max_slowdown;
  bool same_device = base.device.kind == cur.device.kind && base.device.name == cur.device.name;
  if (!same_device) {
    if (!opt.force)
      fail("devices differ: BASE ran on {} \"{}\", NEW on {} \"{}\"; timings are not comparable (pass --force to compare anyway)",
           to_string(base.device.kind), base.device.name, to_string(cur.device.kind), cur.device.name);
    rep.notes.push_back(fmt::format("devices differ (forced): BASE {} \"{}\", NEW {} \"{}\"", to_string(base.device.kind),
                                    base.device.name, to_string(cur.device.kind), cur.device.name));
  }
  if (base.model.name != cur.model.name || base.model.config != cur.model.config ||
      base.model.weight_source != cur.model.weight_source || base.model.dtype != cur.model.dtype)
    rep.notes.push_back(fmt::format("models differ: BASE {} ({}, {}), NEW {} ({}, {})", base.model.name, base.model.dtype,
                                    base.model.weight_source, cur.model.name, cur.model.dtype, cur.model.weight_source));
  if (base.run.commit != cur.run.commit)
    rep.notes.push_back(fmt::format("commits: BASE {}, NEW {}", base.run.commit, cur.run.commit));

  Comparer cmp(opt, rep);
  if (!opt.normalize_by.empty()) {
    const Case& br = find_reference(base, opt.normalize_by, "BASE");
    const Case& nr = find_reference(cur, opt.normalize_by, "NEW");
    cmp.set_reference(&br, &nr);
    rep.notes.push_back(fmt::format("timings normalised by {} in each file", case_key(br)));
  }

  // Match by key; repeated keys pair up in order of appearance.
  std::map<std::string, std::vector<const Case*>> cur_by_key;
  for (const Case& c : cur.cases) cur_by_key[case_key(c)].push_back(&c);
  std::map<std::string, size_t> used;
  for (const Case& b : base.cases) {
    std::string k = case_key(b);
    auto& list = cur_by_key[k];
    size_t& i = used[k];
    if (i >= list.size()) {
      cmp.row(b, "case", "present", "", kNaN, Verdict::missing, "case absent from NEW");
      continue;
    }
    cmp.compare_case(b, *list[i++]);
  }
  for (const auto& [k, list] : cur_by_key)
    for (size_t i = used[k]; i < list.size(); ++i)
      cmp.row(*list[i], "case", "", "present", kNaN, Verdict::added, "case only in NEW");
  for (const auto& [k, n] : used)
    if (n > 1) rep.notes.push_back(fmt::format("{} appears {} times; matched in order of appearance", k, n));

  rep.pass = rep.failures() == 0;
  return rep;
}

std::string format_compare(const CompareReport& rep) {
  std::vector<std::vector<std::string>> rows;
  for (const CompareRow& r : rep.rows)
    rows.push_back({r.suite + "/" + r.case_name, r.stage, r.metric, r.base, r.current,
                    std::isfinite(r.ratio) ? profiler::format_delta(r.ratio) : "", to_string(r.verdict), r.note});
  std::string out = markdown_table({"case", "stage", "metric", "BASE", "NEW", "delta", "verdict", "note"},
                                   {false, false, false, true, true, true, false, false}, rows);
  if (!rep.notes.empty()) {
    out += "\n";
    for (const auto& n : rep.notes) out += "note: " + n + "\n";
  }
  int fails = rep.failures(), unsure = 0;
  for (const CompareRow& r : rep.rows) unsure += r.verdict == Verdict::inconclusive;
  out += fmt::format("\n{}: {} row(s), {} failing, {} inconclusive (max slowdown {}, applied to the 95% interval of the "
                     "median ratio)\n",
                     rep.pass ? "PASS" : "FAIL", rep.rows.size(), fails, unsure, profiler::format_percent(rep.max_slowdown));
  return out;
}

double parse_percent(const std::string& s) {
  std::string t = s;
  if (!t.empty() && t.back() == '%') t.pop_back();
  char* end = nullptr;
  double v = t.empty() ? kNaN : std::strtod(t.c_str(), &end);
  if (t.empty() || end != t.c_str() + t.size() || !std::isfinite(v) || v < 0 || v >= 1000)
    fail("'{}' is not a percentage, expected e.g. 5% (0 to 999)", s);
  return v / 100;
}

}  // namespace moebench::reports
