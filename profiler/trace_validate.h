// trace_validate.h: checks a parsed trace against the Chrome trace-event
// format (the "Trace Event Format" document that chrome://tracing and
// Perfetto's JSON importer follow). Used by tests on every trace we write and
// usable on any trace a user hands us.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moebench::profiler {

// Returns one message per problem, empty when the trace is valid. Messages
// name the event by index and the field, e.g.
//   "traceEvents[12] (ph X): field 'dur' is -5, must be >= 0".
// Rules: the trace is an array of events or an object with a "traceEvents"
// array; every event is an object with a known "ph"; "name" (string) except on
// E; "pid" and "tid" (integers or strings; C and process-level M need no tid);
// "ts" (number) except on M; X has "dur" >= 0; B/E balance per (pid, tid) in
// time order; flow s/t/f carry "id" and "cat", every s has an f with the same
// (cat, id) and vice versa, f not before its s; M names a known metadata kind
// and its args ("name" for *_name, "sort_index" for *_sort_index); C has an
// args object of numbers; "args", where present, is an object.
std::vector<std::string> validate_chrome_trace(const nlohmann::json& trace);

}  // namespace moebench::profiler
