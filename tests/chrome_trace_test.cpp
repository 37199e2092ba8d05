// chrome_trace_test.cpp: the Chrome trace writer produces traces that pass the
// trace-event format checker, and the checker rejects broken traces with a
// message naming the event index and the field.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "profiler/chrome_trace.h"
#include "profiler/trace_validate.h"
#include "test_util.h"

namespace chrome_trace_test {

using namespace moebench;
using namespace moebench::profiler;
using json = nlohmann::json;

namespace {

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + "\n";
  return s;
}

// A trace with every kind of event the writer makes.
TraceInput sample_input() {
  Profiler p;
  p.trace.set_enabled(true);
  p.trace.name_this_thread("engine");
  p.experts.configure(2, 4);
  const int64_t t0 = 1'000'000'000;
  p.trace.record(CpuRange{RangeKind::layer, nullptr, 0, -1, t0 + 1000, t0 + 9000, 0});
  p.trace.record(CpuRange{RangeKind::expert_compute, nullptr, 0, 3, t0 + 2000, t0 + 3500, 0});
  p.trace.record(CpuRange{RangeKind::other, "sample \"quoted\" <name>", -1, -1, t0 + 9000, t0 + 9500, 0});
  p.memory.note_arena(1 << 20);
  p.memory.note_host_pinned(4 << 20);
  p.record_token(Phase::prefill, 7, t0, t0 + 10'000);
  p.memory.note_arena(3 << 20);
  p.record_token(Phase::decode, 1, t0 + 10'000, t0 + 11'234'567);

  std::vector<GpuEvent> gpu;
  GpuEvent api{GpuEventKind::runtime_api, "cudaLaunchKernel", t0 + 2100, t0 + 2600, 0, 0, 42, 777, 0, CopyKind::none};
  GpuEvent k{GpuEventKind::kernel, "expert_gemv_bf16(float*)", t0 + 3000, t0 + 5000, 0, 7, 42, 0, 0, CopyKind::none};
  GpuEvent capi{GpuEventKind::runtime_api, "cudaMemcpyAsync", t0 + 1200, t0 + 1300, 0, 0, 43, 777, 0, CopyKind::none};
  GpuEvent c{GpuEventKind::memcpy, "memcpy H2D", t0 + 1500, t0 + 4500, 0, 13, 43, 0, 1 << 20, CopyKind::h2d};
  GpuEvent m{GpuEventKind::memset, "memset", t0 + 6000, t0 + 6100, 0, 7, 44, 0, 4096, CopyKind::none};
  gpu = {api, k, capi, c, m};
  TraceInput in = make_trace_input(p, gpu);
  in.metadata["model"] = "tiny";
  return in;
}

// Expects exactly one error, and that it mentions every needle.
void expect_one_error(const json& trace, std::initializer_list<const char*> needles) {
  const auto errs = validate_chrome_trace(trace);
  ASSERT_EQ(errs.size(), 1u) << joined(errs);
  for (const char* n : needles) EXPECT_NE(errs[0].find(n), std::string::npos) << "'" << n << "' not in: " << errs[0];
}

json wrap(json events) { return json{{"traceEvents", std::move(events)}}; }

json x_event(double ts = 1.0, double dur = 2.0) {
  return json{{"name", "k"}, {"ph", "X"}, {"pid", 1}, {"tid", 1}, {"ts", ts}, {"dur", dur}};
}

}  // namespace

TEST(ChromeTrace, WrittenTraceValidatesAndHasEveryTrack) {
  test::TempDir dir;
  const std::string path = dir.str("trace.json");
  write_chrome_trace(path, sample_input());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  const std::string text = test::read_file(path);
  const json t = json::parse(text);
  const auto errs = validate_chrome_trace(t);
  EXPECT_TRUE(errs.empty()) << joined(errs);

  int x = 0, s = 0, f = 0, counters = 0, gpu_x = 0;
  bool gpu_process = false, stream_named = false, copies_named = false, engine_named = false, api_named = false;
  for (const auto& e : t["traceEvents"]) {
    const std::string ph = e["ph"];
    if (ph == "X") ++x;
    if (ph == "X" && e["pid"] == 100) ++gpu_x;
    if (ph == "s") ++s;
    if (ph == "f") {
      ++f;
      EXPECT_EQ(e["bp"], "e");
    }
    if (ph == "C") ++counters;
    if (ph == "M" && e["name"] == "process_name" && e["args"]["name"] == "GPU 0") gpu_process = true;
    if (ph == "M" && e["name"] == "thread_name" && e["args"]["name"] == "stream 7") stream_named = true;
    if (ph == "M" && e["name"] == "thread_name" && e["args"]["name"] == "stream 13 copies") copies_named = true;
    // Kernels on their stream's track, copies and memsets on the copies track beside it.
    if (ph == "X" && e["cat"] == "kernel") {
      EXPECT_EQ(e["tid"], 7) << e.dump();
    }
    if (ph == "X" && e["cat"] == "memcpy") {
      EXPECT_EQ(e["tid"], 1'000'013) << e.dump();
    }
    if (ph == "X" && e["cat"] == "memset") {
      EXPECT_EQ(e["tid"], 1'000'007) << e.dump();
    }
    if (ph == "M" && e["name"] == "thread_name" && e["args"]["name"] == "engine") engine_named = true;
    if (ph == "M" && e["name"] == "thread_name" && e["args"]["name"] == "CUDA API (thread 777)") api_named = true;
  }
  EXPECT_EQ(x, 2 /*steps*/ + 3 /*cpu*/ + 2 /*api*/ + 3 /*gpu*/);
  EXPECT_EQ(gpu_x, 3);
  EXPECT_EQ(s, 2);  // kernel and memcpy each linked to their API call
  EXPECT_EQ(f, 2);
  EXPECT_EQ(counters, 2);
  EXPECT_TRUE(gpu_process && stream_named && copies_named && engine_named && api_named);
  // Microseconds with ns precision, from the earliest event (the prefill step).
  EXPECT_NE(text.find("\"dur\":11224.567"), std::string::npos);
  EXPECT_NE(text.find("\"ts\":1.5}"), std::string::npos);
  EXPECT_EQ(t["otherData"]["model"], "tiny");
}

TEST(ChromeTrace, DriverRecordsOnlyWhereNoRuntimeRecord) {
  const int64_t t0 = 1'000'000'000;
  // Correlation 50: a runtime launch with its driver call inside; 51: a driver-only
  // launch (as cuBLASLt does); each kernel gets one flow from the one API slice.
  std::vector<GpuEvent> gpu = {
      {GpuEventKind::runtime_api, "cudaLaunchKernel", t0, t0 + 500, 0, 0, 50, 9, 0, CopyKind::none},
      {GpuEventKind::driver_api, "cuLaunchKernel", t0 + 100, t0 + 400, 0, 0, 50, 9, 0, CopyKind::none},
      {GpuEventKind::kernel, "k1", t0 + 600, t0 + 900, 0, 7, 50, 0, 0, CopyKind::none},
      {GpuEventKind::driver_api, "cuLaunchKernelEx", t0 + 1000, t0 + 1200, 0, 0, 51, 9, 0, CopyKind::none},
      {GpuEventKind::kernel, "nvjet_k2", t0 + 1300, t0 + 1600, 0, 7, 51, 0, 0, CopyKind::none}};
  Profiler p;
  const json t = chrome_trace_json(make_trace_input(p, gpu));
  const auto errs = validate_chrome_trace(t);
  EXPECT_TRUE(errs.empty()) << joined(errs);
  std::vector<std::string> api;
  int s = 0;
  for (const auto& e : t["traceEvents"]) {
    if (e["ph"] == "X" && e["cat"] == "cuda_api") api.push_back(e["name"]);
    if (e["ph"] == "s") ++s;
  }
  EXPECT_EQ(api, (std::vector<std::string>{"cudaLaunchKernel", "cuLaunchKernelEx"}));
  EXPECT_EQ(s, 2);
}

TEST(ChromeTrace, FlowIdsAreCorrelationIds) {
  const json t = chrome_trace_json(sample_input());
  for (const auto& e : t["traceEvents"]) {
    if (e["ph"] != "s" && e["ph"] != "f") continue;
    EXPECT_TRUE(e["id"] == 42 || e["id"] == 43) << e.dump();
    EXPECT_EQ(e["cat"], "cuda_flow");
  }
}

TEST(ChromeTrace, EmptyTraceIsValid) {
  const json t = chrome_trace_json(TraceInput{});
  EXPECT_TRUE(validate_chrome_trace(t).empty()) << joined(validate_chrome_trace(t));
}

TEST(ChromeTrace, UnwritablePathIsAnErrorNamingIt) {
  try {
    write_chrome_trace("/nonexistent_dir_moebench/trace.json", TraceInput{});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent_dir_moebench/trace.json"), std::string::npos);
  }
}

TEST(TraceValidate, ArrayFormIsAccepted) {
  EXPECT_TRUE(validate_chrome_trace(json::array({x_event()})).empty());
}

TEST(TraceValidate, RejectsBadTopLevel) {
  expect_one_error(json(3), {"top level", "number"});
  expect_one_error(json::object(), {"traceEvents"});
  expect_one_error(json{{"traceEvents", 1}}, {"traceEvents", "array"});
  expect_one_error(json{{"traceEvents", json::array()}, {"displayTimeUnit", "s"}}, {"displayTimeUnit"});
}

TEST(TraceValidate, RejectsMissingOrWrongFields) {
  json e = x_event();
  e.erase("ph");
  expect_one_error(wrap({x_event(), e}), {"traceEvents[1]", "'ph'"});

  e = x_event();
  e["ph"] = "Q";
  expect_one_error(wrap({e}), {"traceEvents[0]", "'ph'", "Q"});

  e = x_event();
  e.erase("name");
  expect_one_error(wrap({e}), {"traceEvents[0]", "'name'"});

  e = x_event();
  e.erase("pid");
  expect_one_error(wrap({e}), {"traceEvents[0]", "'pid'"});

  e = x_event();
  e.erase("tid");
  expect_one_error(wrap({e}), {"traceEvents[0]", "'tid'"});

  e = x_event();
  e["ts"] = "12";
  expect_one_error(wrap({x_event(), x_event(), e}), {"traceEvents[2]", "'ts'", "string"});

  e = x_event();
  e["args"] = json::array();
  expect_one_error(wrap({e}), {"traceEvents[0]", "'args'"});

  expect_one_error(wrap({x_event(), 5}), {"traceEvents[1]", "object"});
}

TEST(TraceValidate, RejectsNegativeOrMissingDuration) {
  expect_one_error(wrap({x_event(), x_event(1.0, -5.0)}), {"traceEvents[1]", "'dur'", "-5"});
  json e = x_event();
  e.erase("dur");
  expect_one_error(wrap({e}), {"traceEvents[0]", "'dur'"});
  EXPECT_TRUE(validate_chrome_trace(wrap({x_event(1.0, 0.0)})).empty());
}

TEST(TraceValidate, BeginEndMustBalancePerThread) {
  const json b = {{"name", "a"}, {"ph", "B"}, {"pid", 1}, {"tid", 1}, {"ts", 1.0}};
  const json e = {{"ph", "E"}, {"pid", 1}, {"tid", 1}, {"ts", 2.0}};
  EXPECT_TRUE(validate_chrome_trace(wrap({b, e})).empty());
  expect_one_error(wrap({x_event(), b}), {"traceEvents[1]", "never closed"});
  expect_one_error(wrap({e}), {"traceEvents[0]", "no open B"});
  json e_other = e;
  e_other["tid"] = 2;  // closes nothing on thread 2; thread 1's B stays open
  EXPECT_EQ(validate_chrome_trace(wrap({b, e_other})).size(), 2u);
  json early = e;
  early["ts"] = 0.5;  // E before B in time
  EXPECT_EQ(validate_chrome_trace(wrap({b, early})).size(), 2u);
}

TEST(TraceValidate, FlowsMustPairOnIdAndCat) {
  const json s = {{"name", "launch"}, {"cat", "flow"}, {"ph", "s"}, {"id", 9}, {"pid", 1}, {"tid", 1}, {"ts", 1.0}};
  json f = {{"name", "launch"}, {"cat", "flow"}, {"ph", "f"}, {"bp", "e"}, {"id", 9}, {"pid", 2}, {"tid", 3}, {"ts", 4.0}};
  EXPECT_TRUE(validate_chrome_trace(wrap({s, f})).empty());
  expect_one_error(wrap({s}), {"traceEvents[0]", "no matching f"});
  json f_cat = f;
  f_cat["cat"] = "other";
  EXPECT_EQ(validate_chrome_trace(wrap({s, f_cat})).size(), 2u);  // s unmatched, f unmatched
  json f_id = f;
  f_id["id"] = "9";  // a string id is a different id than the number 9
  EXPECT_EQ(validate_chrome_trace(wrap({s, f_id})).size(), 2u);
  json no_cat = f;
  no_cat.erase("cat");
  auto errs = validate_chrome_trace(wrap({s, no_cat}));  // the f's field, then the s left unmatched
  ASSERT_EQ(errs.size(), 2u) << joined(errs);
  EXPECT_NE(errs[0].find("traceEvents[1] (ph f): missing field 'cat'"), std::string::npos) << errs[0];
  EXPECT_NE(errs[1].find("traceEvents[0] (ph s)"), std::string::npos) << errs[1];
  json no_id = s;
  no_id.erase("id");
  errs = validate_chrome_trace(wrap({no_id, f}));
  ASSERT_EQ(errs.size(), 2u) << joined(errs);
  EXPECT_NE(errs[0].find("traceEvents[0] (ph s): missing field 'id'"), std::string::npos) << errs[0];
  EXPECT_NE(errs[1].find("traceEvents[1] (ph f)"), std::string::npos) << errs[1];
  json before = f;
  before["ts"] = 0.5;
  expect_one_error(wrap({s, before}), {"traceEvents[1]", "'ts'", "before"});
  json bad_bp = f;
  bad_bp["bp"] = "x";
  expect_one_error(wrap({s, bad_bp}), {"traceEvents[1]", "'bp'"});
}

TEST(TraceValidate, MetadataNeedsArgs) {
  json m = {{"name", "thread_name"}, {"ph", "M"}, {"pid", 1}, {"tid", 1}, {"args", {{"name", "engine"}}}};
  EXPECT_TRUE(validate_chrome_trace(wrap({m})).empty());
  json p = {{"name", "process_name"}, {"ph", "M"}, {"pid", 1}, {"args", {{"name", "cpu"}}}};
  EXPECT_TRUE(validate_chrome_trace(wrap({p})).empty());  // process-level: no tid needed
  json bad = m;
  bad["args"] = json::object();
  expect_one_error(wrap({x_event(), bad}), {"traceEvents[1]", "'args.name'"});
  bad = m;
  bad.erase("args");
  expect_one_error(wrap({bad}), {"traceEvents[0]", "'args'"});
  bad = m;
  bad["name"] = "thread_colour";
  expect_one_error(wrap({bad}), {"traceEvents[0]", "'name'", "thread_colour"});
  json sort = {{"name", "thread_sort_index"}, {"ph", "M"}, {"pid", 1}, {"tid", 1}, {"args", {{"sort_index", "a"}}}};
  expect_one_error(wrap({sort}), {"traceEvents[0]", "'args.sort_index'"});
}

TEST(TraceValidate, CountersNeedNumericArgs) {
  json c = {{"name", "memory"}, {"ph", "C"}, {"pid", 1}, {"ts", 1.0}, {"args", {{"arena", 1.5}}}};
  EXPECT_TRUE(validate_chrome_trace(wrap({c})).empty());
  json bad = c;
  bad["args"]["arena"] = "big";
  expect_one_error(wrap({bad}), {"traceEvents[0]", "'args.arena'", "number"});
  bad = c;
  bad["args"] = json::object();
  expect_one_error(wrap({bad}), {"traceEvents[0]", "'args'"});
  bad = c;
  bad.erase("args");
  expect_one_error(wrap({bad}), {"traceEvents[0]", "'args'"});
}

TEST(TraceValidate, ReportsEveryProblem) {
  json bad1 = x_event(1.0, -1.0);
  json bad2 = x_event();
  bad2.erase("ts");
  const auto errs = validate_chrome_trace(wrap({bad1, x_event(), bad2}));
  ASSERT_EQ(errs.size(), 2u) << joined(errs);
  EXPECT_NE(errs[0].find("traceEvents[0]"), std::string::npos);
  EXPECT_NE(errs[1].find("traceEvents[2]"), std::string::npos);
}

}  // namespace chrome_trace_test
