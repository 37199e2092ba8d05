// bench_table.cpp: see bench_table.h.
#include "ui/model/bench_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>

#include "common/error.h"

namespace moebench::ui {

namespace {

// Fields every benchmark row has that are not counters.
bool is_standard_field(const std::string& k) {
  static const std::set<std::string> s = {"name", "family_index", "per_family_instance_index", "run_name", "run_type",
                                          "repetitions", "repetition_index", "threads", "iterations", "real_time",
                                          "cpu_time", "time_unit", "aggregate_name", "aggregate_unit", "error_occurred",
                                          "error_message", "label", "big_o", "rms", "complexity_n"};
  return s.count(k) > 0;
}

double number(const nlohmann::json& b, const char* key, const std::string& where) {
  auto it = b.find(key);
  if (it == b.end() || !it->is_number()) fail("{}.{}: expected a number", where, key);
  return it->get<double>();
}

// Optional fields: absent gives the fallback, any other type than the one Google Benchmark
// writes is an error naming the field (nlohmann's own type errors name no file).
std::string text_or(const nlohmann::json& b, const char* key, const std::string& fallback, const std::string& where) {
  auto it = b.find(key);
  if (it == b.end()) return fallback;
  if (!it->is_string()) fail("{}.{}: expected a string", where, key);
  return it->get<std::string>();
}

bool flag_or(const nlohmann::json& b, const char* key, const std::string& where) {
  auto it = b.find(key);
  if (it == b.end()) return false;
  if (!it->is_boolean()) fail("{}.{}: expected true or false", where, key);
  return it->get<bool>();
}

// A count (iterations, repetitions): a non-negative integer, 0 when absent.
int64_t count_or_zero(const nlohmann::json& b, const char* key, const std::string& where) {
  auto it = b.find(key);
  if (it == b.end()) return 0;
  if (it->is_number_unsigned() && it->get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX))
    return static_cast<int64_t>(it->get<uint64_t>());
  if (it->is_number_integer() && it->get<int64_t>() >= 0) return it->get<int64_t>();
  fail("{}.{}: expected a non-negative integer, got {}", where, key, it->dump());
}

struct Samples {
  std::vector<double> real, cpu;
  std::map<std::string, std::vector<double>> counters;
  int64_t iterations = 0;
  std::string unit, error;
  int repetitions = 0;
  bool aggregate = false;
};

}  // namespace

bool is_google_benchmark_json(const nlohmann::json& j) {
  return j.is_object() && j.contains("benchmarks") && j["benchmarks"].is_array() && j.contains("context") &&
         j["context"].is_object();
}

BenchTable bench_table_from_json(const nlohmann::json& j, const std::string& source) {
  if (!is_google_benchmark_json(j)) fail("{}: not a Google Benchmark file (expected \"context\" and a \"benchmarks\" array)", source);
  BenchTable t;
  for (auto& [k, v] : j["context"].items())
    if (v.is_string())
      t.context[k] = v.get<std::string>();
    else if (v.is_number() || v.is_boolean())
      t.context[k] = v.dump();
  std::vector<std::string> order;
  std::map<std::string, Samples> iters, medians;  // iteration rows; "median" aggregate rows
  std::set<std::string> counter_set;
  const auto& arr = j["benchmarks"];
  for (size_t i = 0; i < arr.size(); ++i) {
    const auto& b = arr[i];
    std::string where = fmt::format("{}: benchmarks[{}]", source, i);
    if (!b.is_object()) fail("{}: expected an object", where);
    auto name_it = b.find("run_name");
    if (name_it == b.end()) name_it = b.find("name");
    if (name_it == b.end() || !name_it->is_string()) fail("{}.name: expected a string", where);
    std::string name = name_it->get<std::string>();
    std::string run_type = text_or(b, "run_type", "iteration", where);
    Samples* s = nullptr;
    if (run_type == "iteration") {
      s = &iters[name];
    } else if (run_type == "aggregate" && text_or(b, "aggregate_name", "", where) == "median") {
      s = &medians[name];
      s->aggregate = true;
    } else {
      continue;  // mean, stddev, cv, BigO, RMS: derived, not samples
    }
    if (std::find(order.begin(), order.end(), name) == order.end()) order.push_back(name);
    if (flag_or(b, "error_occurred", where)) {
      s->error = text_or(b, "error_message", "error", where);
      continue;
    }
    s->real.push_back(number(b, "real_time", where));
    s->cpu.push_back(number(b, "cpu_time", where));
    std::string unit = text_or(b, "time_unit", "ns", where);
    if (unit != "ns" && unit != "us" && unit != "ms" && unit != "s")
      fail("{}.time_unit: \"{}\", expected ns, us, ms or s", where, unit);
    if (!s->unit.empty() && s->unit != unit) fail("{}.time_unit: {} but earlier repetitions are in {}", where, unit, s->unit);
    s->unit = unit;
    const int64_t iterations = count_or_zero(b, "iterations", where);
    if (s->iterations == 0) s->iterations = iterations;
    const int64_t repetitions = count_or_zero(b, "repetitions", where);
    if (repetitions > INT32_MAX) fail("{}.repetitions: {}, expected at most {}", where, repetitions, INT32_MAX);
    if (b.contains("repetitions")) s->repetitions = static_cast<int>(repetitions);
    for (auto& [k, v] : b.items())
      if (!is_standard_field(k) && v.is_number()) {
        s->counters[k].push_back(v.get<double>());
        counter_set.insert(k);
      }
  }
  for (auto& name : order) {
    bool has_iter = iters.count(name) && (!iters[name].real.empty() || !iters[name].error.empty());
    const Samples& s = has_iter ? iters[name] : medians[name];
    BenchRow r;
    r.name = name;
    r.time_unit = s.unit;
    r.iterations = s.iterations;
    r.error = s.error;
    r.from_aggregate = !has_iter;
    r.real_time = reports::median_interval(s.real);
    r.cpu_time = reports::median_interval(s.cpu);
    if (r.from_aggregate) r.aggregate_repetitions = s.repetitions;
    for (auto& [k, v] : s.counters) r.counters[k] = reports::median_interval(v).median;
    t.rows.push_back(std::move(r));
  }
  for (const char* first : {"bytes_per_second", "items_per_second"})
    if (counter_set.erase(first)) t.counter_names.push_back(first);
  t.counter_names.insert(t.counter_names.end(), counter_set.begin(), counter_set.end());
  return t;
}

std::string interval_text(const reports::MedianInterval& m, const std::function<std::string(double)>& format, const char* what) {
  if (m.n == 0) return "-";
  std::string noun = what ? what : "";
  if (m.n == 1 && !noun.empty() && noun.back() == 's') noun.pop_back();  // "1 rep", "1 case"
  std::string n_text = what ? fmt::format("{} {}", m.n, noun) : fmt::format("n={}", m.n);
  std::string med = format(m.median);
  if (m.n == 1) return fmt::format("{} ({})", med, n_text);
  std::string half = format(std::max(m.hi - m.median, m.median - m.lo));
  // "12.3 tok/s ±0.4": the unit once when both figures carry the same one.
  auto unit = [](const std::string& t) { auto sp = t.find(' '); return sp == std::string::npos ? std::string() : t.substr(sp); };
  if (!unit(med).empty() && unit(med) == unit(half)) half.resize(half.size() - unit(half).size());
  std::string out = fmt::format("{} ±{} ({}", med, half, n_text);
  if (!m.reached) out += fmt::format(", {:.0f}% CI", std::floor(m.coverage * 100));
  return out + ")";
}

}  // namespace moebench::ui
