// workcount.cpp: see workcount.h.
#include "reports/workcount.h"

#include <cpuid.h>
#include <gnu/libc-version.h>
#include <link.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "common/error.h"
#include "common/atomic_file.h"

namespace moebench::reports {

using nlohmann::json;

WorkCost& WorkCost::operator+=(const WorkCost& o) {
  ir += o.ir;
  l1_misses += o.l1_misses;
  ll_misses += o.ll_misses;
  return *this;
}

double PhaseWork::estimated_per_step() const {
  return steps > 0 ? static_cast<double>(total.estimated()) / steps : 0.0;
}

// ---------------------------------------------------------------- callgrind.out

namespace {

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

// Which columns of the "events:" line feed which WorkCost field.
struct EventMap {
  int ir = -1;
  std::vector<int> l1, ll;
  size_t n = 0;

  void parse(const std::string& line, const std::string& src, int lineno) {
    std::vector<std::string> ev = words(line);
    n = ev.size();
    auto col = [&](const char* name) {
      for (size_t i = 0; i < ev.size(); ++i)
        if (ev[i] == name) return static_cast<int>(i);
      return -1;
    };
    ir = col("Ir");
    if (ir < 0) fail("{}:{}: events '{}' have no Ir (instructions)", src, lineno, line);
    for (const char* e : {"I1mr", "D1mr", "D1mw"}) l1.push_back(col(e));
    for (const char* e : {"ILmr", "DLmr", "DLmw"}) ll.push_back(col(e));
    for (int c : l1)
      if (c < 0) fail("{}:{}: events '{}' have no cache misses (run callgrind with --cache-sim=yes)", src, lineno, line);
    for (int c : ll)
      if (c < 0) fail("{}:{}: events '{}' have no cache misses (run callgrind with --cache-sim=yes)", src, lineno, line);
  }

  WorkCost cost(const std::vector<int64_t>& v) const {
    auto at = [&](int c) { return c < static_cast<int>(v.size()) ? v[c] : 0; };
    WorkCost w;
    w.ir = at(ir);
    for (int c : l1) w.l1_misses += at(c);
    for (int c : ll) w.ll_misses += at(c);
    return w;
  }
};

// Costs from words [first, end): non-negative integers; fewer than the events means trailing zeros.
std::vector<int64_t> costs_of(const std::vector<std::string>& w, size_t first, size_t n_events, const std::string& src,
                              int lineno) {
  if (w.size() - first > n_events) fail("{}:{}: {} costs, but only {} events", src, lineno, w.size() - first, n_events);
  std::vector<int64_t> v;
  for (size_t i = first; i < w.size(); ++i) {
    const std::string& s = w[i];
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 18)
      fail("{}:{}: cost '{}' is not a non-negative integer", src, lineno, s);
    v.push_back(std::stoll(s));
  }
  return v;
}

// "(12) name" defines id 12; "(12)" refers to it; a bare "name" is itself.
std::string compressed_name(const std::string& v, std::map<std::string, std::string>& ids, const std::string& src,
                            int lineno) {
  if (v.empty() || v[0] != '(') return v;
  const size_t close = v.find(')');
  if (close == std::string::npos) fail("{}:{}: name '{}' opens '(' without closing it", src, lineno, v);
  const std::string id = v.substr(0, close + 1);
  if (close + 1 < v.size()) {
    std::string name = v.substr(close + 1);
    name.erase(0, name.find_first_not_of(' '));
    ids[id] = name;
    return name;
  }
  auto it = ids.find(id);
  if (it == ids.end()) fail("{}:{}: name {} is used before it is defined", src, lineno, id);
  return it->second;
}

}  // namespace

CallgrindDump parse_callgrind(const std::string& text, const std::string& src) {
  CallgrindDump d;
  EventMap ev;
  size_t n_pos = 1;  // "positions: line"
  std::map<std::string, std::string> fn_ids;
  std::string fn;
  bool call_cost_next = false;  // the line after calls= is the call's inclusive cost
  bool have_events = false, have_totals = false;
  WorkCost self_sum;
  std::vector<std::string> cache;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    const char c0 = line[0];
    if ((c0 >= '0' && c0 <= '9') || c0 == '+' || c0 == '-' || c0 == '*') {
      if (!have_events) fail("{}:{}: a cost line before the events: line", src, lineno);
      std::vector<std::string> w = words(line);
      if (w.size() < n_pos) fail("{}:{}: '{}' has fewer than {} position(s)", src, lineno, line, n_pos);
      WorkCost cost = ev.cost(costs_of(w, n_pos, ev.n, src, lineno));
      if (call_cost_next) {
        call_cost_next = false;  // inclusive cost of a call: the callee's own lines count it
        continue;
      }
      if (fn.empty()) fail("{}:{}: a cost line before any fn= line", src, lineno);
      d.self[fn] += cost;
      self_sum += cost;
      continue;
    }
    const size_t eq = line.find('='), colon = line.find(':');
    if (eq != std::string::npos && (colon == std::string::npos || eq < colon)) {
      const std::string key = line.substr(0, eq), val = line.substr(eq + 1);
      if (key == "fn") {
        fn = compressed_name(val, fn_ids, src, lineno);
      } else if (key == "cfn") {
        compressed_name(val, fn_ids, src, lineno);  // may define a name used later
      } else if (key == "calls") {
        call_cost_next = true;
      }
      continue;  // ob, fl, fi, fe, cob, cfi, cfl, jump, jcnd: not needed for costs by function
    }
    if (colon == std::string::npos) fail("{}:{}: '{}' is not a line of callgrind's format", src, lineno, line);
    const std::string key = line.substr(0, colon);
    std::string val = line.substr(colon + 1);
    val.erase(0, val.find_first_not_of(' '));
    if (key == "creator") {
      d.creator = val;
    } else if (key == "positions") {
      n_pos = words(val).size();
      if (n_pos == 0) fail("{}:{}: positions: names none", src, lineno);
    } else if (key == "events") {
      ev.parse(val, src, lineno);
      have_events = true;
    } else if (key == "totals") {  // (summary: is not the sum of the cost lines in callgrind 3.19)
      if (!have_events) fail("{}:{}: {} before the events: line", src, lineno, key);
      d.total = ev.cost(costs_of(words(val), 0, ev.n, src, lineno));
      have_totals = true;
    } else if (key == "desc") {
      if (starts_with(val, "Trigger: ")) d.trigger = val.substr(9);
      if (starts_with(val, "I1 cache:") || starts_with(val, "D1 cache:") || starts_with(val, "LL cache:"))
        cache.push_back(val);
    }
  }
  if (!have_events) fail("{}: no events: line (not a callgrind output file?)", src);
  if (!have_totals) fail("{}: no totals: line (the file is cut short?)", src);
  for (const std::string& c : cache) d.cache += (d.cache.empty() ? "" : "; ") + c;
  if (self_sum.ir != d.total.ir || self_sum.l1_misses != d.total.l1_misses || self_sum.ll_misses != d.total.ll_misses)
    fail("{}: the functions' costs add up to Ir {} / L1 misses {} / LL misses {}, but the totals say {} / {} / {}", src,
         self_sum.ir, self_sum.l1_misses, self_sum.ll_misses, d.total.ir, d.total.l1_misses, d.total.ll_misses);
  return d;
}

// ---------------------------------------------------------------- environment

WorkEnvironment this_process_environment() {
  WorkEnvironment e;
#if defined(__clang__)
  e.compiler = fmt::format("clang {}.{}.{}", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
  e.compiler = fmt::format("gcc {}.{}.{}", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#else
  e.compiler = "unknown";
#endif
  // A build with CUDA links more libraries and lays the CPU code out elsewhere.
#ifdef MOEBENCH_HAVE_CUDA
  e.build_type = MOEBENCH_BUILD_TYPE ", CUDA linked";
#else
  e.build_type = MOEBENCH_BUILD_TYPE ", CPU only";
#endif
  // The CPU as cpuid describes it to this process: glibc picks its string and
  // memory routines (ifuncs) from these features, so they change the counts.
  unsigned a = 0, b = 0, c = 0, d = 0;
  char vendor[13] = {};
  __cpuid(0, a, b, c, d);
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  const unsigned max_leaf = a;
  std::string cpu = vendor;
  // (leaf, register: 1 ebx, 2 ecx, 3 edx, bit): the features glibc's ifuncs look at.
  struct Feature {
    unsigned leaf;
    int reg, bit;
    const char* name;
  };
  static constexpr Feature kFeatures[] = {
      {1, 3, 26, "sse2"},  {1, 2, 0, "sse3"},  {1, 2, 9, "ssse3"},   {1, 2, 19, "sse4.1"}, {1, 2, 20, "sse4.2"},
      {1, 2, 23, "popcnt"}, {1, 2, 12, "fma"},  {1, 2, 28, "avx"},    {1, 2, 29, "f16c"},   {7, 1, 3, "bmi1"},
      {7, 1, 5, "avx2"},   {7, 1, 8, "bmi2"},  {7, 1, 9, "erms"},    {7, 1, 16, "avx512f"}, {7, 1, 31, "avx512vl"},
      {7, 3, 4, "fsrm"}};
  for (const Feature& f : kFeatures) {
    if (f.leaf > max_leaf) continue;
    unsigned r[4] = {};
    __cpuid_count(f.leaf, 0, r[0], r[1], r[2], r[3]);
    if (r[f.reg] & (1u << f.bit)) cpu += std::string(" ") + f.name;
  }
  e.cpu = cpu;
  // The C, C++ and OpenMP runtimes' versions: their code runs inside the counted steps.
  std::vector<std::string> libs;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        const std::string name = info->dlpi_name ? info->dlpi_name : "";
        for (const char* lib : {"libstdc++", "libgomp", "libm."})
          if (name.find(lib) != std::string::npos) {
            std::error_code ec;
            const auto real = std::filesystem::canonical(name, ec);
            static_cast<std::vector<std::string>*>(out)->push_back(ec ? name : real.filename().string());
          }
        return 0;
      },
      &libs);
  std::sort(libs.begin(), libs.end());
  e.libraries = fmt::format("glibc {}", gnu_get_libc_version());
  for (const std::string& l : libs) e.libraries += ", " + l;
  return e;
}

// ---------------------------------------------------------------- summary

namespace {

struct Trigger {
  std::string label, phase;
  int steps = 0;
};

// "Client Request: moebench-gate LABEL PHASE STEPS"; false for other dumps.
bool gate_trigger(const CallgrindDump& d, Trigger& t) {
  const char* prefix = "Client Request: moebench-gate ";
  if (!starts_with(d.trigger, prefix)) return false;
  std::vector<std::string> w = words(d.trigger.substr(std::strlen(prefix)));
  if (w.size() != 3 || (w[1] != "prefill" && w[1] != "decode") || w[2].find_first_not_of("0123456789") != std::string::npos ||
      w[2].empty() || w[2].size() > 9)
    fail("dump trigger '{}': expected 'moebench-gate CASE prefill|decode STEPS'", d.trigger);
  t.label = w[0];
  t.phase = w[1];
  t.steps = std::stoi(w[2]);
  return true;
}

}  // namespace

WorkCounts summarise_work(const Results& results, const std::vector<CallgrindDump>& dumps, WorkEnvironment env) {
  WorkCounts w;
  w.commit = results.run.commit;
  std::map<std::string, size_t> index;
  for (const Case& c : results.cases) {
    if (c.status != CaseStatus::ok) fail("case {} failed: {}", c.name, c.error);
    if (!index.emplace(c.name, w.cases.size()).second) fail("case name {} appears twice in the results", c.name);
    CaseWork cw;
    cw.name = c.name;
    cw.token_hash = c.output_token_hash;
    cw.experts = c.experts;
    w.cases.push_back(std::move(cw));
  }
  for (const CallgrindDump& d : dumps) {
    if (env.valgrind.empty()) env.valgrind = d.creator;
    if (d.creator != env.valgrind) fail("dumps come from {} and {}: one valgrind per run", env.valgrind, d.creator);
    Trigger t;
    if (!gate_trigger(d, t)) {
      if (d.total.ir != 0)
        fail("dump '{}' holds {} instructions collected outside the timed steps (run callgrind with --collect-atstart=no)",
             d.trigger, d.total.ir);
      continue;
    }
    if (env.cache.empty()) env.cache = d.cache;
    if (d.cache != env.cache) fail("dumps simulate different caches: '{}' and '{}'", env.cache, d.cache);
    auto it = index.find(t.label);
    if (it == index.end()) fail("dump '{}' names case {}, which is not in the results", d.trigger, t.label);
    CaseWork& cw = w.cases[it->second];
    PhaseWork& p = t.phase == "prefill" ? cw.prefill : cw.decode;
    p.steps += t.steps;
    p.total += d.total;
    for (const auto& [fn, cost] : d.self) p.functions[fn] += cost;
  }
  for (const CaseWork& c : w.cases)
    if (c.prefill.steps == 0 || c.decode.steps == 0)
      fail("case {} has no counted {} steps (was the run under callgrind, through `moebench gate count`?)", c.name,
           c.prefill.steps == 0 ? "prefill" : "decode");
  w.env = std::move(env);
  return w;
}

// ---------------------------------------------------------------- JSON

namespace {

constexpr int kWorkCountsVersion = 1;

json cost_json(const WorkCost& c) { return json::array({c.ir, c.l1_misses, c.ll_misses}); }

json phase_json(const PhaseWork& p) {
  json fns = json::object();
  for (const auto& [name, c] : p.functions)
    if (c.estimated() != 0) fns[name] = cost_json(c);
  return {{"steps", p.steps}, {"total", cost_json(p.total)}, {"functions", fns}};
}

// Strict reading with one-line errors naming the file and the field.
struct In {
  const std::string& src;
  [[noreturn]] void bad(const std::string& path, const json& v, const char* expected) const {
    std::string got = v.dump();
    if (got.size() > 40) got = got.substr(0, 37) + "...";
    fail("{}: {} is {}, expected {}", src, path, got, expected);
  }
  const json& at(const json& o, const char* key, const std::string& path) const {
    if (!o.is_object()) bad(path, o, "an object");
    auto it = o.find(key);
    if (it == o.end()) fail("{}: {}.{} is missing", src, path, key);
    return *it;
  }
  std::string str(const json& v, const std::string& path) const {
    if (!v.is_string()) bad(path, v, "a string");
    return v.get<std::string>();
  }
  int64_t i64(const json& v, const std::string& path) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0) bad(path, v, "a non-negative integer");
    return v.get<int64_t>();
  }
  WorkCost cost(const json& v, const std::string& path) const {
    if (!v.is_array() || v.size() != 3) bad(path, v, "[Ir, L1 misses, LL misses]");
    return {i64(v[0], path + "[0]"), i64(v[1], path + "[1]"), i64(v[2], path + "[2]")};
  }
  WorkEnvironment env(const json& e, const std::string& p) const {
    WorkEnvironment w;
    w.valgrind = str(at(e, "valgrind", p), p + ".valgrind");
    w.compiler = str(at(e, "compiler", p), p + ".compiler");
    w.build_type = str(at(e, "build_type", p), p + ".build_type");
    w.cpu = str(at(e, "cpu", p), p + ".cpu");
    w.libraries = str(at(e, "libraries", p), p + ".libraries");
    w.threads = static_cast<int>(i64(at(e, "threads", p), p + ".threads"));
    w.cache = str(at(e, "cache", p), p + ".cache");
    return w;
  }
  PhaseWork phase(const json& v, const std::string& path) const {
    PhaseWork p;
    p.steps = static_cast<int>(i64(at(v, "steps", path), path + ".steps"));
    if (p.steps <= 0) bad(path + ".steps", v["steps"], "a positive integer");
    p.total = cost(at(v, "total", path), path + ".total");
    const json& f = at(v, "functions", path);
    if (!f.is_object()) bad(path + ".functions", f, "an object of function: [Ir, L1 misses, LL misses]");
    for (auto it = f.begin(); it != f.end(); ++it) p.functions[it.key()] = cost(it.value(), path + ".functions." + it.key());
    return p;
  }
};

}  // namespace

json environment_to_json(const WorkEnvironment& e) {
  return {{"valgrind", e.valgrind}, {"compiler", e.compiler}, {"build_type", e.build_type},
          {"cpu", e.cpu},           {"libraries", e.libraries}, {"threads", e.threads},
          {"cache", e.cache}};
}

WorkEnvironment environment_from_json(const json& j, const std::string& source) {
  return In{source}.env(j, "the top level");
}

json workcounts_to_json(const WorkCounts& w) {
  json cases = json::array();
  for (const CaseWork& c : w.cases) {
    json usage = c.experts.usage;
    cases.push_back({{"name", c.name},
                     {"output_token_hash", c.token_hash},
                     {"experts",
                      {{"hits", c.experts.hits},
                       {"misses", c.experts.misses},
                       {"loads", c.experts.loads},
                       {"bytes_moved", c.experts.bytes_moved},
                       {"usage", usage}}},
                     {"prefill", phase_json(c.prefill)},
                     {"decode", phase_json(c.decode)}});
  }
  return {{"moebench_workcounts", kWorkCountsVersion},
          {"commit", w.commit},
          {"cost", "[Ir, L1 misses, LL misses]; estimated cost = Ir + 10 * L1 misses + 100 * LL misses"},
          {"environment", environment_to_json(w.env)},
          {"cases", cases}};
}

WorkCounts workcounts_from_json(const json& j, const std::string& src) {
  In in{src};
  const json& v = in.at(j, "moebench_workcounts", "the top level");
  if (!v.is_number_integer() || v.get<int64_t>() != kWorkCountsVersion)
    in.bad("moebench_workcounts", v, fmt::format("version {}", kWorkCountsVersion).c_str());
  WorkCounts w;
  w.commit = in.str(in.at(j, "commit", "the top level"), "commit");
  w.env = in.env(in.at(j, "environment", "the top level"), "environment");
  const json& cs = in.at(j, "cases", "the top level");
  if (!cs.is_array() || cs.empty()) in.bad("cases", cs, "a non-empty array");
  for (size_t i = 0; i < cs.size(); ++i) {
    const std::string p = fmt::format("cases[{}]", i);
    CaseWork c;
    c.name = in.str(in.at(cs[i], "name", p), p + ".name");
    c.token_hash = in.str(in.at(cs[i], "output_token_hash", p), p + ".output_token_hash");
    const json& x = in.at(cs[i], "experts", p);
    c.experts.hits = in.i64(in.at(x, "hits", p + ".experts"), p + ".experts.hits");
    c.experts.misses = in.i64(in.at(x, "misses", p + ".experts"), p + ".experts.misses");
    c.experts.loads = in.i64(in.at(x, "loads", p + ".experts"), p + ".experts.loads");
    c.experts.bytes_moved = in.i64(in.at(x, "bytes_moved", p + ".experts"), p + ".experts.bytes_moved");
    const json& u = in.at(x, "usage", p + ".experts");
    if (!u.is_array()) in.bad(p + ".experts.usage", u, "an array of arrays of integers");
    for (size_t l = 0; l < u.size(); ++l) {
      const std::string up = fmt::format("{}.experts.usage[{}]", p, l);
      if (!u[l].is_array()) in.bad(up, u[l], "an array of integers");
      std::vector<int64_t> row;
      for (size_t k = 0; k < u[l].size(); ++k) row.push_back(in.i64(u[l][k], fmt::format("{}[{}]", up, k)));
      c.experts.usage.push_back(std::move(row));
    }
    c.prefill = in.phase(in.at(cs[i], "prefill", p), p + ".prefill");
    c.decode = in.phase(in.at(cs[i], "decode", p), p + ".decode");
    w.cases.push_back(std::move(c));
  }
  return w;
}

WorkCounts load_workcounts(const std::string& path) {
  const std::string text = read_file(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail("{}: invalid JSON at byte {}", path, e.byte);
  }
  return workcounts_from_json(j, path);
}

void save_workcounts(const std::string& path, const WorkCounts& w) {
  write_file_atomic(path, workcounts_to_json(w).dump(1) + "\n");
}

// ---------------------------------------------------------------- verdict

namespace {

std::string si(double v) {
  const double a = std::fabs(v);
  if (a >= 1e9) return fmt::format("{:.3f}G", v / 1e9);
  if (a >= 1e6) return fmt::format("{:.3f}M", v / 1e6);
  if (a >= 1e3) return fmt::format("{:.1f}k", v / 1e3);
  return fmt::format("{:.0f}", v);
}

std::string short_name(const std::string& fn) {
  return fn.size() > 90 ? fn.substr(0, 87) + "..." : fn;
}

// The `top` functions whose estimated cost per step grew most, largest first (after
// the first, only those that grew by 0.1% of the phase or more).
std::string grew_most(const PhaseWork& b, const PhaseWork& n, int top) {
  std::vector<std::pair<double, std::string>> d;
  for (const auto& [fn, c] : n.functions) {
    auto it = b.functions.find(fn);
    const double before = it == b.functions.end() ? 0.0 : static_cast<double>(it->second.estimated()) / b.steps;
    const double after = static_cast<double>(c.estimated()) / n.steps;
    if (after > before) d.emplace_back(after - before, fn);
  }
  std::sort(d.begin(), d.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
  std::string out;
  const double base = b.estimated_per_step();
  for (int i = 0; i < top && i < static_cast<int>(d.size()); ++i) {
    if (i > 0 && d[i].first < 0.001 * base) break;  // the rest grew by less than 0.1% of the phase each
    out += fmt::format("{}{} +{}/step ({:+.2f}% of the phase)", i ? "; " : "", short_name(d[i].second),
                       si(d[i].first), 100.0 * d[i].first / base);
  }
  return out.empty() ? "no function grew" : out;
}

const char* kRerecord = "if the change is intended, re-record with `bash scripts/ci_gate.sh --update-baseline` and commit "
                        "reports/ci-baseline/";

void env_check(const WorkEnvironment& b, const WorkEnvironment& n) {
  auto one = [](const char* what, const std::string& x, const std::string& y) {
    if (x != y)
      fail("the baseline's counts were made with {} '{}' but this run has '{}': counts are not comparable across them; "
           "re-record the baseline on this setup with `bash scripts/ci_gate.sh --update-baseline` (and commit "
           "reports/ci-baseline/ if it is the CI setup)",
           what, x, y);
  };
  one("valgrind", b.valgrind, n.valgrind);
  one("compiler", b.compiler, n.compiler);
  one("build type", b.build_type, n.build_type);
  one("CPU (as valgrind presents it)", b.cpu, n.cpu);
  one("libraries", b.libraries, n.libraries);
  one("threads", std::to_string(b.threads), std::to_string(n.threads));
  one("simulated caches", b.cache, n.cache);
}

}  // namespace

GateVerdict compare_work(const WorkCounts& base, const WorkCounts& now, double tolerance, int top) {
  if (!(tolerance >= 0.0 && tolerance < 1.0)) fail("tolerance {} must be in [0, 1) (0.015 = 1.5%)", tolerance);
  env_check(base.env, now.env);
  auto names = [](const WorkCounts& w) {
    std::string s;
    for (const CaseWork& c : w.cases) s += (s.empty() ? "" : ", ") + c.name;
    return s;
  };
  if (names(base) != names(now))
    fail("the baseline has cases [{}] but this run has [{}]: the gate's suite changed; re-record the baseline with "
         "`bash scripts/ci_gate.sh --update-baseline`",
         names(base), names(now));
  GateVerdict v;
  auto failed = [&](std::string line) {
    v.pass = false;
    v.lines.push_back("FAIL  " + std::move(line));
  };
  for (size_t i = 0; i < base.cases.size(); ++i) {
    const CaseWork &b = base.cases[i], &n = now.cases[i];
    if (b.token_hash != n.token_hash)
      failed(fmt::format("{}: output tokens changed (hash {}, baseline {}): the computation changed; {}", n.name,
                         n.token_hash, b.token_hash, kRerecord));
    const std::pair<const char*, std::pair<int64_t, int64_t>> counters[] = {
        {"expert hits", {b.experts.hits, n.experts.hits}},
        {"expert misses", {b.experts.misses, n.experts.misses}},
        {"expert loads", {b.experts.loads, n.experts.loads}},
        {"expert bytes moved", {b.experts.bytes_moved, n.experts.bytes_moved}}};
    for (const auto& [what, x] : counters)
      if (x.first != x.second) failed(fmt::format("{}: {} {} (baseline {}); {}", n.name, what, x.second, x.first, kRerecord));
    if (b.experts.usage != n.experts.usage)
      failed(fmt::format("{}: the experts each token was routed to changed (usage matrix); {}", n.name, kRerecord));
    for (const char* phase : {"prefill", "decode"}) {
      const bool pre = std::strcmp(phase, "prefill") == 0;
      const PhaseWork &bp = pre ? b.prefill : b.decode, &np = pre ? n.prefill : n.decode;
      const char* metric = pre ? "estimated cost per prefill" : "estimated cost per decode token";
      if (bp.steps != np.steps) {
        failed(fmt::format("{} {}: {} steps counted, baseline {}: the suite changed; {}", n.name, phase, np.steps,
                           bp.steps, kRerecord));
        continue;
      }
      const double eb = bp.estimated_per_step(), en = np.estimated_per_step();
      const double change = eb > 0 ? en / eb - 1.0 : 0.0;
      const WorkCost& c = np.total;
      std::string line = fmt::format("{}: {} {} ({:+.2f}% vs baseline {}; Ir {}, L1 misses {}, LL misses {} per step)",
                                     n.name, metric, si(en), 100.0 * change, si(eb), si(double(c.ir) / np.steps),
                                     si(double(c.l1_misses) / np.steps), si(double(c.ll_misses) / np.steps));
      if (change > tolerance) {
        failed(fmt::format("{} above the {:.2f}% tolerance; grew most: {}", line, 100.0 * tolerance,
                           grew_most(bp, np, top)));
      } else {
        v.lines.push_back("ok    " + line +
                          (change < -tolerance ? fmt::format("; faster than the tolerance: {}", kRerecord) : ""));
      }
    }
  }
  return v;
}

}  // namespace moebench::reports
