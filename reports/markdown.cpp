// markdown.cpp: see markdown.h.
#include "reports/markdown.h"

#include <fmt/format.h>

#include <algorithm>

#include "profiler/stats.h"
#include "reports/fields.h"

namespace moebench::reports {

namespace {

std::string cell_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '|') out += "\\|";
    else if (ch == '\n' || ch == '\r') out += ' ';
    else out += ch;
  }
  return out;
}

// Display width in code points (cells may hold UTF-8 such as "µ" or "×").
size_t width(const std::string& s) {
  size_t n = 0;
  for (unsigned char ch : s)
    if ((ch & 0xC0) != 0x80) ++n;
  return n;
}

}  // namespace

std::string markdown_table(const std::vector<std::string>& headers, const std::vector<bool>& right,
                           const std::vector<std::vector<std::string>>& rows) {
  size_t n = headers.size();
  std::vector<std::vector<std::string>> cells;
  cells.reserve(rows.size() + 1);
  cells.push_back({});
  for (const auto& h : headers) cells.back().push_back(cell_escape(h));
  for (const auto& r : rows) {
    cells.push_back({});
    for (size_t i = 0; i < n; ++i) cells.back().push_back(i < r.size() ? cell_escape(r[i]) : "");
  }
  std::vector<size_t> w(n, 3);
  for (const auto& r : cells)
    for (size_t i = 0; i < n; ++i) w[i] = std::max(w[i], width(r[i]));
  auto is_right = [&](size_t i) { return i < right.size() && right[i]; };
  auto line = [&](const std::vector<std::string>& r) {
    std::string out = "|";
    for (size_t i = 0; i < n; ++i) {
      size_t pad = w[i] - width(r[i]);
      out.push_back(' ');
      if (is_right(i)) out.append(pad, ' ');
      out.append(r[i]);
      if (!is_right(i)) out.append(pad, ' ');
      out.append(" |");
    }
    return out + "\n";
  };
  std::string out = line(cells[0]);
  out += "|";
  for (size_t i = 0; i < n; ++i) {
    out.push_back(' ');
    out.append(is_right(i) ? w[i] - 1 : w[i], '-');
    out.append(is_right(i) ? ": |" : " |");
  }
  out += "\n";
  for (size_t r = 1; r < cells.size(); ++r) out += line(cells[r]);
  return out;
}

namespace {
// How a bound's resources combine, as the bounds list says it.
std::string time_model_text(const std::string& m) {
  if (m == "serial") return " (serial: the times add up)";
  if (m == "overlap") return " (overlapped: the slowest resource sets the limit)";
  return "";
}
}  // namespace

std::string device_line(const DeviceInfo& d) {
  auto gbps = [](double v) { return profiler::format_gbps(v); };
  const std::string mem = profiler::format_bytes(static_cast<double>(d.memory_bytes));
  std::vector<std::string> measured;
  if (d.kind == DeviceKind::cuda) {
    if (d.hbm_gbps > 0) {
      std::string hbm = "HBM " + gbps(d.hbm_gbps);
      if (d.hbm_read_gbps > 0 && d.hbm_copy_gbps > 0)
        hbm += fmt::format(" (best of read stream {} and copy kernel {})", gbps(d.hbm_read_gbps), gbps(d.hbm_copy_gbps));
      else
        hbm += " (copy kernel)";
      measured.push_back(hbm);
    }
    if (d.h2d_gbps > 0) measured.push_back("host->device " + gbps(d.h2d_gbps));
  } else if (d.hbm_gbps > 0) {
    measured.push_back("memory copy " + gbps(d.hbm_gbps));
  }
  if (d.disk_read_gbps > 0) measured.push_back("checkpoint disk read " + gbps(d.disk_read_gbps));
  std::string out = d.kind == DeviceKind::cuda
                        ? fmt::format("{} (cuda, {} SMs, {}), driver {}", d.name, d.sm_count, mem, d.driver.empty() ? "-" : d.driver)
                        : fmt::format("{} (cpu, {} RAM)", d.name, mem);
  for (size_t i = 0; i < measured.size(); ++i) out += (i == 0 ? "; measured " : ", ") + measured[i];
  return out;
}

std::string render_markdown(const Results& r) {
  std::string out;
  out += fmt::format("## moebench results: {} on {}\n\n", r.model.name, r.device.name);
  out += "- device: " + device_line(r.device) + "\n";
  out += fmt::format("- host: {} ({}, {} cores, {})\n", r.host.name, r.host.cpu_model, r.host.cores,
                     profiler::format_bytes(static_cast<double>(r.host.memory_bytes)));
  out += fmt::format("- model: {} ({}, weights {})\n", r.model.name, r.model.dtype, r.model.weight_source);
  if (r.model.shared_setup_ns > 0)
    out += fmt::format("- shared setup: {:.1f} s, once per run (the pinned expert host store: allocate + fill), not in any "
                       "TTFT cold\n", static_cast<double>(r.model.shared_setup_ns) * 1e-9);
  out += fmt::format("- build: moebench {} commit {} ({}), started {}\n\n", r.run.tool_version, r.run.commit,
                     r.run.build_type, r.run.start_time);
  const auto& cols = summary_columns();
  std::vector<std::string> headers;
  std::vector<bool> right;
  for (const auto& c : cols) {
    headers.push_back(c.header);
    right.push_back(c.numeric);
  }
  std::vector<std::vector<std::string>> rows;
  for (const Case& c : r.cases) {
    rows.push_back({});
    for (const auto& col : cols) rows.back().push_back(cell_with_interval(col, c));
  }
  out += markdown_table(headers, right, rows);
  const IntervalNotes notes = interval_notes(r);
  if (!notes.legend.empty()) out += "\n" + notes.legend + "\n";
  if (!notes.warning.empty()) {
    out += "\n" + notes.warning + "\n\n";
    for (const std::string& line : notes.noisy) out += "- " + line + "\n";
  }
  bool any_failed = false;
  for (const Case& c : r.cases)
    if (c.status == CaseStatus::failed) {
      if (!any_failed) out += "\nFailed cases:\n\n";
      any_failed = true;
      out += fmt::format("- {}/{} ({}): {}\n", c.suite, c.name, c.settings.stage, c.error);
    }
  bool any_other = false;
  for (const Case& c : r.cases) {
    const std::string note = other_tokens_note(c);
    if (note.empty()) continue;
    if (!any_other) out += "\nRepetitions with other tokens:\n\n";
    any_other = true;
    out += fmt::format("- {}/{} ({}): {}\n", c.suite, c.name, c.settings.stage, note);
  }
  bool any_bound = false;
  for (const Case& c : r.cases) {
    if (c.status != CaseStatus::ok || (!c.bound && c.no_bound_reason.empty())) continue;
    if (!any_bound) out += "\nBounds:\n\n";
    any_bound = true;
    if (c.bound) {
      out += fmt::format("- {}/{} ({}): {} = {} {}{}\n", c.suite, c.name, c.settings.stage, c.bound->description,
                         fmt::format("{:.4g}", c.bound->value), c.bound->unit, time_model_text(c.bound->time_model));
      if (const std::string over = bound_exceeded(*c.bound); !over.empty()) out += "  **above its bound**: " + over + "\n";
    } else
      out += fmt::format("- {}/{} ({}): no bound: {}\n", c.suite, c.name, c.settings.stage, c.no_bound_reason);
  }
  return out;
}

}  // namespace moebench::reports
