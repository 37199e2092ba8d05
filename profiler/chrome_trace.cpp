// chrome_trace.cpp: Chrome trace-event JSON (see chrome_trace.h).
#include "profiler/chrome_trace.h"

#include <algorithm>
#include <limits>
#include <map>
#include <unordered_map>

#include "common/atomic_file.h"

namespace moebench::profiler {

namespace {

constexpr int kCpuPid = 1;
constexpr int kGpuPidBase = 100;
constexpr int kStepsTid = 0;
constexpr int kCpuThreadTidBase = 1;
constexpr int kApiTidBase = 1000;
constexpr int kCopyTidBase = 1'000'000;  // + stream id: the stream's copies and memsets

using json = nlohmann::json;

bool is_api(const GpuEvent& e) {
  return e.kind == GpuEventKind::runtime_api || e.kind == GpuEventKind::driver_api;
}

// Kernels on "stream N" (tid N), copies and memsets on "stream N copies" beside it.
int gpu_tid(const GpuEvent& e) {
  const int stream = static_cast<int>(e.stream_id);
  return e.kind == GpuEventKind::kernel ? stream : kCopyTidBase + stream;
}

json meta(const char* what, int pid, int tid, json args) {
  return json{{"name", what}, {"ph", "M"}, {"pid", pid}, {"tid", tid}, {"args", std::move(args)}};
}

// Origin: the earliest timestamp unless given.
int64_t trace_origin(const TraceInput& in) {
  if (in.origin_ns) return *in.origin_ns;
  int64_t origin = std::numeric_limits<int64_t>::max();
  for (const auto& s : in.steps) origin = std::min(origin, s.start_ns);
  for (const auto& r : in.cpu_ranges) origin = std::min(origin, r.start_ns);
  for (const auto& e : in.gpu_events) origin = std::min(origin, e.start_ns);
  for (const auto& c : in.counters) origin = std::min(origin, c.t_ns);
  return origin == std::numeric_limits<int64_t>::max() ? 0 : origin;
}

// ns -> us with ns precision: an exact integer divided by 1000 prints as its
// shortest round-trip decimal, e.g. 1234.567.
struct TraceTime {
  int64_t origin_ns;
  double us(int64_t t_ns) const { return static_cast<double>(t_ns - origin_ns) / 1000.0; }
  static double dur_us(int64_t a, int64_t b) { return static_cast<double>(std::max<int64_t>(0, b - a)) / 1000.0; }
};

using ApiTids = std::map<uint32_t, int>;  // CUPTI thread id -> tid

// ---- tracks: names and sort order of the CPU, CUDA API and GPU stream tracks ----
void cpu_tracks(const TraceInput& in, json& events) {
  events.push_back(meta("process_name", kCpuPid, 0, {{"name", "moebench (CPU)"}}));
  events.push_back(meta("process_sort_index", kCpuPid, 0, {{"sort_index", 0}}));
  events.push_back(meta("thread_name", kCpuPid, kStepsTid, {{"name", "steps"}}));
  events.push_back(meta("thread_sort_index", kCpuPid, kStepsTid, {{"sort_index", 0}}));
  for (size_t i = 0; i < in.cpu_thread_names.size(); ++i) {
    const int tid = kCpuThreadTidBase + static_cast<int>(i);
    events.push_back(meta("thread_name", kCpuPid, tid, {{"name", in.cpu_thread_names[i]}}));
    events.push_back(meta("thread_sort_index", kCpuPid, tid, {{"sort_index", tid}}));
  }
}

ApiTids api_tracks(const TraceInput& in, json& events) {
  ApiTids api_tid;
  for (const auto& e : in.gpu_events)
    if (is_api(e) && !api_tid.count(e.thread_id)) api_tid.emplace(e.thread_id, kApiTidBase + static_cast<int>(api_tid.size()));
  for (const auto& [cupti_tid, tid] : api_tid) {
    events.push_back(meta("thread_name", kCpuPid, tid, {{"name", "CUDA API (thread " + std::to_string(cupti_tid) + ")"}}));
    events.push_back(meta("thread_sort_index", kCpuPid, tid, {{"sort_index", tid}}));
  }
  return api_tid;
}

void gpu_tracks(const TraceInput& in, json& events) {
  std::map<std::pair<uint32_t, int>, bool> tracks;  // (device, gpu_tid)
  for (const auto& e : in.gpu_events)
    if (!is_api(e)) tracks[{e.device_id, gpu_tid(e)}] = true;
  uint32_t last_device = std::numeric_limits<uint32_t>::max();
  for (const auto& [key, unused] : tracks) {
    const auto [device, tid] = key;
    const int pid = kGpuPidBase + static_cast<int>(device);
    if (device != last_device) {
      events.push_back(meta("process_name", pid, 0, {{"name", "GPU " + std::to_string(device)}}));
      events.push_back(meta("process_sort_index", pid, 0, {{"sort_index", pid}}));
      last_device = device;
    }
    const bool copies = tid >= kCopyTidBase;
    const int stream = copies ? tid - kCopyTidBase : tid;
    events.push_back(meta("thread_name", pid, tid,
                          {{"name", "stream " + std::to_string(stream) + (copies ? " copies" : "")}}));
    events.push_back(meta("thread_sort_index", pid, tid, {{"sort_index", 2 * stream + (copies ? 1 : 0)}}));
  }
}

// ---- CPU: steps and ranges ----
void cpu_slices(const TraceInput& in, const TraceTime& t, json& events) {
  for (size_t i = 0; i < in.steps.size(); ++i) {
    const auto& s = in.steps[i];
    events.push_back({{"name", phase_name(s.phase)}, {"cat", "step"}, {"ph", "X"}, {"pid", kCpuPid},
                      {"tid", kStepsTid}, {"ts", t.us(s.start_ns)}, {"dur", TraceTime::dur_us(0, s.latency_ns)},
                      {"args", {{"step", i}, {"n_tokens", s.n_tokens}}}});
  }
  for (const auto& r : in.cpu_ranges) {
    json args = json::object();
    if (r.layer >= 0) args["layer"] = r.layer;
    if (r.expert >= 0) args["expert"] = r.expert;
    events.push_back({{"name", r.name != nullptr ? r.name : range_kind_name(r.kind)},
                      {"cat", range_kind_name(r.kind)}, {"ph", "X"}, {"pid", kCpuPid},
                      {"tid", kCpuThreadTidBase + r.thread}, {"ts", t.us(r.start_ns)},
                      {"dur", TraceTime::dur_us(r.start_ns, r.end_ns)}, {"args", std::move(args)}});
  }
}

// ---- CUDA API slices; returns the API record of each correlation id (flow sources) ----
// A driver call made inside a runtime call shares its correlation id: the runtime
// record stands for both. Driver records alone (cuBLASLt launches through the
// driver API) get their own slice and carry the flow.
std::unordered_map<uint32_t, const GpuEvent*> api_slices(const TraceInput& in, const ApiTids& api_tid,
                                                         const TraceTime& t, json& events) {
  std::unordered_map<uint32_t, bool> runtime_corr;
  for (const auto& e : in.gpu_events)
    if (e.kind == GpuEventKind::runtime_api && e.correlation_id != 0) runtime_corr[e.correlation_id] = true;
  std::unordered_map<uint32_t, const GpuEvent*> api_by_corr;
  for (const auto& e : in.gpu_events) {
    if (!is_api(e)) continue;
    if (e.kind == GpuEventKind::driver_api && runtime_corr.count(e.correlation_id)) continue;
    events.push_back({{"name", e.name}, {"cat", "cuda_api"}, {"ph", "X"}, {"pid", kCpuPid},
                      {"tid", api_tid.at(e.thread_id)}, {"ts", t.us(e.start_ns)},
                      {"dur", TraceTime::dur_us(e.start_ns, e.end_ns)}, {"args", {{"correlation_id", e.correlation_id}}}});
    if (e.correlation_id != 0) api_by_corr.emplace(e.correlation_id, &e);
  }
  return api_by_corr;
}

// ---- GPU work, and one flow arrow per correlation id from its API call ----
void gpu_slices(const TraceInput& in, const ApiTids& api_tid,
                const std::unordered_map<uint32_t, const GpuEvent*>& api_by_corr, const TraceTime& t, json& events) {
  std::unordered_map<uint32_t, bool> flowed;
  for (const auto& e : in.gpu_events) {
    if (is_api(e)) continue;
    const int pid = kGpuPidBase + static_cast<int>(e.device_id);
    const int tid = gpu_tid(e);
    json args = {{"correlation_id", e.correlation_id}, {"stream", e.stream_id}};
    if (const auto c = categorize(e)) args["category"] = gpu_category_name(*c);
    if (e.kind != GpuEventKind::kernel) {
      args["bytes"] = e.bytes;
      if (e.end_ns > e.start_ns) args["GB/s"] = static_cast<double>(e.bytes) / static_cast<double>(e.end_ns - e.start_ns);
    }
    events.push_back({{"name", e.name}, {"cat", gpu_event_kind_name(e.kind)}, {"ph", "X"}, {"pid", pid},
                      {"tid", tid}, {"ts", t.us(e.start_ns)}, {"dur", TraceTime::dur_us(e.start_ns, e.end_ns)},
                      {"args", std::move(args)}});
    const auto api = api_by_corr.find(e.correlation_id);
    if (api == api_by_corr.end() || flowed[e.correlation_id]) continue;
    flowed[e.correlation_id] = true;
    const GpuEvent& a = *api->second;
    events.push_back({{"name", "launch"}, {"cat", "cuda_flow"}, {"ph", "s"}, {"id", e.correlation_id},
                      {"pid", kCpuPid}, {"tid", api_tid.at(a.thread_id)}, {"ts", t.us(a.start_ns)}});
    events.push_back({{"name", "launch"}, {"cat", "cuda_flow"}, {"ph", "f"}, {"bp", "e"}, {"id", e.correlation_id},
                      {"pid", pid}, {"tid", tid}, {"ts", t.us(e.start_ns)}});
  }
}

// ---- counters ----
void counter_events(const TraceInput& in, const TraceTime& t, json& events) {
  for (const auto& c : in.counters) {
    json args = json::object();
    for (const auto& [k, v] : c.values) args[k] = v;
    events.push_back({{"name", c.name}, {"ph", "C"}, {"pid", kCpuPid}, {"tid", 0}, {"ts", t.us(c.t_ns)},
                      {"args", std::move(args)}});
  }
}

}  // namespace

std::vector<CounterSample> memory_counter_samples(const MemoryCounters& m) {
  std::vector<CounterSample> out;
  out.reserve(m.timeline.size());
  for (const auto& s : m.timeline) {
    CounterSample c{"memory", s.t_ns, {}};
    c.values.emplace_back("arena_used_bytes", static_cast<double>(s.arena_used_bytes));
    if (s.device_used_bytes >= 0) c.values.emplace_back("device_used_bytes", static_cast<double>(s.device_used_bytes));
    c.values.emplace_back("host_pinned_bytes", static_cast<double>(s.host_pinned_bytes));
    out.push_back(std::move(c));
  }
  return out;
}

TraceInput make_trace_input(const Profiler& p, std::vector<GpuEvent> gpu_events) {
  TraceInput in;
  in.steps = p.tokens.samples;
  in.cpu_ranges = p.trace.ranges();
  in.cpu_thread_names = p.trace.thread_names();
  in.gpu_events = std::move(gpu_events);
  in.counters = memory_counter_samples(p.memory);
  return in;
}

json chrome_trace_json(const TraceInput& in) {
  const TraceTime t{trace_origin(in)};
  json events = json::array();
  cpu_tracks(in, events);
  const ApiTids api_tid = api_tracks(in, events);
  gpu_tracks(in, events);
  cpu_slices(in, t, events);
  const auto api_by_corr = api_slices(in, api_tid, t, events);
  gpu_slices(in, api_tid, api_by_corr, t, events);
  counter_events(in, t, events);

  json other = in.metadata.is_object() ? in.metadata : json::object();
  other["clock"] = "steady_clock ns; ts are us since origin";
  other["origin_ns"] = t.origin_ns;
  return json{{"traceEvents", std::move(events)}, {"displayTimeUnit", "ns"}, {"otherData", std::move(other)}};
}

void write_chrome_trace(const std::string& path, const TraceInput& in) {
  write_file_atomic(path, chrome_trace_json(in).dump() + "\n");
}

}  // namespace moebench::profiler
