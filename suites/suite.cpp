// suite.cpp: see suite.h. The parser walks the JSON with a path ("cases[1].new_tokens")
// so every error is one line naming the file and the field.
#include "suites/suite.h"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "common/error.h"
#include "common/atomic_file.h"
#include "engine/hf_cache.h"
#include "engine/weight_source.h"
#include "variants/routing.h"
#include "variants/stages.h"

namespace moebench::suites {

namespace {

using json = nlohmann::ordered_json;  // keeps file order (sweep axes, settings)
namespace fs = std::filesystem;

// Short JSON text of a value for messages.
std::string show(const json& v) {
  std::string s = v.dump();
  if (s.size() > 48) s = s.substr(0, 45) + "...";
  return s;
}

// A JSON node with its path and the file it came from.
struct Node {
  const json& v;
  std::string path;
  const std::string& source;

  [[noreturn]] void bad(const std::string& expected) const {
    fail("{}: {} is {}, expected {}", source, path, show(v), expected);
  }
  Node at(const std::string& key) const { return {v.at(key), path.empty() ? key : path + "." + key, source}; }
  Node at(size_t i) const { return {v.at(i), path + "[" + std::to_string(i) + "]", source}; }
  bool has(const std::string& key) const { return v.contains(key); }

  void object_with(std::initializer_list<const char*> allowed) const {
    if (!v.is_object()) bad("an object");
    for (auto it = v.begin(); it != v.end(); ++it) {
      bool ok = false;
      std::string all;
      for (const char* a : allowed) {
        ok |= it.key() == a;
        all += (all.empty() ? "" : ", ") + std::string(a);
      }
      if (!ok)
        fail("{}: {}{} is not a known field (expected one of: {})", source, path.empty() ? "" : path + ".", it.key(), all);
    }
  }
  void require(const std::string& key) const {
    if (!has(key)) fail("{}: {}{} is missing", source, path.empty() ? "" : path + ".", key);
  }
  std::string str() const {
    if (!v.is_string() || v.get<std::string>().empty()) bad("a non-empty string");
    return v.get<std::string>();
  }
  int integer(int lo, const char* expected, int hi = 1 << 30) const {
    if (!v.is_number_integer()) bad(expected);
    auto x = v.get<int64_t>();
    if (x < lo || x > hi) bad(expected);
    return static_cast<int>(x);
  }
  // A setting value: string, number or bool, as the text `--set` would take.
  std::string scalar() const {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
    if (v.is_number()) return v.dump();
    bad("a string, number or boolean");
  }
  const json& array() const {
    if (!v.is_array() || v.empty()) bad("a non-empty array");
    return v;
  }
};

void check_stage(const Node& n, const std::string& stage) {
  try {
    stage_settings(stage);
  } catch (const Error& e) {
    fail("{}: {}: {}", n.source, n.path, e.what());
  }
}

// Checks one `key = value` setting on its own: known key, parseable, valid.
void check_setting(const Node& n, const std::string& key, const std::string& value) {
  try {
    if (key == "stage") fail("the stage is set with \"stage\", not as a setting");
    EngineSettings s;
    s.set(key, value);
    s.validate();
  } catch (const Error& e) {
    fail("{}: {}: {}", n.source, n.path, e.what());
  }
}

std::vector<std::pair<std::string, std::string>> parse_settings(const Node& n) {
  if (!n.v.is_object()) n.bad("an object of setting: value");
  std::vector<std::pair<std::string, std::string>> out;
  for (auto it = n.v.begin(); it != n.v.end(); ++it) {
    Node k = n.at(it.key());
    std::string value = k.scalar();
    check_setting(k, it.key(), value);
    out.emplace_back(it.key(), value);
  }
  return out;
}

SuiteDefaults parse_defaults(const Node& n) {
  n.object_with({"model", "backend", "seed", "warmup_runs", "repetitions", "rounds", "new_tokens", "cpu_threads",
                 "clock", "cold_each_case", "stage", "settings"});
  SuiteDefaults d;
  if (n.has("model")) {
    Node m = n.at("model");
    if (m.v.is_string()) {
      d.model["*"] = m.str();
    } else if (m.v.is_object() && !m.v.empty()) {
      m.object_with({"cpu", "cuda", "*"});
      for (auto it = m.v.begin(); it != m.v.end(); ++it) d.model[it.key()] = m.at(it.key()).str();
    } else {
      m.bad("a model name or an object {\"cpu\": MODEL, \"cuda\": MODEL}");
    }
  }
  if (n.has("backend")) {
    Node b = n.at("backend");
    d.backend = b.str();
    if (d.backend != "auto" && d.backend != "cpu" && d.backend != "cuda") b.bad("auto, cpu or cuda");
  }
  if (n.has("seed")) d.seed = static_cast<uint64_t>(n.at("seed").integer(0, "a non-negative integer"));
  if (n.has("warmup_runs")) d.warmup_runs = n.at("warmup_runs").integer(0, "a non-negative integer");
  if (n.has("repetitions")) d.repetitions = n.at("repetitions").integer(1, "a positive integer");
  if (n.has("clock")) {
    d.clock = n.at("clock").str();
    if (d.clock != "wall" && d.clock != "thread_cpu") n.at("clock").bad("wall or thread_cpu");
  }
  if (n.has("cold_each_case")) {
    Node c = n.at("cold_each_case");
    if (!c.v.is_boolean()) c.bad("true or false");
    d.cold_each_case = c.v.get<bool>();
  }
  if (n.has("rounds")) d.rounds = n.at("rounds").integer(1, "a positive integer");
  if (n.has("new_tokens")) d.new_tokens = n.at("new_tokens").integer(1, "a positive integer");
  // A fixed limit, the same on every machine (so a suite is valid everywhere): far
  // more threads than any CPU has, well below what makes the OpenMP runtime fail.
  if (n.has("cpu_threads"))
    d.cpu_threads = n.at("cpu_threads").integer(0, "an integer in [0, 1024] (0: OpenMP's default)", 1024);
  if (n.has("stage")) {
    d.stage = n.at("stage").str();
    check_stage(n.at("stage"), d.stage);
  }
  if (n.has("settings")) d.settings = parse_settings(n.at("settings"));
  return d;
}

CaseSpec parse_case(const Node& n) {
  n.object_with({"name", "prompt", "prompt_tokens", "new_tokens", "stage", "batch_size", "workload", "settings"});
  n.require("name");
  CaseSpec c;
  c.name = n.at("name").str();
  if (c.name.find_first_of("[]/@") != std::string::npos) n.at("name").bad("a name without [ ] / @");
  if (n.has("prompt") == n.has("prompt_tokens"))
    fail("{}: {} needs exactly one of prompt (text) or prompt_tokens (a count)", n.source, n.path);
  if (n.has("prompt")) c.prompt = n.at("prompt").str();
  if (n.has("prompt_tokens")) c.prompt_tokens = n.at("prompt_tokens").integer(1, "a positive integer");
  if (n.has("new_tokens")) c.new_tokens = n.at("new_tokens").integer(1, "a positive integer");
  if (n.has("stage")) {
    c.stage = n.at("stage").str();
    check_stage(n.at("stage"), c.stage);
  }
  if (n.has("batch_size")) c.batch_size = n.at("batch_size").integer(1, "a positive integer");
  if (n.has("workload")) {
    std::string w = n.at("workload").str();
    if (w == "model") c.workload = Workload::model;
    else if (w == "calibration") c.workload = Workload::calibration;
    else n.at("workload").bad("model or calibration");
  }
  if (n.has("settings")) c.settings = parse_settings(n.at("settings"));
  return c;
}

std::vector<SweepAxis> parse_sweep(const Node& n) {
  if (!n.v.is_object() || n.v.empty()) n.bad("an object of axis: [values]");
  std::vector<SweepAxis> out;
  for (auto it = n.v.begin(); it != n.v.end(); ++it) {
    Node axis = n.at(it.key());
    const json& arr = axis.array();
    SweepAxis a;
    a.key = it.key();
    for (size_t i = 0; i < arr.size(); ++i) {
      Node x = axis.at(i);
      std::string v = x.scalar();
      if (a.key == "stage") check_stage(x, v);
      else if (a.key == "batch_size") x.integer(1, "a positive integer");
      else check_setting(x, a.key, v);
      if (std::find(a.values.begin(), a.values.end(), v) != a.values.end()) x.bad("a value not already in the list");
      a.values.push_back(v);
    }
    out.push_back(std::move(a));
  }
  return out;
}

std::string exe_dir() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.parent_path().string();
}

std::vector<std::string> suite_dirs() {
  std::vector<std::string> d;
  if (const char* e = std::getenv("MOEBENCH_SUITES_DIR"); e && *e) d.push_back(e);
  std::string exe = exe_dir();
  if (!exe.empty()) {
    d.push_back(exe + "/../../suites");           // build/bin -> the source tree
    d.push_back(exe + "/../share/moebench/suites");  // an install
  }
#ifdef MOEBENCH_SOURCE_ROOT
  d.push_back(std::string(MOEBENCH_SOURCE_ROOT) + "/suites");
#endif
  return d;
}

}  // namespace

Suite parse_suite(const std::string& text, const std::string& source, SuiteLoader load_named) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    std::string what = e.what();
    if (auto p = what.find("parse error"); p != std::string::npos) what = what.substr(p);
    fail("{}: invalid JSON at byte {}: {}", source, e.byte, what);
  } catch (const json::exception& e) {  // a number out of range (1e999) is not a parse_error
    fail("{}: invalid JSON: {}", source, e.what());
  }
  Node root{j, "", source};
  if (!j.is_object()) fail("{}: the top level is {}, expected an object", source, show(j));
  root.object_with({"name", "description", "defaults", "cases_from", "cases", "sweep"});
  root.require("name");
  Suite s;
  s.source = source;
  s.name = root.at("name").str();
  if (s.name.find_first_of("/@[]") != std::string::npos) root.at("name").bad("a name without / @ [ ]");
  if (root.has("description")) s.description = root.at("description").str();
  if (root.has("defaults")) s.defaults = parse_defaults(root.at("defaults"));
  if (root.has("cases_from")) {
    Node from = root.at("cases_from");
    const json& arr = from.array();
    for (size_t i = 0; i < arr.size(); ++i) {
      Node x = from.at(i);
      std::string name = x.str();
      if (!load_named) fail("{}: {}: cannot load other suites here", source, x.path);
      Suite other;
      try {
        other = load_named(name);
      } catch (const Error& e) {
        fail("{}: {}: {}", source, x.path, e.what());
      }
      if (other.cases.empty())
        fail("{}: {}: suite {} has no cases of its own (cases_from is not followed further)", source, x.path, name);
      for (CaseSpec c : other.cases) {
        if (c.new_tokens == 0) c.new_tokens = other.defaults.new_tokens;
        s.cases.push_back(std::move(c));
      }
    }
  }
  if (root.has("cases")) {
    Node cases = root.at("cases");
    const json& arr = cases.array();
    for (size_t i = 0; i < arr.size(); ++i) s.cases.push_back(parse_case(cases.at(i)));
  }
  if (s.cases.empty()) fail("{}: the suite has no cases (give cases or cases_from)", source);
  std::set<std::string> names;
  for (const CaseSpec& c : s.cases)
    if (!names.insert(c.name).second) fail("{}: case name {} appears twice", source, c.name);
  if (root.has("sweep")) s.sweep = parse_sweep(root.at("sweep"));
  return s;
}

std::string find_suite_file(const std::string& name_or_path) {
  std::error_code ec;
  if (fs::is_regular_file(name_or_path, ec)) return name_or_path;
  if (name_or_path.find('/') != std::string::npos || name_or_path.ends_with(".json"))
    fail("suite file {} does not exist", name_or_path);
  std::string looked;
  for (const std::string& d : suite_dirs()) {
    fs::path p = fs::path(d) / (name_or_path + ".json");
    if (fs::is_regular_file(p, ec)) return fs::weakly_canonical(p, ec).string();
    looked += (looked.empty() ? "" : ", ") + d;
  }
  fail("no suite named {} (looked for {}.json in {}; set MOEBENCH_SUITES_DIR or pass a file)", name_or_path,
       name_or_path, looked);
}

Suite load_suite(const std::string& name_or_path) {
  std::string path = find_suite_file(name_or_path);
  SuiteLoader no_nesting = [](const std::string& name) {
    std::string p = find_suite_file(name);
    return parse_suite(read_file(p), p, nullptr);
  };
  return parse_suite(read_file(path), path, no_nesting);
}

std::vector<std::string> suite_names() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const std::string& d : suite_dirs()) {
    if (!fs::is_directory(d, ec)) continue;
    for (const auto& e : fs::directory_iterator(d, ec))
      if (e.path().extension() == ".json") out.push_back(e.path().stem().string());
    break;
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------- expansion

std::string Instance::reload_key() const {
  if (spec && spec->workload == Workload::calibration) return "calibration";
  std::string k = model + "|" + std::to_string(seed) + "|" + backend + "|" + settings.expert_tier + "|" +
                  settings.gpu_mem_budget;
  for (const auto& [key, value] : settings.to_list())
    if (key != "stage" && key != "warmup" && key != "expert_tier" && key != "gpu_mem_budget") k += "|" + key + "=" + value;
  if (cold_each_case && spec) k += "|case=" + spec->name;
  return k;
}

int count_reloads(const std::vector<Instance>& v) {
  int n = 0;
  std::string last;
  for (const Instance& i : v) {
    std::string k = i.reload_key();
    if (k == "calibration") continue;
    if (k != last) ++n;
    last = k;
  }
  return n;
}

namespace {

// The part of the reload key that is most expensive to change: a different
// model file, backend, expert tier or memory budget.
std::string primary_key(const Instance& i) {
  if (i.spec && i.spec->workload == Workload::calibration) return "calibration";
  return i.model + "|" + std::to_string(i.seed) + "|" + i.backend + "|" + i.settings.expert_tier + "|" +
         i.settings.gpu_mem_budget;
}

std::string resolve_model(const Suite& s, const Overrides& o, const std::string& backend) {
  if (!o.model.empty()) return o.model;
  if (auto it = s.defaults.model.find(backend); it != s.defaults.model.end()) return it->second;
  if (auto it = s.defaults.model.find("*"); it != s.defaults.model.end()) return it->second;
  if (s.defaults.model.empty()) fail("{}: the suite names no model (defaults.model) and --model was not given", s.source);
  fail("{}: defaults.model has no entry for the {} backend (pass --model)", s.source, backend);
}

// What a case names that can be checked without loading anything, so that a bad model spec
// or a missing routing trace is one line before any case runs (instead of every case
// failing with it): a synthetic model's preset, layers and dtype; that a checkpoint folder
// (or ORG/NAME's snapshot in the Hugging Face cache) holds a config.json; and that a
// trace:FILE routing opens. Each model and trace once; `from_model` / `from_routing` say
// where the value came from.
class InputCheck {
 public:
  // Checks model m once (a synthetic spec, or a checkpoint folder and its config.json, as
  // the load checks and reads them) and returns the longest sequence it takes, its
  // max_position_embeddings; 0 for no model (a calibration case).
  int model(const std::string& m, const std::string& from_model) {
    if (m.empty()) return 0;
    if (auto it = max_positions_.find(m); it != max_positions_.end()) return it->second;
    int max_positions = 0;
    try {
      max_positions = read_model_config(m).max_position_embeddings;
    } catch (const Error& e) {
      fail("{}: {}", from_model, e.what());
    }
    max_positions_.emplace(m, max_positions);
    return max_positions;
  }
  // A case whose prompt length is known (prompt_tokens) must fit the sequence its run
  // allows: prompt + new tokens within max_model_len and the model's positions.
  static void length(const CaseSpec& c, const Instance& in, int max_positions, const std::string& where) {
    if (!c.prompt.empty() || c.prompt_tokens <= 0 || max_positions <= 0) return;
    const int64_t total = static_cast<int64_t>(c.prompt_tokens) + in.new_tokens;
    if (total > max_positions)
      fail("{}: prompt_tokens {} + new_tokens {} = {} exceed the model's max_position_embeddings {} ({})", where,
           c.prompt_tokens, in.new_tokens, total, max_positions, in.model);
    if (total > in.settings.max_model_len)
      fail("{}: prompt_tokens {} + new_tokens {} = {} exceed max_model_len {} (raise it: --max-model-len or the "
           "setting max_model_len)",
           where, c.prompt_tokens, in.new_tokens, total, in.settings.max_model_len);
  }
  void routing(const std::string& spec, const std::string& from_routing) {
    if (spec.rfind("trace:", 0) != 0) return;
    const std::string path = parse_routing_spec(spec).trace_path;
    if (!traces_.insert(path).second) return;
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("{}: routing trace:{}: cannot open it ({})", from_routing, path, std::strerror(errno));
  }

 private:
  std::map<std::string, int> max_positions_;
  std::set<std::string> traces_;
};

}  // namespace

std::vector<Instance> expand(const Suite& s, const Overrides& o, BackendResolver resolve_backend) {
  const std::string backend = resolve_backend(o.backend.empty() ? s.defaults.backend : o.backend);
  const int repetitions = o.repetitions > 0 ? o.repetitions : s.defaults.repetitions;
  const int warmup_runs = o.warmup_runs >= 0 ? o.warmup_runs : s.defaults.warmup_runs;
  if (!o.stage.empty()) stage_settings(o.stage);  // a clear error before anything runs
  for (const auto& [k, v] : o.settings) {
    EngineSettings x;
    x.set(k, v);
    x.validate();
  }

  // The sweep as a list of points (each a list of axis=value), in odometer order.
  std::vector<std::vector<std::pair<std::string, std::string>>> points{{}};
  for (const SweepAxis& a : s.sweep) {
    if (a.key == "stage" && !o.stage.empty()) continue;  // --stage replaces a stage sweep
    // --set KEY=V replaces a sweep over KEY the same way (else every point would run V
    // under another point's label).
    if (std::any_of(o.settings.begin(), o.settings.end(), [&](const auto& kv) { return kv.first == a.key; })) continue;
    std::vector<std::vector<std::pair<std::string, std::string>>> next;
    for (const auto& p : points)
      for (const std::string& v : a.values) {
        auto q = p;
        q.emplace_back(a.key, v);
        next.push_back(std::move(q));
      }
    points = std::move(next);
  }

  InputCheck inputs;
  const bool routing_overridden =
      std::any_of(o.settings.begin(), o.settings.end(), [](const auto& kv) { return kv.first == "routing"; });
  std::vector<Instance> out;
  for (const CaseSpec& c : s.cases) {
    const bool calib = c.workload == Workload::calibration;
    for (const auto& point : calib ? decltype(points){{}} : points) {
      Instance in;
      in.suite = s.name;
      in.spec = &c;
      in.backend = backend;
      in.model = calib ? "" : resolve_model(s, o, backend);
      in.seed = s.defaults.seed;
      in.batch_size = c.batch_size;
      in.new_tokens = c.new_tokens > 0 ? c.new_tokens : s.defaults.new_tokens;
      in.repetitions = repetitions;
      in.rounds = std::min(s.defaults.rounds, repetitions);
      in.cpu_threads = o.cpu_threads >= 0 ? o.cpu_threads : s.defaults.cpu_threads;
      in.clock = s.defaults.clock;
      in.cold_each_case = s.defaults.cold_each_case;
      if (in.clock == "thread_cpu" && (backend != "cpu" || in.cpu_threads != 1))
        fail("{}: defaults.clock thread_cpu needs the cpu backend and cpu_threads 1", s.source);
      in.sweep_values = point;
      std::string stage = !o.stage.empty() ? o.stage : !c.stage.empty() ? c.stage : s.defaults.stage;
      for (const auto& [k, v] : point)
        if (k == "stage") stage = v;
      EngineSettings st = stage.empty() ? EngineSettings{} : stage_settings(stage);
      std::string where = fmt::format("{}: case {}", s.source, c.name);
      try {
        for (const auto& [k, v] : s.defaults.settings) st.set(k, v);
        for (const auto& [k, v] : c.settings) st.set(k, v);
        for (const auto& [k, v] : point) {
          if (k == "batch_size") in.batch_size = std::stoi(v);
          else if (k != "stage") st.set(k, v);
        }
        for (const auto& [k, v] : o.settings) st.set(k, v);
        st.validate();
      } catch (const Error& e) {
        fail("{}: {}", where, e.what());
      }
      if (!stage.empty() && st.stage != stage) st.stage = stage;
      const int max_positions = inputs.model(in.model, o.model.empty() ? s.source + ": defaults.model" : "--model");
      inputs.routing(st.routing, routing_overridden ? "--routing" : where);
      in.settings = st;
      InputCheck::length(c, in, max_positions, where);
      in.warmup_runs = st.warmup ? warmup_runs : 0;
      in.case_name = c.name;
      std::string tag;
      for (const auto& [k, v] : point)
        if (k != "stage") tag += (tag.empty() ? "" : ",") + k + "=" + v;
      if (!tag.empty()) in.case_name += "[" + tag + "]";
      out.push_back(std::move(in));
    }
  }

  // Group by first appearance: primary key (model, backend, tier, budget), then
  // the full reload key; file and sweep order is kept inside each group.
  std::vector<std::string> primaries, fulls;
  auto index_of = [](std::vector<std::string>& seen, const std::string& k) {
    auto it = std::find(seen.begin(), seen.end(), k);
    if (it != seen.end()) return static_cast<size_t>(it - seen.begin());
    seen.push_back(k);
    return seen.size() - 1;
  };
  std::vector<std::pair<std::pair<size_t, size_t>, size_t>> order;
  for (size_t i = 0; i < out.size(); ++i)
    order.push_back({{index_of(primaries, primary_key(out[i])), index_of(fulls, out[i].reload_key())}, i});
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Instance> sorted;
  sorted.reserve(out.size());
  for (const auto& o2 : order) sorted.push_back(std::move(out[o2.second]));
  return sorted;
}

}  // namespace moebench::suites
