// results.cpp: see results.h. The reader is strict: every field is required
// unless marked optional in results.h, every type and enum value is checked,
// unknown fields are refused (a typo must not vanish silently), and every error
// names the JSON path of the offending value.
#include "reports/results.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "common/error.h"
#include "profiler/stats.h"
#include "common/atomic_file.h"

namespace moebench::reports {

using nlohmann::json;

// ---------------------------------------------------------------- derived

double ExpertCounters::hit_rate() const {
  // In double: a file's counters may be anything up to 2^63, whose int64 sum overflows.
  const double lookups = static_cast<double>(hits) + static_cast<double>(misses);
  return lookups > 0 ? static_cast<double>(hits) / lookups : 0.0;
}

double ExpertCounters::mean_load_ns() const {
  return loads > 0 ? static_cast<double>(load_time_ns) / static_cast<double>(loads) : 0.0;
}

int64_t prefill_ns(const Repetition& r) {
  int64_t t = 0;
  for (size_t i = 0; i < r.latency_ns.size() && i < r.phase.size(); ++i)
    if (r.phase[i] == Phase::prefill) t += r.latency_ns[i];
  return t;
}

std::vector<int64_t> decode_latencies(const Repetition& r) {
  std::vector<int64_t> d;
  d.reserve(r.latency_ns.size());
  for (size_t i = 0; i < r.latency_ns.size() && i < r.phase.size(); ++i)
    if (r.phase[i] == Phase::decode) d.push_back(r.latency_ns[i]);
  return d;
}

RepetitionFigures repetition_figures(const Case& c) {
  RepetitionFigures f;
  for (const Repetition& r : c.samples) {
    int64_t p = prefill_ns(r);
    if (p > 0 && c.prompt_tokens > 0) f.prefill_tok_s.push_back(c.prompt_tokens * 1e9 / static_cast<double>(p));
    profiler::Stats s = profiler::summarize(decode_latencies(r));
    if (s.n > 0 && s.sum_ns > 0) f.decode_tok_s.push_back(static_cast<double>(s.n) * 1e9 / static_cast<double>(s.sum_ns));
    if (r.ttft_cold_ns) f.ttft_cold_ns.push_back(static_cast<double>(*r.ttft_cold_ns));
    f.ttft_warm_ns.push_back(static_cast<double>(r.ttft_warm_ns));
  }
  return f;
}

Aggregates compute_aggregates(const Case& c) {
  Aggregates a;
  const RepetitionFigures f = repetition_figures(c);
  std::vector<int64_t> all_decode;
  for (const Repetition& r : c.samples) {
    std::vector<int64_t> d = decode_latencies(r);
    all_decode.insert(all_decode.end(), d.begin(), d.end());
  }
  a.prefill_tok_s = profiler::median(f.prefill_tok_s);
  a.decode_tok_s = profiler::median(f.decode_tok_s);
  a.ttft_cold_ns = profiler::median(f.ttft_cold_ns);
  a.ttft_warm_ns = profiler::median(f.ttft_warm_ns);
  profiler::Stats itl = profiler::summarize(all_decode);
  a.tpot_ns = itl.mean_ns;
  a.itl_p50_ns = itl.p50_ns;
  a.itl_p90_ns = itl.p90_ns;
  a.itl_p99_ns = itl.p99_ns;
  a.hit_rate = c.experts.hit_rate();
  a.mean_expert_load_ns = c.experts.mean_load_ns();
  return a;
}

const char* to_string(DeviceKind k) { return k == DeviceKind::cuda ? "cuda" : "cpu"; }
const char* to_string(Phase p) { return p == Phase::decode ? "decode" : "prefill"; }
const char* to_string(CaseStatus s) { return s == CaseStatus::failed ? "failed" : "ok"; }

// ---------------------------------------------------------------- writer

namespace {

// NaN and infinities have no JSON spelling; they are written as null and read
// back as NaN (printed "n/a").
json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

json num_array(const std::vector<double>& v) {
  json a = json::array();
  for (double x : v) a.push_back(num(x));
  return a;
}

json counters_json(const ExpertCounters& e) {
  return json{{"hits", e.hits},
              {"misses", e.misses},
              {"loads", e.loads},
              {"bytes_moved", e.bytes_moved},
              {"decode_bytes_moved", e.decode_bytes_moved},
              {"load_time_ns", e.load_time_ns},
              {"stall_ns", e.stall_ns},
              {"host_experts", e.host_experts},
              {"host_bytes", e.host_bytes},
              {"decode_host_bytes", e.decode_host_bytes},
              {"host_busy_ns", e.host_busy_ns},
              {"decode_host_busy_ns", e.decode_host_busy_ns},
              {"decode_load_time_ns", e.decode_load_time_ns},
              {"decode_host_layers", e.decode_host_layers},
              {"decode_host_overhead_ns", e.decode_host_overhead_ns},
              {"host_kernel_gbps", num(e.host_kernel_gbps)},
              {"host_kernel_median_gbps", num(e.host_kernel_median_gbps)},
              {"host_kernel_worst_gbps", num(e.host_kernel_worst_gbps)},
              {"host_kernel_samples", e.host_kernel_samples},
              {"host_kernel_cold", e.host_kernel_cold},
              {"joint_copy_gbps", num(e.joint_copy_gbps)},
              {"joint_host_gbps", num(e.joint_host_gbps)},
              {"solo_copy_gbps", num(e.solo_copy_gbps)},
              {"decode_joint_copy_bytes", e.decode_joint_copy_bytes},
              {"decode_joint_copy_ns", e.decode_joint_copy_ns},
              {"decode_joint_host_bytes", e.decode_joint_host_bytes},
              {"decode_joint_host_ns", e.decode_joint_host_ns},
              {"slots", e.slots},
              {"decode_experts_per_step", num(e.decode_experts_per_step)},
              {"hits_per_layer", e.hits_per_layer},
              {"misses_per_layer", e.misses_per_layer},
              {"loads_per_layer", e.loads_per_layer},
              {"bytes_moved_per_layer", e.bytes_moved_per_layer},
              {"load_time_ns_per_layer", e.load_time_ns_per_layer},
              {"stall_ns_per_layer", e.stall_ns_per_layer},
              {"usage", e.usage}};
}

json case_json(const Case& c) {
  json samples = json::array();
  for (const Repetition& r : c.samples) {
    json phases = json::array();
    for (Phase p : r.phase) phases.push_back(to_string(p));
    json rj{{"latency_ns", r.latency_ns}, {"phase", phases}, {"ttft_warm_ns", r.ttft_warm_ns}};
    rj["ttft_cold_ns"] = r.ttft_cold_ns ? json(*r.ttft_cold_ns) : json(nullptr);
    samples.push_back(std::move(rj));
  }
  json per_layer = json::array();
  for (const auto& row : c.hit_rate.per_layer) per_layer.push_back(num_array(row));
  json timeline = json::array();
  for (const MemoryPoint& p : c.memory.timeline)
    timeline.push_back({{"t_ns", p.t_ns}, {"arena_bytes", p.arena_bytes}, {"device_used_bytes", p.device_used_bytes}});
  json memory{{"arena_peak_bytes", c.memory.arena_peak_bytes},
              {"device_used_peak_bytes", c.memory.device_used_peak_bytes},
              {"host_pinned_bytes", c.memory.host_pinned_bytes},
              {"allocation_count", c.memory.allocation_count ? json(*c.memory.allocation_count) : json(nullptr)},
              {"host_peak_rss_bytes", c.memory.host_peak_rss_bytes},
              {"engine_host_bytes", c.memory.engine_host_bytes},
              {"timeline", timeline}};
  const Aggregates& a = c.aggregates;
  json agg{{"prefill_tok_s", num(a.prefill_tok_s)}, {"decode_tok_s", num(a.decode_tok_s)},
           {"ttft_cold_ns", num(a.ttft_cold_ns)},   {"ttft_warm_ns", num(a.ttft_warm_ns)},
           {"tpot_ns", num(a.tpot_ns)},             {"itl_p50_ns", num(a.itl_p50_ns)},
           {"itl_p90_ns", num(a.itl_p90_ns)},       {"itl_p99_ns", num(a.itl_p99_ns)},
           {"hit_rate", num(a.hit_rate)},           {"mean_expert_load_ns", num(a.mean_expert_load_ns)}};
  json bound = nullptr;
  if (c.bound) {
    json bw = json::object();
    for (const auto& [k, v] : c.bound->bandwidth_gbps) bw[k] = num(v);
    bound = json{{"description", c.bound->description},
                 {"value", num(c.bound->value)},
                 {"unit", c.bound->unit},
                 {"percent", num(c.bound->percent)},
                 {"time_model", c.bound->time_model},
                 {"bandwidth_gbps", bw}};
  }
  json knobs = json::object();
  for (const auto& [k, v] : c.settings.knobs) knobs[k] = v;
  json out{{"suite", c.suite},
              {"name", c.name},
              {"settings", {{"stage", c.settings.stage}, {"knobs", knobs}}},
              {"routing_source", c.routing_source},
              {"prompt_tokens", c.prompt_tokens},
              {"new_tokens", c.new_tokens},
              {"repetitions", c.repetitions},
              {"warmup", c.warmup},
              {"samples", samples},
              {"experts", counters_json(c.experts)},
              {"memory", memory},
              {"hit_rate", {{"overall", num_array(c.hit_rate.overall)}, {"per_layer", per_layer}}},
              {"gpu_time_ns", c.gpu_time_ns},
              {"aggregates", agg},
              {"bound", bound},
              {"no_bound_reason", c.no_bound_reason},
              {"output_token_hash", c.output_token_hash},
              {"other_tokens_repetitions", c.other_tokens_repetitions},
              {"status", to_string(c.status)},
              {"error", c.error}};
  if (c.quality)
    out["quality"] = {{"reference", c.quality->reference},
                      {"positions", c.quality->positions},
                      {"top1_agreement", num(c.quality->top1_agreement)},
                      {"mean_kl", num(c.quality->mean_kl)}};
  if (!c.gpus.empty()) {
    json g = json::array();
    for (const GpuRank& r : c.gpus) {
      json one = {{"device", r.device},
                  {"arena_used_bytes", r.arena_used_bytes},
                  {"arena_peak_bytes", r.arena_peak_bytes},
                  {"decode_steps", r.decode_steps},
                  {"collective_ns_per_step", r.collective_ns_per_step},
                  {"collective_calls_per_step", r.collective_calls_per_step}};
      if (r.experts_held > 0) {
        one["experts_held"] = r.experts_held;
        one["experts_run_per_step"] = num(r.experts_run_per_step);
        one["expert_pairs_per_step"] = num(r.expert_pairs_per_step);
      }
      g.push_back(one);
    }
    out["gpus"] = g;
  }
  return out;
}

}  // namespace

json to_json(const Results& r) {
  json cases = json::array();
  for (const Case& c : r.cases) cases.push_back(case_json(c));
  return json{
      {"schema_version", r.schema_version},
      {"run",
       {{"tool_version", r.run.tool_version},
        {"commit", r.run.commit},
        {"build_type", r.run.build_type},
        {"start_time", r.run.start_time},
        {"command_line", r.run.command_line},
        {"trace_file", r.run.trace_file}}},
      {"device",
       {{"name", r.device.name},
        {"kind", to_string(r.device.kind)},
        {"sm_count", r.device.sm_count},
        {"memory_bytes", r.device.memory_bytes},
        {"driver", r.device.driver},
        {"h2d_gbps", num(r.device.h2d_gbps)},
        {"hbm_gbps", num(r.device.hbm_gbps)},
        {"hbm_read_gbps", num(r.device.hbm_read_gbps)},
        {"hbm_copy_gbps", num(r.device.hbm_copy_gbps)},
        {"disk_read_gbps", num(r.device.disk_read_gbps)}}},
      {"host",
       {{"name", r.host.name},
        {"cpu_model", r.host.cpu_model},
        {"cores", r.host.cores},
        {"memory_bytes", r.host.memory_bytes}}},
      {"model",
       {{"name", r.model.name},
        {"config", r.model.config},
        {"dtype", r.model.dtype},
        {"weight_source", r.model.weight_source},
        {"shared_setup_ns", r.model.shared_setup_ns}}},
      {"cases", cases}};
}

namespace {

// Indented JSON where arrays of scalars stay on one line, so 100k-sample files
// stay diffable and a layer x expert matrix reads as a matrix.
void pretty(const json& j, int indent, std::string& out) {
  auto pad = [&](int n) { out.append(static_cast<size_t>(n), ' '); };
  if (j.is_object()) {
    if (j.empty()) {
      out += "{}";
      return;
    }
    out += "{\n";
    size_t i = 0;
    for (auto it = j.begin(); it != j.end(); ++it, ++i) {
      pad(indent + 2);
      out += json(it.key()).dump();
      out += ": ";
      pretty(it.value(), indent + 2, out);
      out += i + 1 < j.size() ? ",\n" : "\n";
    }
    pad(indent);
    out += "}";
  } else if (j.is_array()) {
    bool flat = std::all_of(j.begin(), j.end(), [](const json& e) { return e.is_primitive(); });
    if (j.empty()) {
      out += "[]";
    } else if (flat) {
      out += "[";
      for (size_t i = 0; i < j.size(); ++i) {
        if (i) out += ", ";
        out += j[i].dump();
      }
      out += "]";
    } else {
      out += "[\n";
      for (size_t i = 0; i < j.size(); ++i) {
        pad(indent + 2);
        pretty(j[i], indent + 2, out);
        out += i + 1 < j.size() ? ",\n" : "\n";
      }
      pad(indent);
      out += "]";
    }
  } else {
    out += j.dump();
  }
}

}  // namespace

std::string results_to_string(const Results& r) {
  std::string out;
  pretty(to_json(r), 0, out);
  out += "\n";
  return out;
}

void save_results(const std::string& path, const Results& r) { write_file_atomic(path, results_to_string(r)); }

// ---------------------------------------------------------------- reader

namespace {

std::string describe(const json& v) {
  switch (v.type()) {
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::null: return "null";
    default: {
      std::string s = v.dump();
      if (s.size() > 40) s = s.substr(0, 37) + "...";
      return s;
    }
  }
}

std::string show(const std::string& path) { return path.empty() ? "the top level" : path; }

struct Reader {
  std::string src;

  [[noreturn]] void bad(const std::string& path, const json& v, const char* expected) const {
    fail("{}: {} is {}, expected {}", src, show(path), describe(v), expected);
  }

  int64_t i64(const json& v, const std::string& path, int64_t lo = 0) const {
    if (!v.is_number_integer()) bad(path, v, lo >= 0 ? "a non-negative integer" : "an integer");
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      bad(path, v, "an integer that fits in 64 bits");
    int64_t x = v.get<int64_t>();
    if (x < lo) bad(path, v, lo == 0 ? "a non-negative integer" : "a larger integer");
    return x;
  }
  int i32(const json& v, const std::string& path) const {
    int64_t x = i64(v, path);
    if (x > std::numeric_limits<int>::max()) bad(path, v, "a non-negative 32-bit integer");
    return static_cast<int>(x);
  }
  double f64(const json& v, const std::string& path) const {
    if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
    if (!v.is_number()) bad(path, v, "a number (or null)");
    return v.get<double>();
  }
  bool boolean(const json& v, const std::string& path) const {
    if (!v.is_boolean()) bad(path, v, "true or false");
    return v.get<bool>();
  }
  std::string str(const json& v, const std::string& path) const {
    if (!v.is_string()) bad(path, v, "a string");
    return v.get<std::string>();
  }
  std::vector<int64_t> i64s(const json& v, const std::string& path) const {
    if (!v.is_array()) bad(path, v, "an array of integers");
    std::vector<int64_t> out;
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) out.push_back(i64(v[i], fmt::format("{}[{}]", path, i), 0));
    return out;
  }
  // A hit rate: a fraction in [0, 1], or null (n/a).
  double rate(const json& v, const std::string& path) const {
    double x = f64(v, path);
    if (!std::isnan(x) && !(x >= 0 && x <= 1)) bad(path, v, "a rate in [0, 1] (or null)");
    return x;
  }
  // An array, each element read by `element` (f64 or rate).
  std::vector<double> doubles(const json& v, const std::string& path, const char* expected,
                              double (Reader::*element)(const json&, const std::string&) const) const {
    if (!v.is_array()) bad(path, v, expected);
    std::vector<double> out;
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) out.push_back((this->*element)(v[i], fmt::format("{}[{}]", path, i)));
    return out;
  }
  std::vector<double> f64s(const json& v, const std::string& path) const {
    return doubles(v, path, "an array of numbers", &Reader::f64);
  }
  std::vector<double> rates(const json& v, const std::string& path) const {
    return doubles(v, path, "an array of rates in [0, 1]", &Reader::rate);
  }
  std::vector<std::string> strs(const json& v, const std::string& path) const {
    if (!v.is_array()) bad(path, v, "an array of strings");
    std::vector<std::string> out;
    for (size_t i = 0; i < v.size(); ++i) out.push_back(str(v[i], fmt::format("{}[{}]", path, i)));
    return out;
  }
  template <typename F>
  void each(const json& v, const std::string& path, const char* expected, F&& f) const {
    if (!v.is_array()) bad(path, v, expected);
    for (size_t i = 0; i < v.size(); ++i) f(v[i], fmt::format("{}[{}]", path, i));
  }
};

// One JSON object being read: tracks which fields were consumed so unknown
// ones can be refused at the end.
class Obj {
 public:
  Obj(const Reader& rd, const json& j, std::string path) : rd_(rd), j_(j), path_(std::move(path)) {
    if (!j_.is_object()) rd_.bad(path_, j_, "an object");
  }
  std::string at(const char* key) const { return path_.empty() ? std::string(key) : path_ + "." + key; }
  const json& req(const char* key, const char* expected) {
    seen_.insert(key);
    auto it = j_.find(key);
    if (it == j_.end()) fail("{}: {} is missing (expected {})", rd_.src, at(key), expected);
    return *it;
  }
  // Absent or null.
  const json* opt(const char* key) {
    seen_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  int64_t i64(const char* k) { return rd_.i64(req(k, "a non-negative integer"), at(k)); }
  int i32(const char* k) { return rd_.i32(req(k, "a non-negative integer"), at(k)); }
  double f64(const char* k) { return rd_.f64(req(k, "a number"), at(k)); }
  std::string str(const char* k) { return rd_.str(req(k, "a string"), at(k)); }
  std::vector<int64_t> i64s(const char* k) { return rd_.i64s(req(k, "an array of integers"), at(k)); }
  std::vector<double> f64s(const char* k) { return rd_.f64s(req(k, "an array of numbers"), at(k)); }
  double rate(const char* k) { return rd_.rate(req(k, "a rate in [0, 1]"), at(k)); }
  std::vector<double> rates(const char* k) { return rd_.rates(req(k, "an array of rates in [0, 1]"), at(k)); }
  Obj obj(const char* k) { return Obj(rd_, req(k, "an object"), at(k)); }
  void done() const {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      if (!seen_.count(it.key()))
        fail("{}: {} is not a field of results schema_version {}", rd_.src, at(it.key().c_str()), kSchemaVersion);
  }

 private:
  const Reader& rd_;
  const json& j_;
  std::string path_;
  std::set<std::string> seen_;
};

template <typename E>
E enum_value(const Reader& rd, const json& v, const std::string& path, std::initializer_list<std::pair<const char*, E>> names,
             const char* expected) {
  if (v.is_string())
    for (const auto& [n, e] : names)
      if (v.get<std::string>() == n) return e;
  rd.bad(path, v, expected);
}

void check_len(const Reader& rd, const std::string& path, size_t got, size_t want, const std::string& what) {
  if (got != want) fail("{}: {} has {} entries, expected {} ({})", rd.src, path, got, want, what);
}

Repetition read_repetition(const Reader& rd, const json& j, const std::string& path) {
  Obj o(rd, j, path);
  Repetition r;
  r.latency_ns = o.i64s("latency_ns");
  int64_t total_ns = 0;  // sums over a repetition's steps (its prefill time, ...) must fit in 64 bits
  for (int64_t x : r.latency_ns)
    if (__builtin_add_overflow(total_ns, x, &total_ns))
      fail("{}: {}.latency_ns sums to more than 2^63 ns (292 years), expected the times of the steps", rd.src,
           show(path));
  rd.each(o.req("phase", "an array of \"prefill\"/\"decode\""), o.at("phase"), "an array of \"prefill\"/\"decode\"",
          [&](const json& v, const std::string& p) {
            r.phase.push_back(enum_value<Phase>(rd, v, p, {{"prefill", Phase::prefill}, {"decode", Phase::decode}},
                                                "\"prefill\" or \"decode\""));
          });
  check_len(rd, o.at("phase"), r.phase.size(), r.latency_ns.size(), "one phase per latency_ns sample");
  if (const json* c = o.opt("ttft_cold_ns")) r.ttft_cold_ns = rd.i64(*c, o.at("ttft_cold_ns"));
  r.ttft_warm_ns = o.i64("ttft_warm_ns");
  o.done();
  return r;
}

ExpertCounters read_counters(const Reader& rd, const json& j, const std::string& path) {
  Obj o(rd, j, path);
  ExpertCounters e;
  e.hits = o.i64("hits");
  e.misses = o.i64("misses");
  e.loads = o.i64("loads");
  e.bytes_moved = o.i64("bytes_moved");
  if (const json* d = o.opt("decode_bytes_moved")) e.decode_bytes_moved = rd.i64(*d, path + ".decode_bytes_moved");
  e.load_time_ns = o.i64("load_time_ns");
  e.stall_ns = o.i64("stall_ns");
  std::pair<const char*, int64_t*> host_link[] = {{"host_experts", &e.host_experts},
                                                  {"host_bytes", &e.host_bytes},
                                                  {"decode_host_bytes", &e.decode_host_bytes},
                                                  {"host_busy_ns", &e.host_busy_ns},
                                                  {"decode_host_busy_ns", &e.decode_host_busy_ns},
                                                  {"decode_load_time_ns", &e.decode_load_time_ns},
                                                  {"decode_host_layers", &e.decode_host_layers},
                                                  {"decode_host_overhead_ns", &e.decode_host_overhead_ns},
                                                  {"host_kernel_samples", &e.host_kernel_samples},
                                                  {"decode_joint_copy_bytes", &e.decode_joint_copy_bytes},
                                                  {"decode_joint_copy_ns", &e.decode_joint_copy_ns},
                                                  {"decode_joint_host_bytes", &e.decode_joint_host_bytes},
                                                  {"decode_joint_host_ns", &e.decode_joint_host_ns},
                                                  {"slots", &e.slots}};
  for (auto& [key, dst] : host_link)
    if (const json* d = o.opt(key)) *dst = rd.i64(*d, path + "." + key);
  for (auto [key, dst] : {std::pair{"host_kernel_gbps", &e.host_kernel_gbps},
                          std::pair{"host_kernel_median_gbps", &e.host_kernel_median_gbps},
                          std::pair{"host_kernel_worst_gbps", &e.host_kernel_worst_gbps},
                          std::pair{"joint_copy_gbps", &e.joint_copy_gbps},
                          std::pair{"joint_host_gbps", &e.joint_host_gbps},
                          std::pair{"solo_copy_gbps", &e.solo_copy_gbps}})
    if (const json* d = o.opt(key)) *dst = rd.f64(*d, path + "." + key);
  if (const json* d = o.opt("decode_experts_per_step")) {
    const double v = rd.f64(*d, path + ".decode_experts_per_step");
    if (!std::isfinite(v) || v < 0) rd.bad(path + ".decode_experts_per_step", *d, "a count of experts, at least 0");
    e.decode_experts_per_step = v;
  }
  if (const json* d = o.opt("host_kernel_cold")) e.host_kernel_cold = rd.boolean(*d, path + ".host_kernel_cold");
  std::pair<const char*, std::vector<int64_t>*> per_layer[] = {
      {"hits_per_layer", &e.hits_per_layer},           {"misses_per_layer", &e.misses_per_layer},
      {"loads_per_layer", &e.loads_per_layer},         {"bytes_moved_per_layer", &e.bytes_moved_per_layer},
      {"load_time_ns_per_layer", &e.load_time_ns_per_layer}, {"stall_ns_per_layer", &e.stall_ns_per_layer}};
  size_t n_layers = 0;
  const char* first = nullptr;
  for (auto& [key, dst] : per_layer) {
    *dst = o.i64s(key);
    if (dst->empty()) continue;
    if (!first) {
      first = key;
      n_layers = dst->size();
    } else {
      check_len(rd, o.at(key), dst->size(), n_layers, fmt::format("as many layers as {}", first));
    }
  }
  rd.each(o.req("usage", "an array of arrays"), o.at("usage"), "an array of arrays (n_layers, n_experts)",
          [&](const json& v, const std::string& p) { e.usage.push_back(rd.i64s(v, p)); });
  for (size_t l = 1; l < e.usage.size(); ++l)
    check_len(rd, fmt::format("{}[{}]", o.at("usage"), l), e.usage[l].size(), e.usage[0].size(),
              "every layer has the same number of experts");
  if (first && !e.usage.empty())
    check_len(rd, o.at("usage"), e.usage.size(), n_layers, fmt::format("one row per layer, like {}", first));
  o.done();
  return e;
}

MemoryInfo read_memory(const Reader& rd, const json& j, const std::string& path) {
  Obj o(rd, j, path);
  MemoryInfo m;
  m.arena_peak_bytes = o.i64("arena_peak_bytes");
  m.device_used_peak_bytes = o.i64("device_used_peak_bytes");
  m.host_pinned_bytes = o.i64("host_pinned_bytes");
  if (const json* a = o.opt("allocation_count")) m.allocation_count = rd.i64(*a, o.at("allocation_count"));
  if (const json* v = o.opt("host_peak_rss_bytes")) m.host_peak_rss_bytes = rd.i64(*v, o.at("host_peak_rss_bytes"));
  if (const json* v = o.opt("engine_host_bytes")) m.engine_host_bytes = rd.i64(*v, o.at("engine_host_bytes"));
  if (const json* t = o.opt("timeline"))
    rd.each(*t, o.at("timeline"), "an array of {t_ns, arena_bytes, device_used_bytes}",
            [&](const json& v, const std::string& p) {
              Obj po(rd, v, p);
              MemoryPoint pt;
              pt.t_ns = po.i64("t_ns");
              pt.arena_bytes = po.i64("arena_bytes");
              pt.device_used_bytes = po.i64("device_used_bytes");
              po.done();
              m.timeline.push_back(pt);
            });
  o.done();
  return m;
}

Case read_case(const Reader& rd, const json& j, const std::string& path) {
  Obj o(rd, j, path);
  Case c;
  c.suite = o.str("suite");
  c.name = o.str("name");
  {
    Obj s = o.obj("settings");
    c.settings.stage = s.str("stage");
    Obj k = s.obj("knobs");
    const json& kj = s.req("knobs", "an object");
    for (auto it = kj.begin(); it != kj.end(); ++it) {
      k.opt(it.key().c_str());
      if (!it->is_primitive()) rd.bad(k.at(it.key().c_str()), *it, "a string, number, bool or null (knobs are flat)");
      c.settings.knobs[it.key()] = *it;
    }
    k.done();
    s.done();
  }
  c.routing_source = o.str("routing_source");
  c.prompt_tokens = o.i32("prompt_tokens");
  c.new_tokens = o.i32("new_tokens");
  c.repetitions = o.i32("repetitions");
  c.warmup = o.i32("warmup");
  c.status = enum_value<CaseStatus>(rd, o.req("status", "\"ok\" or \"failed\""), o.at("status"),
                                    {{"ok", CaseStatus::ok}, {"failed", CaseStatus::failed}}, "\"ok\" or \"failed\"");
  c.error = o.str("error");
  if (c.status == CaseStatus::failed && c.error.empty())
    fail("{}: {} is \"\", expected the reason the case failed", rd.src, o.at("error"));
  rd.each(o.req("samples", "an array of repetitions"), o.at("samples"), "an array of repetitions",
          [&](const json& v, const std::string& p) { c.samples.push_back(read_repetition(rd, v, p)); });
  if (c.status == CaseStatus::ok)
    check_len(rd, o.at("samples"), c.samples.size(), static_cast<size_t>(c.repetitions),
              "one per repetition of a case with status ok");
  c.experts = read_counters(rd, o.req("experts", "an object"), o.at("experts"));
  c.memory = read_memory(rd, o.req("memory", "an object"), o.at("memory"));
  {
    Obj h = o.obj("hit_rate");
    c.hit_rate.overall = h.rates("overall");
    rd.each(h.req("per_layer", "an array of arrays"), h.at("per_layer"), "an array of arrays (n_layers, n_steps)",
            [&](const json& v, const std::string& p) {
              c.hit_rate.per_layer.push_back(rd.rates(v, p));
              check_len(rd, p, c.hit_rate.per_layer.back().size(), c.hit_rate.overall.size(),
                        "one point per step, like overall");
            });
    h.done();
  }
  {
    const json& g = o.req("gpu_time_ns", "an object");
    Obj go(rd, g, o.at("gpu_time_ns"));
    for (auto it = g.begin(); it != g.end(); ++it) {
      go.opt(it.key().c_str());
      c.gpu_time_ns[it.key()] = rd.i64(*it, go.at(it.key().c_str()));
    }
    go.done();
  }
  {
    Obj a = o.obj("aggregates");
    Aggregates& g = c.aggregates;
    g.prefill_tok_s = a.f64("prefill_tok_s");
    g.decode_tok_s = a.f64("decode_tok_s");
    g.ttft_cold_ns = a.f64("ttft_cold_ns");
    g.ttft_warm_ns = a.f64("ttft_warm_ns");
    g.tpot_ns = a.f64("tpot_ns");
    g.itl_p50_ns = a.f64("itl_p50_ns");
    g.itl_p90_ns = a.f64("itl_p90_ns");
    g.itl_p99_ns = a.f64("itl_p99_ns");
    g.hit_rate = a.rate("hit_rate");
    g.mean_expert_load_ns = a.f64("mean_expert_load_ns");
    a.done();
  }
  if (const json* b = o.opt("bound")) {
    Obj bo(rd, *b, o.at("bound"));
    Bound bd;
    bd.description = bo.str("description");
    bd.value = bo.f64("value");
    bd.unit = bo.str("unit");
    bd.percent = bo.f64("percent");
    if (const json* t = bo.opt("time_model")) {
      bd.time_model = rd.str(*t, bo.at("time_model"));
      if (!bd.time_model.empty() && bd.time_model != "single" && bd.time_model != "serial" && bd.time_model != "overlap")
        rd.bad(bo.at("time_model"), *t, "\"single\", \"serial\" or \"overlap\"");
    }
    if (const json* g = bo.opt("bandwidth_gbps")) {
      Obj go(rd, *g, bo.at("bandwidth_gbps"));
      for (auto it = g->begin(); it != g->end(); ++it) {
        go.opt(it.key().c_str());
        bd.bandwidth_gbps[it.key()] = rd.f64(*it, go.at(it.key().c_str()));
      }
      go.done();
    }
    bo.done();
    c.bound = bd;
  }
  if (const json* v = o.opt("no_bound_reason")) c.no_bound_reason = rd.str(*v, o.at("no_bound_reason"));
  if (const json* q = o.opt("quality")) {
    Obj qo(rd, *q, o.at("quality"));
    Quality qu;
    qu.reference = qo.str("reference");
    qu.positions = static_cast<int>(qo.i64("positions"));
    qu.top1_agreement = qo.f64("top1_agreement");
    qu.mean_kl = qo.f64("mean_kl");
    qo.done();
    c.quality = qu;
  }
  if (const json* g = o.opt("gpus"))
    rd.each(*g, o.at("gpus"), "an array of objects", [&](const json& v, const std::string& p) {
      Obj go(rd, v, p);
      GpuRank r;
      r.device = go.str("device");
      r.arena_used_bytes = go.i64("arena_used_bytes");
      r.arena_peak_bytes = go.i64("arena_peak_bytes");
      r.decode_steps = go.i64("decode_steps");
      r.collective_ns_per_step = go.i64("collective_ns_per_step");
      r.collective_calls_per_step = go.i64("collective_calls_per_step");
      if (const json* v = go.opt("experts_held")) {
        r.experts_held = rd.i64(*v, go.at("experts_held"));
        r.experts_run_per_step = go.f64("experts_run_per_step");
        r.expert_pairs_per_step = go.f64("expert_pairs_per_step");
      }
      go.done();
      c.gpus.push_back(r);
    });
  c.output_token_hash = o.str("output_token_hash");
  if (const json* v = o.opt("other_tokens_repetitions"))  // absent in older files
    rd.each(*v, o.at("other_tokens_repetitions"), "an array of repetition indexes", [&](const json& x, const std::string& p) {
      const int64_t rep = rd.i64(x, p);
      if (rep < 1 || rep >= c.repetitions) rd.bad(p, x, "a measured repetition after the first (1 to repetitions - 1)");
      c.other_tokens_repetitions.push_back(static_cast<int>(rep));
    });
  o.done();
  return c;
}

}  // namespace

Results results_from_json(const json& j, const std::string& source) {
  Reader rd{source};
  Obj top(rd, j, "");
  Results r;
  // The version first: a file of another version gets that message, not a
  // confusing one about a field that moved.
  {
    const json& v = top.req("schema_version", "an integer");
    if (!v.is_number_integer()) rd.bad("schema_version", v, fmt::format("the integer {}", kSchemaVersion).c_str());
    int64_t ver = v.get<int64_t>();
    if (ver != kSchemaVersion)
      fail("{}: schema_version is {}, expected {} (this moebench reads results schema version {} only)", source, ver,
           kSchemaVersion, kSchemaVersion);
    r.schema_version = static_cast<int>(ver);
  }
  {
    Obj o = top.obj("run");
    r.run.tool_version = o.str("tool_version");
    r.run.commit = o.str("commit");
    r.run.build_type = o.str("build_type");
    r.run.start_time = o.str("start_time");
    r.run.command_line = rd.strs(o.req("command_line", "an array of strings"), o.at("command_line"));
    if (const json* t = o.opt("trace_file")) r.run.trace_file = rd.str(*t, o.at("trace_file"));
    o.done();
  }
  {
    Obj o = top.obj("device");
    r.device.name = o.str("name");
    r.device.kind = enum_value<DeviceKind>(rd, o.req("kind", "\"cpu\" or \"cuda\""), o.at("kind"),
                                           {{"cpu", DeviceKind::cpu}, {"cuda", DeviceKind::cuda}}, "\"cpu\" or \"cuda\"");
    r.device.sm_count = o.i32("sm_count");
    r.device.memory_bytes = o.i64("memory_bytes");
    r.device.driver = o.str("driver");
    r.device.h2d_gbps = o.f64("h2d_gbps");
    r.device.hbm_gbps = o.f64("hbm_gbps");
    if (const json* v = o.opt("hbm_read_gbps")) r.device.hbm_read_gbps = rd.f64(*v, o.at("hbm_read_gbps"));
    if (const json* v = o.opt("hbm_copy_gbps")) r.device.hbm_copy_gbps = rd.f64(*v, o.at("hbm_copy_gbps"));
    if (const json* v = o.opt("disk_read_gbps")) r.device.disk_read_gbps = rd.f64(*v, o.at("disk_read_gbps"));
    o.done();
  }
  {
    Obj o = top.obj("host");
    r.host.name = o.str("name");
    r.host.cpu_model = o.str("cpu_model");
    r.host.cores = o.i32("cores");
    r.host.memory_bytes = o.i64("memory_bytes");
    o.done();
  }
  {
    Obj o = top.obj("model");
    r.model.name = o.str("name");
    const json& cfg = o.req("config", "an object");
    if (!cfg.is_object()) rd.bad(o.at("config"), cfg, "an object (HF config.json layout)");
    r.model.config = cfg;
    r.model.dtype = o.str("dtype");
    r.model.weight_source = o.str("weight_source");
    if (const json* v = o.opt("shared_setup_ns")) r.model.shared_setup_ns = rd.i64(*v, o.at("shared_setup_ns"));
    o.done();
  }
  rd.each(top.req("cases", "an array"), "cases", "an array of cases",
          [&](const json& v, const std::string& p) { r.cases.push_back(read_case(rd, v, p)); });
  top.done();
  return r;
}

std::string bound_exceeded(const Bound& b) {
  if (!(b.percent > 100 + kBoundNoisePercent)) return "";
  return fmt::format(
      "ran at {:.1f}% of its bound ({}), more than {}% over it: a bound is a limit, so the bound model or a bandwidth "
      "it was computed from is wrong",
      b.percent, b.description, kBoundNoisePercent);
}

std::string other_tokens_note(const Case& c) {
  if (c.other_tokens_repetitions.empty()) return "";
  return fmt::format(
      "{} of {} repetitions generated other tokens than the first (repetitions {}; the token hash is the first's): "
      "greedy decoding of one input should not depend on the run",
      c.other_tokens_repetitions.size(), c.repetitions, fmt::join(c.other_tokens_repetitions, ", "));
}

Results load_results(const std::string& path) {
  std::string text = read_file(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 3, column 4: ..."; keep the part after the tag.
    std::string what = e.what();
    auto sp = what.find("] ");
    if (sp != std::string::npos) what = what.substr(sp + 2);
    fail("{}: invalid JSON at byte {}: {}", path, e.byte, what);
  } catch (const json::exception& e) {  // a number out of range (1e999) is not a parse_error
    fail("{}: invalid JSON: {}", path, e.what());
  }
  return results_from_json(j, path);
}

}  // namespace moebench::reports
