// formats.cpp: see formats.h.
#include "reports/formats.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "reports/fields.h"
#include "reports/html.h"
#include "reports/markdown.h"

namespace moebench::reports {

namespace {

// RFC 4180: quoted when it holds a comma, a quote or a line break; quotes doubled.
std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

// A summary column's cell: the raw number for numeric columns (empty when not
// applicable), the formatted text otherwise.
nlohmann::json cell(const SummaryColumn& col, const Case& c) {
  if (col.numeric) {
    const double v = col.value(c);
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  }
  return col.text(c);
}

// A case's summary in column order: each column's cell, and after a timing column
// its 95% interval of the median over the repetitions: KEY_ci_lo, KEY_ci_hi, the
// interval's exact coverage KEY_ci_coverage (below 0.95 with too few repetitions)
// and the repetitions KEY_n (null when not applicable).
std::vector<std::pair<std::string, nlohmann::json>> summary_cells(const Case& c) {
  std::vector<std::pair<std::string, nlohmann::json>> out;
  for (const SummaryColumn& col : summary_columns()) {
    const nlohmann::json v = cell(col, c);
    out.emplace_back(col.key, v);
    if (!col.samples) continue;
    const MedianInterval m = column_interval(col, c);
    const bool has = !v.is_null() && m.n > 0;
    auto num = [&](double x) { return has && std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
    out.emplace_back(std::string(col.key) + "_ci_lo", num(m.lo));
    out.emplace_back(std::string(col.key) + "_ci_hi", num(m.hi));
    out.emplace_back(std::string(col.key) + "_ci_coverage", num(m.coverage));
    out.emplace_back(std::string(col.key) + "_n", has ? nlohmann::json(m.n) : nlohmann::json(nullptr));
  }
  return out;
}

}  // namespace

const char* format_names() { return "md|csv|json|jsonl|html"; }

void check_format(const std::string& name) {
  if (name != "md" && name != "csv" && name != "json" && name != "jsonl" && name != "html")
    fail("--format {}: expected one of {}", name, format_names());
}

std::string render_csv(const Results& r) {
  std::string out;
  for (const auto& [key, v] : summary_cells(Case{})) out += (out.empty() ? "" : ",") + key;
  out += "\n";
  for (const Case& c : r.cases) {
    std::string line;
    bool first = true;
    for (const auto& [key, v] : summary_cells(c)) {
      if (!first) line += ',';
      first = false;
      if (!v.is_null()) line += v.is_string() ? csv_cell(v.get<std::string>()) : v.dump();
    }
    out += line + "\n";
  }
  return out;
}

std::string render_jsonl(const Results& r) {
  std::string out;
  for (const Case& c : r.cases) {
    nlohmann::json row = nlohmann::json::object();
    for (const auto& [key, v] : summary_cells(c)) row[key] = v;
    row["device"] = r.device.name;
    row["commit"] = r.run.commit;
    out += row.dump() + "\n";
  }
  return out;
}

std::string render_as(const Results& r, const std::string& format) {
  check_format(format);
  if (format == "md") return render_markdown(r);
  if (format == "csv") return render_csv(r);
  if (format == "jsonl") return render_jsonl(r);
  if (format == "html") return render_html(r);
  return to_json(r).dump(1) + "\n";
}

std::string compare_to_json(const CompareReport& rep) {
  nlohmann::json rows = nlohmann::json::array();
  for (const CompareRow& row : rep.rows)
    rows.push_back({{"suite", row.suite},
                    {"case", row.case_name},
                    {"stage", row.stage},
                    {"metric", row.metric},
                    {"base", row.base},
                    {"new", row.current},
                    {"ratio", std::isfinite(row.ratio) ? nlohmann::json(row.ratio) : nlohmann::json(nullptr)},
                    {"verdict", to_string(row.verdict)},
                    {"failure", is_failure(row.verdict)},
                    {"note", row.note}});
  nlohmann::json j = {{"pass", rep.pass},
                      {"failures", rep.failures()},
                      {"max_slowdown", rep.max_slowdown},
                      {"notes", rep.notes},
                      {"rows", rows}};
  return j.dump(1) + "\n";
}

}  // namespace moebench::reports
