// html.cpp: see html.h.
#include "reports/html.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "profiler/stats.h"
#include "reports/fields.h"
#include "reports/markdown.h"
#include "reports/svg.h"

namespace moebench::reports {

namespace {

using svg::escape;

constexpr const char* kCss = R"(body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 8px}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fde8e8}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}dt{font-weight:bold}
details{margin:12px 0;border-top:1px solid #ddd;padding-top:6px}summary{font-weight:bold;cursor:pointer}
.err{color:#b00}.warn{color:#8a5300;background:#fff4e0;padding:4px 8px}td.wide{background:#fff4e0}.note{color:#666;font-size:12px}svg{display:block;margin:8px 0})";

std::string label(const Case& c) { return c.suite + "/" + c.name + " (" + c.settings.stage + ")"; }
std::string fmt_ns(double v) { return profiler::format_ns(v); }
std::string fmt_tok_s(double v) { return profiler::format_rate(v, "tok/s"); }
std::string fmt_pct(double v) { return profiler::format_percent(v); }
std::string fmt_bytes(double v) { return profiler::format_bytes(v); }

// A value of a timing column in its unit: the keys end in _ns or _tok_s.
std::string in_unit(const SummaryColumn& col, double v) {
  const std::string key = col.key;
  return key.size() > 3 && key.compare(key.size() - 3, 3, "_ns") == 0 ? fmt_ns(v) : fmt_tok_s(v);
}

std::string header(const Results& r) {
  auto row = [](const char* k, const std::string& v) { return fmt::format("<dt>{}</dt><dd>{}</dd>\n", k, escape(v)); };
  std::string out = "<dl>\n";
  out += row("device", device_line(r.device));
  out += row("host", fmt::format("{} ({}, {} cores, {})", r.host.name, r.host.cpu_model, r.host.cores,
                                 profiler::format_bytes(static_cast<double>(r.host.memory_bytes))));
  out += row("model", fmt::format("{} ({}), weights {}", r.model.name, r.model.dtype, r.model.weight_source));
  out += row("build", fmt::format("moebench {} commit {} ({})", r.run.tool_version, r.run.commit, r.run.build_type));
  out += row("started", r.run.start_time);
  std::string cmd;
  for (const auto& a : r.run.command_line) cmd += (cmd.empty() ? "" : " ") + a;
  out += row("command", cmd);
  if (!r.run.trace_file.empty()) out += row("trace", r.run.trace_file);
  out += row("schema_version", std::to_string(r.schema_version));
  return out + "</dl>\n";
}

std::string summary_table(const Results& r) {
  const auto& cols = summary_columns();
  std::string out = "<table>\n<tr>";
  for (const auto& c : cols) out += "<th>" + escape(c.header) + "</th>";
  out += "</tr>\n";
  for (const Case& c : r.cases) {
    out += c.status == CaseStatus::failed ? "<tr class=\"failed\">" : "<tr>";
    for (const auto& col : cols) {
      std::string text = cell_with_interval(col, c), title;
      if (col.key == std::string("status") && c.status == CaseStatus::failed) text += ": " + c.error;
      const MedianInterval m = column_interval(col, c);
      // The interval itself on hover, in the column's own unit.
      if (m.n >= 2 && std::isfinite(col.value(c)))
        title = fmt::format(" title=\"{}\"", escape(fmt::format("{:.0f}% interval of the median: {} to {}",
                                                                  m.coverage * 100, in_unit(col, m.lo), in_unit(col, m.hi))));
      const bool wide = interval_margin(m) > kWideIntervalMargin && std::isfinite(col.value(c));
      out += fmt::format("<td{}{}>{}</td>", col.numeric ? (wide ? " class=\"num wide\"" : " class=\"num\"") : "",
                         title, escape(text));
    }
    out += "</tr>\n";
  }
  out += "</table>\n";
  const IntervalNotes notes = interval_notes(r);
  if (!notes.legend.empty()) out += "<p class=\"note\">" + escape(notes.legend) + "</p>\n";
  if (!notes.warning.empty()) {
    out += "<div class=\"warn\"><p>" + escape(notes.warning) + "</p>\n<ul>\n";
    for (const std::string& line : notes.noisy) out += "<li>" + escape(line) + "</li>\n";
    out += "</ul></div>\n";
  }
  return out;
}

std::string overview_charts(const Results& r) {
  std::vector<std::string> labels;
  svg::BarSeries decode{"decode tok/s (per sequence)", {}, "#4c78a8"}, prefill{"prefill tok/s (total)", {}, "#f58518"};
  svg::BarSeries cold{"TTFT cold", {}, "#e45756"}, warm{"TTFT warm", {}, "#72b7b2"};
  for (const Case& c : r.cases) {
    bool ok = c.status == CaseStatus::ok;
    labels.push_back(label(c));
    decode.values.push_back(ok ? c.aggregates.decode_tok_s : NAN);
    prefill.values.push_back(ok ? c.aggregates.prefill_tok_s : NAN);
    cold.values.push_back(ok && c.aggregates.ttft_cold_ns > 0 ? c.aggregates.ttft_cold_ns : NAN);
    warm.values.push_back(ok ? c.aggregates.ttft_warm_ns : NAN);
  }
  if (labels.empty()) return "<p class=\"note\">No cases finished yet.</p>\n";
  return svg::bar_chart("Decode throughput per sequence, per case", labels, {decode}, fmt_tok_s) +
         svg::bar_chart("Prefill throughput per case", labels, {prefill}, fmt_tok_s) +
         svg::bar_chart("Time to first token per case", labels, {cold, warm}, fmt_ns);
}

std::vector<double> to_double(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

std::string case_section(const Case& c, bool open) {
  std::string out = fmt::format("<details{}><summary>{}</summary>\n", open ? " open" : "", escape(label(c)));
  std::string knobs;
  for (const auto& [k, v] : c.settings.knobs) knobs += (knobs.empty() ? "" : ", ") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  out += fmt::format("<p class=\"note\">routing {}; {} prompt tokens, {} new tokens, {} repetitions (+{} warm-up); "
                     "output hash {}; settings: {}</p>\n",
                     escape(c.routing_source), c.prompt_tokens, c.new_tokens, c.repetitions, c.warmup,
                     escape(c.output_token_hash.empty() ? "-" : c.output_token_hash), escape(knobs.empty() ? "-" : knobs));
  if (c.status == CaseStatus::failed) out += "<p class=\"err\">failed: " + escape(c.error) + "</p>\n";
  if (const std::string note = other_tokens_note(c); !note.empty())
    out += "<p class=\"err\">Other tokens: " + escape(note) + "</p>\n";
  if (c.bound) {
    out += fmt::format("<p>Bound: {} = {:.4g} {}; reached {}</p>\n", escape(c.bound->description), c.bound->value,
                       escape(c.bound->unit), escape(profiler::format_percent(c.bound->percent / 100)));
    if (const std::string over = bound_exceeded(*c.bound); !over.empty())
      out += "<p class=\"err\">Above its bound: " + escape(over) + "</p>\n";
  }
  if (!c.samples.empty()) {
    const Repetition& rep = c.samples.front();
    std::vector<int64_t> dec = decode_latencies(rep);
    profiler::Stats st = profiler::summarize(dec);
    // Each phase decimated on its own, then mapped back to step indices.
    std::vector<double> decode_y = to_double(dec), prefill_y;
    std::vector<size_t> decode_step, prefill_step;
    for (size_t i = 0; i < rep.latency_ns.size(); ++i) {
      if (rep.phase[i] == Phase::prefill) {
        prefill_y.push_back(static_cast<double>(rep.latency_ns[i]));
        prefill_step.push_back(i);
      } else {
        decode_step.push_back(i);
      }
    }
    std::vector<Point> dp = decimate(decode_y, kMaxChartPoints);
    for (Point& p : dp) p.x = static_cast<double>(decode_step[static_cast<size_t>(p.x)]);
    std::vector<Point> pp = decimate(prefill_y, 64);
    for (Point& p : pp) p.x = static_cast<double>(prefill_step[static_cast<size_t>(p.x)]);
    // A prefill step may be 100x a decode step; cap the axis so decode stays readable and say so.
    double y_cap = st.n > 0 ? st.max_ns * 1.1 : -1;
    std::vector<svg::RefLine> refs;
    if (st.n > 0)
      refs = {{"p50", st.p50_ns, "#54a24b"}, {"p90", st.p90_ns, "#eeca3b"}, {"p99", st.p99_ns, "#e45756"}};
    double prefill_max = prefill_y.empty() ? 0 : *std::max_element(prefill_y.begin(), prefill_y.end());
    std::string prefill_name = "prefill";
    if (y_cap > 0 && prefill_max > y_cap)
      prefill_name = fmt::format("prefill (up to {}, drawn at the top)", profiler::format_ns(prefill_max));
    out += svg::line_chart("Per-step latency, repetition 1",
                           {{"decode", dp, "#4c78a8", false}, {prefill_name, pp, "#f58518", true}}, refs, "step", fmt_ns,
                           y_cap);
    out += fmt::format("<p class=\"note\">prefill: {} step(s), {} in total; decode: {} steps, median {}, mean {}, stddev {}"
                       "{}</p>\n",
                       prefill_y.size(), escape(profiler::format_ns(static_cast<double>(prefill_ns(rep)))), st.n,
                       escape(profiler::format_ns(st.median_ns)), escape(profiler::format_ns(st.mean_ns)),
                       escape(profiler::format_ns(st.stddev_ns)),
                       dec.size() > kMaxChartPoints ? fmt::format(" ({} decode steps drawn as min/max of buckets)", dec.size()) : "");
  }
  if (!c.hit_rate.overall.empty()) {
    std::vector<svg::LineSeries> ls = {{"all layers", decimate(c.hit_rate.overall, kMaxChartPoints), "#54a24b", false}};
    out += svg::line_chart("Expert-cache hit rate over tokens", ls, {}, "step", fmt_pct, 1.0);
  }
  if (!c.memory.timeline.empty()) {
    std::vector<double> arena, used;
    for (const MemoryPoint& p : c.memory.timeline) {
      arena.push_back(static_cast<double>(p.arena_bytes));
      used.push_back(static_cast<double>(p.device_used_bytes));
    }
    out += svg::line_chart("Memory over the case (sample index)",
                           {{"arena", decimate(arena, kMaxChartPoints), "#4c78a8", false},
                            {"device used", decimate(used, kMaxChartPoints), "#e45756", false}},
                           {}, "sample", fmt_bytes);
  }
  if (!c.experts.usage.empty())
    out += svg::heatmap("Expert usage (token assignments)", c.experts.usage, "layer", "expert");
  if (!c.gpu_time_ns.empty()) {
    out += "<table><tr><th>GPU time category</th><th>time</th></tr>\n";
    for (const auto& [k, v] : c.gpu_time_ns)
      out += fmt::format("<tr><td>{}</td><td class=\"num\">{}</td></tr>\n", escape(k),
                         escape(profiler::format_ns(static_cast<double>(v))));
    out += "</table>\n";
  }
  return out + "</details>\n";
}

}  // namespace

std::string render_html(const Results& r) {
  std::string title = fmt::format("moebench: {} on {}", r.model.name, r.device.name);
  std::string out = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  out += "<title>" + escape(title) + "</title>\n<style>\n" + kCss + "\n</style>\n</head>\n<body>\n";
  out += "<h1>" + escape(title) + "</h1>\n";
  out += header(r);
  out += "<h2>Summary</h2>\n" + summary_table(r);
  out += "<h2>Overview</h2>\n" + overview_charts(r);
  out += "<h2>Cases</h2>\n";
  for (const Case& c : r.cases) out += case_section(c, r.cases.size() <= 6);
  out += "</body>\n</html>\n";
  return out;
}

}  // namespace moebench::reports
