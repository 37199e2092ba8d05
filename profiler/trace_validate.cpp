// trace_validate.cpp: the Chrome trace-event format checker (see trace_validate.h).
#include "profiler/trace_validate.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

namespace moebench::profiler {

namespace {

using json = nlohmann::json;

// Every phase the format defines.
const std::set<std::string, std::less<>> kPhases = {"B", "E", "X", "i", "I", "C", "b", "n", "e", "s", "t", "f",
                                                   "P", "O", "N", "D", "M", "V", "v", "R", "c", "(", ")"};
const std::set<std::string, std::less<>> kMetadata = {"process_name", "process_labels", "process_sort_index",
                                                     "thread_name", "thread_sort_index"};

std::string type_of(const json& v) { return v.type_name(); }

std::string id_key(const json& id) { return id.is_string() ? "s:" + id.get<std::string>() : "n:" + id.dump(); }

struct Checker {
  std::vector<std::string> errors;
  std::string where;  // "traceEvents[3] (ph X)"

  template <typename... Args>
  void error(fmt::format_string<Args...> f, Args&&... a) {
    errors.push_back(where + ": " + fmt::format(f, std::forward<Args>(a)...));
  }

  // Field present with the right type; false (and an error) otherwise.
  bool need_string(const json& e, const char* field) {
    if (!e.contains(field)) return error("missing field '{}'", field), false;
    if (!e[field].is_string()) return error("field '{}' is a {}, expected a string", field, type_of(e[field])), false;
    return true;
  }
  bool need_number(const json& e, const char* field) {
    if (!e.contains(field)) return error("missing field '{}'", field), false;
    if (!e[field].is_number()) return error("field '{}' is a {}, expected a number", field, type_of(e[field])), false;
    return true;
  }
  bool need_id(const json& e, const char* field) {  // pid, tid, id: integer or string
    if (!e.contains(field)) return error("missing field '{}'", field), false;
    const json& v = e[field];
    if (!(v.is_number_integer() || v.is_string()))
      return error("field '{}' is a {}, expected an integer or a string", field, type_of(v)), false;
    return true;
  }
};

struct FlowEnd {
  size_t index;
  double ts;
};

// A B or E event, kept to replay its thread in time order.
struct BE {
  size_t index;
  double ts;
  bool begin;
  std::string name;
};

using PairKey = std::pair<std::string, std::string>;

// The event array of a trace (array form, or the object form's "traceEvents") and the
// prefix its messages use; nullptr (and an error) when the top level has no such array.
const json* trace_events(const json& trace, Checker& c, std::string& prefix) {
  if (trace.is_array()) {
    prefix = "events";
    return &trace;
  }
  if (!trace.is_object()) {
    c.errors.push_back(fmt::format("trace: top level is a {}, expected an array or an object", type_of(trace)));
    return nullptr;
  }
  if (!trace.contains("traceEvents")) {
    c.errors.push_back("trace: object form has no 'traceEvents' field");
    return nullptr;
  }
  if (!trace["traceEvents"].is_array()) {
    c.errors.push_back(fmt::format("trace: field 'traceEvents' is a {}, expected an array", type_of(trace["traceEvents"])));
    return nullptr;
  }
  prefix = "traceEvents";
  if (trace.contains("displayTimeUnit")) {
    const json& u = trace["displayTimeUnit"];
    if (!u.is_string() || (u != "ms" && u != "ns"))
      c.errors.push_back(fmt::format("trace: field 'displayTimeUnit' is {}, expected \"ms\" or \"ns\"", u.dump()));
  }
  return &trace["traceEvents"];
}

// Checks the events one by one, collecting B/E events and flow ends for the checks
// that span events (balance(), flows()).
struct EventScan {
  Checker& c;
  const std::string& prefix;
  std::map<PairKey, std::vector<BE>> be;               // (pid, tid) -> events
  std::map<PairKey, std::vector<FlowEnd>> flow_s, flow_f;  // (cat, id)

  void event(const json& e, size_t i) {
    c.where = fmt::format("{}[{}]", prefix, i);
    if (!e.is_object()) return c.error("event is a {}, expected an object", type_of(e));
    if (!c.need_string(e, "ph")) return;
    const std::string ph = e["ph"].get<std::string>();
    c.where = fmt::format("{}[{}] (ph {})", prefix, i, ph);
    if (!kPhases.count(ph)) return c.error("field 'ph' is \"{}\", not a trace-event phase", ph);
    const bool is_meta = ph == "M";
    const bool name_ok = ph == "E" ? true : c.need_string(e, "name");
    c.need_id(e, "pid");
    const bool process_level =
        ph == "C" || (is_meta && name_ok && e["name"].is_string() &&
                      e["name"].get<std::string>().rfind("process_", 0) == 0);
    if (!process_level || e.contains("tid")) c.need_id(e, "tid");
    const bool ts_ok = is_meta ? true : c.need_number(e, "ts");
    if (e.contains("args") && !e["args"].is_object())
      c.error("field 'args' is a {}, expected an object", type_of(e["args"]));
    const double ts = ts_ok && e.contains("ts") && e["ts"].is_number() ? e["ts"].get<double>() : 0.0;
    phase_fields(e, i, ph, name_ok, ts_ok, ts);
  }

  // The fields each phase adds.
  void phase_fields(const json& e, size_t i, const std::string& ph, bool name_ok, bool ts_ok, double ts) {
    if (ph == "X") {
      if (c.need_number(e, "dur") && e["dur"].get<double>() < 0)
        c.error("field 'dur' is {}, must be >= 0", e["dur"].dump());
    } else if (ph == "B" || ph == "E") {
      const PairKey key(e.contains("pid") ? e["pid"].dump() : "", e.contains("tid") ? e["tid"].dump() : "");
      if (ts_ok) be[key].push_back(BE{i, ts, ph == "B", name_ok && e.contains("name") ? e["name"].dump() : ""});
    } else if (ph == "s" || ph == "t" || ph == "f") {
      flow_event(e, i, ph, ts_ok, ts);
    } else if (ph == "M") {
      if (name_ok) metadata(e);
    } else if (ph == "C") {
      counter(e);
    } else if (ph == "i" || ph == "I") {
      if (e.contains("s") && (!e["s"].is_string() || (e["s"] != "g" && e["s"] != "p" && e["s"] != "t")))
        c.error("field 's' is {}, expected \"g\", \"p\" or \"t\"", e["s"].dump());
    } else if (ph == "b" || ph == "n" || ph == "e") {
      c.need_id(e, "id");
      c.need_string(e, "cat");
    }
  }

  void flow_event(const json& e, size_t i, const std::string& ph, bool ts_ok, double ts) {
    const bool id_ok = c.need_id(e, "id");
    const bool cat_ok = c.need_string(e, "cat");
    if (e.contains("bp") && (!e["bp"].is_string() || e["bp"] != "e"))
      c.error("field 'bp' is {}, expected \"e\"", e["bp"].dump());
    if (!(id_ok && cat_ok && ts_ok)) return;
    const PairKey fk(e["cat"].get<std::string>(), id_key(e["id"]));
    if (ph == "s") flow_s[fk].push_back(FlowEnd{i, ts});
    if (ph == "f") flow_f[fk].push_back(FlowEnd{i, ts});
  }

  void metadata(const json& e) {
    const std::string kind = e["name"].get<std::string>();
    if (!kMetadata.count(kind)) {
      c.error("field 'name' is \"{}\", not a metadata kind (process_name, thread_name, ...)", kind);
    } else if (!e.contains("args") || !e["args"].is_object()) {
      c.error("missing field 'args' (metadata {} needs args)", kind);
    } else if (kind.size() > 5 && kind.compare(kind.size() - 5, 5, "_name") == 0) {
      if (!e["args"].contains("name") || !e["args"]["name"].is_string())
        c.error("field 'args.name' missing or not a string (metadata {})", kind);
    } else if (kind.find("sort_index") != std::string::npos) {
      if (!e["args"].contains("sort_index") || !e["args"]["sort_index"].is_number_integer())
        c.error("field 'args.sort_index' missing or not an integer (metadata {})", kind);
    }
  }

  void counter(const json& e) {
    if (!e.contains("args") || !e["args"].is_object()) {
      c.error("missing field 'args' (a counter needs an object of numbers)");
    } else if (e["args"].empty()) {
      c.error("field 'args' is empty (a counter needs at least one series)");
    } else {
      for (const auto& [k, v] : e["args"].items())
        if (!v.is_number()) c.error("field 'args.{}' is a {}, expected a number", k, type_of(v));
    }
  }

  // B/E: replay each thread in time order (stable: file order breaks ties).
  void balance() {
    for (auto& [key, list] : be) {
      std::stable_sort(list.begin(), list.end(), [](const BE& a, const BE& b) { return a.ts < b.ts; });
      std::vector<const BE*> stack;
      for (const auto& x : list) {
        if (x.begin) {
          stack.push_back(&x);
        } else if (stack.empty()) {
          c.errors.push_back(fmt::format("{}[{}] (ph E): no open B event on pid {} tid {}", prefix, x.index, key.first,
                                         key.second));
        } else {
          stack.pop_back();
        }
      }
      for (const BE* open : stack)
        c.errors.push_back(fmt::format("{}[{}] (ph B): B event {} on pid {} tid {} is never closed by an E", prefix,
                                       open->index, open->name, key.first, key.second));
    }
  }

  // Flows: every s has an f with the same (cat, id), and the other way round.
  void flows() {
    for (const auto& [k, starts] : flow_s) {
      const auto f = flow_f.find(k);
      if (f == flow_f.end()) {
        for (const auto& s : starts)
          c.errors.push_back(fmt::format("{}[{}] (ph s): flow start (cat \"{}\", id {}) has no matching f event",
                                         prefix, s.index, k.first, k.second.substr(2)));
        continue;
      }
      const double first_s =
          std::min_element(starts.begin(), starts.end(), [](auto& a, auto& b) { return a.ts < b.ts; })->ts;
      for (const auto& fe : f->second)
        if (fe.ts < first_s)
          c.errors.push_back(fmt::format("{}[{}] (ph f): field 'ts' {} is before its flow start (cat \"{}\", id {})",
                                         prefix, fe.index, fe.ts, k.first, k.second.substr(2)));
    }
    for (const auto& [k, ends] : flow_f)
      if (!flow_s.count(k))
        for (const auto& fe : ends)
          c.errors.push_back(fmt::format("{}[{}] (ph f): flow end (cat \"{}\", id {}) has no matching s event", prefix,
                                         fe.index, k.first, k.second.substr(2)));
  }
};

}  // namespace

std::vector<std::string> validate_chrome_trace(const json& trace) {
  Checker c;
  std::string prefix;
  const json* events = trace_events(trace, c, prefix);
  if (events == nullptr) return c.errors;
  EventScan scan{c, prefix, {}, {}, {}};
  for (size_t i = 0; i < events->size(); ++i) scan.event((*events)[i], i);
  scan.balance();
  scan.flows();
  return c.errors;
}

}  // namespace moebench::profiler
