// sources.h: the files the dashboard shows — results files, Chrome traces and
// Google Benchmark JSON (the kernel microbenchmarks), plain or gzip-compressed —
// loaded so that nothing a file contains can crash the UI: every load returns
// either the parsed data or one error line naming the file.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "reports/results.h"
#include "ui/model/bench_table.h"
#include "ui/model/trace_model.h"

namespace moebench::ui {

struct ResultsFile {
  std::string path;
  std::optional<reports::Results> results;  // absent when the file could not be used
  std::string error;                        // one line when results is absent
};

struct TraceFile {
  std::string path;
  std::optional<TraceModel> trace;
  std::string error;                  // one line when trace is absent
  std::vector<std::string> warnings;  // format problems in a trace still shown (first few)
};

struct BenchFile {
  std::string path;
  std::optional<BenchTable> table;
  std::string error;  // one line when table is absent
};

// Never throw: bad JSON, a wrong schema, a missing file all become `error`.
ResultsFile load_results_file(const std::string& path);
TraceFile load_trace_file(const std::string& path);
BenchFile load_bench_file(const std::string& path);

// A case of one of the loaded files.
struct CaseRef {
  int file = -1;  // index into Sources::results
  int index = -1; // index into that file's cases
  bool valid() const { return file >= 0 && index >= 0; }
  bool operator==(const CaseRef&) const = default;
};

struct Sources {
  std::vector<ResultsFile> results;  // in command-line order (live runs appended)
  std::vector<TraceFile> traces;
  std::vector<BenchFile> benchmarks;

  // A file named on the command line: a Google Benchmark file joins `benchmarks`,
  // anything else `results` (where a file that is no results file gets its error).
  void add_results_or_benchmark(const std::string& path);

  // The case, or nullptr when `ref` points at nothing (file failed, out of range).
  const reports::Case* find(CaseRef ref) const;
  const reports::Results* results_of(CaseRef ref) const;
  // Every case of every loaded file, in order.
  std::vector<CaseRef> all_cases() const;
  // Error lines of every file that could not be used ("PATH: ...").
  std::vector<std::string> errors() const;
};

// "suite/case [stage]" for menus and titles.
std::string case_label(const reports::Case& c);

// The backend a case ran on: its "backend" knob (moebench bench records one), else
// the results file's device kind ("cpu", "cuda").
std::string case_backend(const reports::Results& r, const reports::Case& c);

}  // namespace moebench::ui
