// bench_table.h: a Google Benchmark JSON file (--benchmark_format=json, as the
// kernel and offload microbenchmarks write it: a "context" object and a
// "benchmarks" array) as a plain table — one row per benchmark run name, its time
// as median ± a confidence interval over its repetitions (reports::median_interval,
// as every table of the dashboard and the reports), bytes/s and items/s when
// present, and every user counter the file has. No ImGui here.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "reports/significance.h"

namespace moebench::ui {

struct BenchRow {
  std::string name;                   // run_name ("linear/gemv/w1_w3/M:1/...")
  std::string time_unit;              // as the file gives it: "ns", "us", "ms" or "s"
  reports::MedianInterval real_time;  // over the repetitions, in time_unit
  reports::MedianInterval cpu_time;
  int64_t iterations = 0;             // of the first repetition
  std::string error;                  // error_message of a skipped / failed benchmark
  std::map<std::string, double> counters;  // median over repetitions: bytes_per_second, items_per_second, user counters
  // The file had only aggregate rows (--benchmark_report_aggregates_only): the
  // "median" aggregate is shown as one value, of aggregate_repetitions repetitions.
  bool from_aggregate = false;
  int aggregate_repetitions = 0;
};

struct BenchTable {
  std::map<std::string, std::string> context;  // scalar context fields: host_name, date, num_cpus, device, ...
  std::vector<BenchRow> rows;                  // in file order of first appearance
  std::vector<std::string> counter_names;      // every counter some row has, bytes/items_per_second first
};

// A Google Benchmark file: an object with a "benchmarks" array and a "context" object.
bool is_google_benchmark_json(const nlohmann::json& j);
// Throws Error "SOURCE: benchmarks[i].FIELD: ..." on a row that is not a benchmark.
BenchTable bench_table_from_json(const nlohmann::json& j, const std::string& source);

// "34.97 us ±0.12 (n=5)": median, the larger side of the interval (its unit left
// out when the median's is the same), and n — "(5 cases)" when `what` is "cases";
// one value "(n=1)"; "(n=3, 75% CI)" when so few samples cannot reach 95%.
std::string interval_text(const reports::MedianInterval& m, const std::function<std::string(double)>& format,
                          const char* what = nullptr);

}  // namespace moebench::ui
