// sources.cpp: see sources.h.
#include "ui/model/sources.h"

#include <fmt/format.h>

#include <exception>
#include <fstream>
#include <sstream>

namespace moebench::ui {

ResultsFile load_results_file(const std::string& path) {
  ResultsFile f;
  f.path = path;
  try {
    f.results = reports::load_results(path);
  } catch (const std::exception& e) {
    f.error = e.what();
  } catch (...) {
    f.error = path + ": unknown error while reading";
  }
  return f;
}

TraceFile load_trace_file(const std::string& path) {
  TraceFile f;
  f.path = path;
  try {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      f.error = fmt::format("{}: cannot open the trace file", path);
      return f;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(ss.str());
    } catch (const nlohmann::json::parse_error& e) {
      f.error = fmt::format("{}: invalid JSON at byte {}: {}", path, e.byte, e.what());
      return f;
    }
    f.trace = trace_from_json(j, &f.warnings);
    if (f.trace->span_count() == 0 && f.trace->counters.empty())
      f.warnings.insert(f.warnings.begin(), "the trace has no slices and no counters");
    for (auto& w : f.warnings) w = path + ": " + w;
  } catch (const std::exception& e) {
    f.trace.reset();
    f.error = fmt::format("{}: {}", path, e.what());
  }
  return f;
}

const reports::Results* Sources::results_of(CaseRef ref) const {
  if (ref.file < 0 || ref.file >= static_cast<int>(results.size())) return nullptr;
  const auto& f = results[static_cast<size_t>(ref.file)];
  return f.results ? &*f.results : nullptr;
}

const reports::Case* Sources::find(CaseRef ref) const {
  const reports::Results* r = results_of(ref);
  if (!r || ref.index < 0 || ref.index >= static_cast<int>(r->cases.size())) return nullptr;
  return &r->cases[static_cast<size_t>(ref.index)];
}

std::vector<CaseRef> Sources::all_cases() const {
  std::vector<CaseRef> out;
  for (size_t f = 0; f < results.size(); ++f)
    if (results[f].results)
      for (size_t i = 0; i < results[f].results->cases.size(); ++i)
        out.push_back({static_cast<int>(f), static_cast<int>(i)});
  return out;
}

std::vector<std::string> Sources::errors() const {
  std::vector<std::string> out;
  for (auto& f : results)
    if (!f.results) out.push_back(f.error);
  for (auto& t : traces) {
    if (!t.trace) out.push_back(t.error);
    for (size_t i = 0; i < t.warnings.size() && i < 3; ++i) out.push_back(t.warnings[i]);
    if (t.warnings.size() > 3) out.push_back(fmt::format("{}: {} more trace problems", t.path, t.warnings.size() - 3));
  }
  return out;
}

std::string case_label(const reports::Case& c) {
  return fmt::format("{}/{} [{}]", c.suite, c.name, c.settings.stage);
}

}  // namespace moebench::ui
