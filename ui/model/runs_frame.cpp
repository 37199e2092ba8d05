// runs_frame.cpp: see runs_frame.h.
#include "ui/model/runs_frame.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>

#include "common/units.h"
#include "reports/fields.h"
#include "ui/model/case_intervals.h"

namespace moebench::ui {

namespace {

// The identity columns the summary table lacks; text only.
struct IdentityColumn {
  const char* key;
  const char* header;
  std::string (*text)(const std::string& file, const reports::Results&, const reports::Case&);
};

const std::vector<IdentityColumn>& identity_columns() {
  static const std::vector<IdentityColumn> cols = {
      {"file", "file",
       [](const std::string& f, const reports::Results&, const reports::Case&) {
         return std::filesystem::path(f).filename().string();
       }},
      {"model", "model", [](const std::string&, const reports::Results& r, const reports::Case&) { return r.model.name; }},
      {"device", "device", [](const std::string&, const reports::Results& r, const reports::Case&) { return r.device.name; }},
      {"policy", "policy",
       [](const std::string&, const reports::Results&, const reports::Case& c) { return knob_text(c, "cache_policy"); }},
      {"routing", "routing",
       [](const std::string&, const reports::Results&, const reports::Case& c) { return c.routing_source; }},
  };
  return cols;
}

bool contains_ci(const std::string& hay, const std::string& needle) {
  if (needle.empty()) return true;
  auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
  });
  return it != hay.end();
}

}  // namespace

std::string knob_text(const reports::Case& c, const std::string& key) {
  auto it = c.settings.knobs.find(key);
  if (it == c.settings.knobs.end() || it->second.is_null()) return "";
  return it->second.is_string() ? it->second.get<std::string>() : it->second.dump();
}

std::vector<RunsColumn> runs_columns() {
  std::vector<RunsColumn> cols;
  for (auto& c : identity_columns()) cols.push_back({c.key, c.header, false});
  for (auto& c : reports::summary_columns()) cols.push_back({c.key, c.header, c.numeric});
  return cols;
}

int runs_column_index(const std::string& key) {
  auto cols = runs_columns();
  for (size_t i = 0; i < cols.size(); ++i)
    if (cols[i].key == key) return static_cast<int>(i);
  return -1;
}

RunsFrame build_runs_frame(const Sources& s, const RunsFilter& filter, int sort_column, bool ascending) {
  RunsFrame f;
  f.columns = runs_columns();
  const auto& ids = identity_columns();
  const auto& sums = reports::summary_columns();
  for (CaseRef ref : s.all_cases()) {
    const reports::Results& r = *s.results_of(ref);
    const reports::Case& c = *s.find(ref);
    const std::string& path = s.results[static_cast<size_t>(ref.file)].path;
    ++f.total;
    if (!contains_ci(r.model.name, filter.model) || !contains_ci(c.settings.stage, filter.stage) ||
        !contains_ci(c.suite, filter.suite) || !contains_ci(knob_text(c, "cache_policy"), filter.policy) ||
        !contains_ci(c.routing_source, filter.routing) || !contains_ci(r.device.name, filter.device))
      continue;
    RunRow row;
    row.ref = ref;
    for (auto& col : ids) {
      row.cells.push_back(col.text(path, r, c));
      row.values.push_back(kNaN);
    }
    for (auto& col : sums) {
      // Timings with one value per repetition: median ± its interval and n.
      bool interval = c.status == reports::CaseStatus::ok && has_repetition_values(col.key);
      row.cells.push_back(interval ? case_interval_text(c, col.key) : col.text(c));
      row.values.push_back(col.value(c));
    }
    row.failed = c.status == reports::CaseStatus::failed;
    row.error = c.error;
    f.rows.push_back(std::move(row));
  }
  if (sort_column >= 0 && sort_column < static_cast<int>(f.columns.size())) {
    size_t k = static_cast<size_t>(sort_column);
    bool numeric = f.columns[k].numeric;
    std::stable_sort(f.rows.begin(), f.rows.end(), [&](const RunRow& a, const RunRow& b) {
      if (numeric) {
        double x = a.values[k], y = b.values[k];
        bool xn = std::isnan(x), yn = std::isnan(y);
        if (xn || yn) return !xn && yn;  // n/a last in both directions
        return ascending ? x < y : x > y;
      }
      return ascending ? a.cells[k] < b.cells[k] : a.cells[k] > b.cells[k];
    });
  }
  return f;
}

}  // namespace moebench::ui
