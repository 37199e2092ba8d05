// run_header.h: what every results-writing command records about the run before
// it runs anything, so `run`, `bench`, `profile-check` and the dashboard's live
// runner say it alike: the run (tool version, build commit and type, UTC start
// time, command line), the host and the device (suites/machine.h), plus the one
// UTC timestamp helper and the one typing of a knob's text in a results file.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "reports/results.h"

namespace moebench::suites {

// The current UTC time in strftime `format` (default ISO 8601, "2026-11-30T00:20:00Z").
std::string utc_now(const char* format = "%Y-%m-%dT%H:%M:%SZ");

// This process's command line (/proc/self/cmdline), or `fallback` when it cannot be read.
std::vector<std::string> own_command_line(std::vector<std::string> fallback = {});

// A Results with run, host and device filled: the device the engine computes on for
// `backend` ("cpu" | "cuda"), its bandwidths measured when `measure_bandwidth`
// (before any model takes the memory).
reports::Results run_header(const std::vector<std::string>& command_line, const std::string& backend,
                            bool measure_bandwidth);

// A knob's text as a results-file JSON scalar: "true"/"false" booleans, integers
// (no sign, fewer than 18 digits) numbers, everything else (decimals, sizes like
// 22GiB, names) the text as given.
nlohmann::json knob_json(const std::string& value);

}  // namespace moebench::suites
