// sources.cpp: see sources.h.
#include "ui/model/sources.h"

#include <fmt/format.h>

#include <exception>

#include "common/error.h"
#include "ui/model/file_text.h"

namespace moebench::ui {

namespace {

ResultsFile results_from(const std::string& path, const nlohmann::json& j) {
  ResultsFile f;
  f.path = path;
  try {
    if (is_google_benchmark_json(j))
      fail("{}: a Google Benchmark file, not moebench results (it opens in the Benchmarks view)", path);
    f.results = reports::results_from_json(j, path);
  } catch (const std::exception& e) {
    f.error = e.what();
  }
  return f;
}

BenchFile bench_from(const std::string& path, const nlohmann::json& j) {
  BenchFile f;
  f.path = path;
  try {
    f.table = bench_table_from_json(j, path);
  } catch (const std::exception& e) {
    f.error = e.what();
  }
  return f;
}

// A file that could not be read or parsed: only its error line.
template <typename File>
File unreadable(const std::string& path, const std::exception& e) {
  File f;
  f.path = path;
  f.error = e.what();
  return f;
}

}  // namespace

ResultsFile load_results_file(const std::string& path) {
  try {
    return results_from(path, read_json_file(path));
  } catch (const std::exception& e) {
    return unreadable<ResultsFile>(path, e);
  }
}

BenchFile load_bench_file(const std::string& path) {
  try {
    return bench_from(path, read_json_file(path));
  } catch (const std::exception& e) {
    return unreadable<BenchFile>(path, e);
  }
}

void Sources::add_results_or_benchmark(const std::string& path) {
  nlohmann::json j;
  try {
    j = read_json_file(path);
  } catch (const std::exception& e) {
    results.push_back(unreadable<ResultsFile>(path, e));
    return;
  }
  if (is_google_benchmark_json(j))
    benchmarks.push_back(bench_from(path, j));
  else
    results.push_back(results_from(path, j));
}

TraceFile load_trace_file(const std::string& path) {
  TraceFile f;
  f.path = path;
  nlohmann::json j;
  try {
    j = read_json_file(path);  // its errors name the file
  } catch (const std::exception& e) {
    f.error = e.what();
    return f;
  }
  try {
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
  for (auto& b : benchmarks)
    if (!b.table) out.push_back(b.error);
  for (auto& t : traces) {
    if (!t.trace) out.push_back(t.error);
    for (size_t i = 0; i < t.warnings.size() && i < 3; ++i) out.push_back(t.warnings[i]);
    if (t.warnings.size() > 3) out.push_back(fmt::format("{}: {} more trace problems", t.path, t.warnings.size() - 3));
  }
  return out;
}

std::string case_backend(const reports::Results& r, const reports::Case& c) {
  auto it = c.settings.knobs.find("backend");
  if (it != c.settings.knobs.end() && it->second.is_string() && !it->second.get<std::string>().empty())
    return it->second.get<std::string>();
  return reports::to_string(r.device.kind);
}

std::string case_label(const reports::Case& c) {
  return fmt::format("{}/{} [{}]", c.suite, c.name, c.settings.stage);
}

}  // namespace moebench::ui
