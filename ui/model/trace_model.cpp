// trace_model.cpp: see trace_model.h.
#include "ui/model/trace_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <unordered_map>

#include "common/error.h"
#include "profiler/trace_validate.h"

namespace moebench::ui {

namespace {

using json = nlohmann::json;

// pid/tid may be integers or strings; keep both a sort number and a text.
struct Id {
  int64_t num = 0;
  std::string text;
  bool operator<(const Id& o) const { return num != o.num ? num < o.num : text < o.text; }
};
bool read_id(const json& e, const char* key, Id* out) {
  auto it = e.find(key);
  if (it == e.end()) return false;
  if (it->is_number_integer()) {
    out->num = it->get<int64_t>();
    out->text = std::to_string(out->num);
    return true;
  }
  if (it->is_string()) {
    out->text = it->get<std::string>();
    out->num = INT64_MAX / 2;  // named ids sort after numbered ones
    return true;
  }
  return false;
}
// Times beyond 2^53 us (285 years) are refused as unusable: a double no longer holds every
// microsecond there, and the extent and the windows computed from such times can overflow.
constexpr double kMaxTimeUs = 9007199254740992.0;
bool usable_time(double t) { return std::abs(t) <= kMaxTimeUs; }  // false for NaN

double num_or(const json& e, const char* key, double fallback) {
  auto it = e.find(key);
  return it != e.end() && it->is_number() ? it->get<double>() : fallback;
}
std::string str_or(const json& e, const char* key, const std::string& fallback) {
  auto it = e.find(key);
  return it != e.end() && it->is_string() ? it->get<std::string>() : fallback;
}

struct Builder {
  TraceModel m;
  std::unordered_map<std::string, int32_t> interned;
  std::map<Id, std::string> process_names;
  std::map<std::pair<Id, Id>, std::string> thread_names;
  std::map<std::pair<Id, Id>, std::vector<TraceSpan>> spans;          // per (pid, tid)
  std::map<std::pair<Id, Id>, std::vector<TraceSpan>> open;           // B without E yet
  std::map<std::string, TraceCounter> counters;

  int32_t intern(const std::string& s) {
    auto [it, fresh] = interned.emplace(s, static_cast<int32_t>(m.names.size()));
    if (fresh) m.names.push_back(s);
    return it->second;
  }
};

void assign_depths(TraceTrack& t) {
  std::sort(t.spans.begin(), t.spans.end(), [](const TraceSpan& a, const TraceSpan& b) {
    return a.start_us != b.start_us ? a.start_us < b.start_us : a.end_us > b.end_us;
  });
  std::vector<double> stack_end;  // end of the open span at each depth
  t.depth_count = 1;
  t.max_dur_us = 0;
  for (auto& s : t.spans) {
    // Slices that touch within 1 ns (microsecond doubles round) are siblings, not nested.
    while (!stack_end.empty() && stack_end.back() <= s.start_us + 1e-3) stack_end.pop_back();
    s.depth = static_cast<int32_t>(stack_end.size());
    stack_end.push_back(s.end_us);
    t.depth_count = std::max(t.depth_count, s.depth + 1);
    t.max_dur_us = std::max(t.max_dur_us, s.end_us - s.start_us);
  }
}

}  // namespace

size_t TraceModel::span_count() const {
  size_t n = 0;
  for (auto& t : tracks) n += t.spans.size();
  return n;
}

TraceModel trace_from_json(const json& j, std::vector<std::string>* warnings) {
  const json* events = nullptr;
  if (j.is_array()) {
    events = &j;
  } else if (j.is_object() && j.contains("traceEvents") && j["traceEvents"].is_array()) {
    events = &j["traceEvents"];
  } else {
    fail("not a Chrome trace: expected an array of events or an object with a \"traceEvents\" array");
  }
  if (warnings) *warnings = profiler::validate_chrome_trace(j);

  Builder b;
  for (const json& e : *events) {
    if (!e.is_object()) continue;
    std::string ph = str_or(e, "ph", "");
    Id pid, tid;
    if (!read_id(e, "pid", &pid)) continue;
    bool has_tid = read_id(e, "tid", &tid);
    if (ph == "M") {
      auto args = e.find("args");
      if (args == e.end() || !args->is_object()) continue;
      std::string what = str_or(e, "name", ""), name = str_or(*args, "name", "");
      if (what == "process_name") b.process_names[pid] = name;
      if (what == "thread_name" && has_tid) b.thread_names[{pid, tid}] = name;
      continue;
    }
    double ts = num_or(e, "ts", NAN);
    if (!usable_time(ts)) continue;
    if (ph == "C") {
      auto args = e.find("args");
      if (args == e.end() || !args->is_object()) continue;
      std::string name = str_or(e, "name", "counter");
      for (auto it = args->begin(); it != args->end(); ++it) {
        if (!it->is_number()) continue;
        auto& c = b.counters[name + ": " + it.key()];
        c.t_us.push_back(ts);
        c.value.push_back(it->get<double>());
      }
      continue;
    }
    if (!has_tid) continue;
    std::pair<Id, Id> key{pid, tid};
    if (ph == "X") {
      double dur = num_or(e, "dur", 0);
      if (!(dur >= 0) || !usable_time(ts + dur)) continue;
      b.spans[key].push_back({ts, ts + dur, b.intern(str_or(e, "name", "?")), b.intern(str_or(e, "cat", "")), 0});
    } else if (ph == "B") {
      b.open[key].push_back({ts, ts, b.intern(str_or(e, "name", "?")), b.intern(str_or(e, "cat", "")), 0});
    } else if (ph == "E") {
      auto& st = b.open[key];
      if (st.empty()) continue;
      TraceSpan s = st.back();
      st.pop_back();
      if (ts < s.start_us) continue;
      s.end_us = ts;
      b.spans[key].push_back(s);
    }
  }

  for (auto& [key, spans] : b.spans) {
    TraceTrack t;
    const auto& [pid, tid] = key;
    auto pn = b.process_names.find(pid);
    std::string process = pn != b.process_names.end() && !pn->second.empty() ? pn->second : "pid " + pid.text;
    auto tn = b.thread_names.find(key);
    std::string thread = tn != b.thread_names.end() && !tn->second.empty() ? tn->second : "tid " + tid.text;
    t.label = process + " / " + thread;
    t.gpu = (pid.num >= 100 && pid.num < INT64_MAX / 2) || process.rfind("GPU", 0) == 0;
    t.sort_pid = pid.num;
    t.sort_tid = tid.num;
    t.spans = std::move(spans);
    assign_depths(t);
    b.m.tracks.push_back(std::move(t));
  }
  std::stable_sort(b.m.tracks.begin(), b.m.tracks.end(), [](const TraceTrack& a, const TraceTrack& c) {
    if (a.gpu != c.gpu) return !a.gpu;
    return a.sort_pid != c.sort_pid ? a.sort_pid < c.sort_pid : a.sort_tid < c.sort_tid;
  });
  for (auto& [label, c] : b.counters) {
    // Sort points by time (writers may interleave tracks).
    std::vector<size_t> order(c.t_us.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return c.t_us[x] < c.t_us[y]; });
    TraceCounter s;
    s.label = label;
    for (size_t i : order) {
      s.t_us.push_back(c.t_us[i]);
      s.value.push_back(c.value[i]);
    }
    b.m.counters.push_back(std::move(s));
  }

  bool any = false;
  auto extend = [&](double t0, double t1) {
    if (!any) {
      b.m.t_min_us = t0;
      b.m.t_max_us = t1;
      any = true;
    }
    b.m.t_min_us = std::min(b.m.t_min_us, t0);
    b.m.t_max_us = std::max(b.m.t_max_us, t1);
  };
  for (auto& t : b.m.tracks)
    for (auto& s : t.spans) extend(s.start_us, s.end_us);
  for (auto& c : b.m.counters)
    if (!c.t_us.empty()) extend(c.t_us.front(), c.t_us.back());
  return std::move(b.m);
}

TimeWindow full_window(const TraceModel& m) {
  double w = m.t_max_us - m.t_min_us;
  if (!(w > 0)) return {m.t_min_us, m.t_min_us + 1};
  return {m.t_min_us - w * 0.01, m.t_max_us + w * 0.01};
}

namespace {
TimeWindow clamp_window(TimeWindow w, TimeWindow bounds) {
  double width = std::min(w.width(), bounds.width());
  if (w.t0_us < bounds.t0_us) w.t0_us = bounds.t0_us;
  if (w.t0_us + width > bounds.t1_us) w.t0_us = bounds.t1_us - width;
  w.t1_us = w.t0_us + width;
  return w;
}
}  // namespace

TimeWindow zoom_window(TimeWindow w, double anchor_us, double factor, TimeWindow bounds) {
  if (!(factor > 0) || !std::isfinite(factor)) return w;
  // At least 1 ns, and at least 16 steps of a double at the trace's times (a trace in
  // microseconds since 1970, ~1.7e15, holds them to 0.25 us): a narrower window would
  // round to zero width.
  const double magnitude = std::max(std::abs(bounds.t0_us), std::abs(bounds.t1_us));
  const double min_width = std::max(1e-3, 16 * magnitude * std::numeric_limits<double>::epsilon());
  double width = std::clamp(w.width() * factor, std::min(min_width, bounds.width()), bounds.width());
  double frac = w.width() > 0 ? (anchor_us - w.t0_us) / w.width() : 0.5;
  frac = std::clamp(frac, 0.0, 1.0);
  TimeWindow z{anchor_us - frac * width, anchor_us - frac * width + width};
  return clamp_window(z, bounds);
}

TimeWindow pan_window(TimeWindow w, double delta_us, TimeWindow bounds) {
  if (!std::isfinite(delta_us)) return w;
  return clamp_window({w.t0_us + delta_us, w.t1_us + delta_us}, bounds);
}

TraceFrame build_trace_frame(const TraceModel& m, TimeWindow w, float width_px, float min_px) {
  TraceFrame f;
  if (!(w.width() > 0) || !(width_px > 0)) return f;
  const double px_per_us = width_px / w.width();
  std::vector<int64_t> last_box;  // per depth: index into f.boxes of the row's last box, or -1
  for (size_t ti = 0; ti < m.tracks.size(); ++ti) {
    const TraceTrack& t = m.tracks[ti];
    last_box.assign(static_cast<size_t>(t.depth_count), -1);
    // First span that can overlap: starts at or after t0 - longest duration.
    auto first = std::lower_bound(t.spans.begin(), t.spans.end(), w.t0_us - t.max_dur_us,
                                  [](const TraceSpan& s, double v) { return s.start_us < v; });
    for (auto it = first; it != t.spans.end() && it->start_us <= w.t1_us; ++it) {
      if (it->end_us < w.t0_us) continue;
      ++f.spans_visible;
      float x0 = static_cast<float>((std::max(it->start_us, w.t0_us) - w.t0_us) * px_per_us);
      float x1 = static_cast<float>((std::min(it->end_us, w.t1_us) - w.t0_us) * px_per_us);
      auto& lb = last_box[static_cast<size_t>(it->depth)];
      if (x1 - x0 < min_px && lb >= 0) {
        TraceBox& prev = f.boxes[static_cast<size_t>(lb)];
        if (x0 <= prev.x1 + 1.0f && (prev.count > 1 || prev.x1 - prev.x0 < min_px)) {
          prev.x1 = std::max(prev.x1, x1);
          ++prev.count;
          continue;
        }
      }
      TraceBox b;
      b.track = static_cast<int32_t>(ti);
      b.depth = it->depth;
      b.x0 = x0;
      b.x1 = std::max(x1, x0 + 1.0f);
      b.name = it->name;
      b.cat = it->cat;
      b.span = static_cast<size_t>(it - t.spans.begin());
      lb = static_cast<int64_t>(f.boxes.size());
      f.boxes.push_back(b);
    }
  }
  return f;
}

}  // namespace moebench::ui
