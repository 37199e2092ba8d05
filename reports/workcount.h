// workcount.h: the CI gate's work counts (docs/GATE.md). The gate runs its suite
// under valgrind's callgrind with a pinned simulated cache; the engine dumps the
// costs of its timed steps (engine/generate.h, set_work_count_label). This file
// parses those dumps (callgrind's text format), sums them per case and phase into
// a work-counts file, and compares two such files: token hashes and expert
// counters exactly, estimated cost per step within a tolerance, and only when the
// setups that produce the counts (valgrind, compiler, build type, the CPU features
// valgrind presents, the runtime libraries, threads, cache geometry) are the same.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "reports/results.h"

namespace moebench::reports {

// Callgrind's events as the gate weighs them.
struct WorkCost {
  int64_t ir = 0;         // instructions executed (Ir)
  int64_t l1_misses = 0;  // I1mr + D1mr + D1mw
  int64_t ll_misses = 0;  // ILmr + DLmr + DLmw
  // Ir + 10 * L1 misses + 100 * LL misses: an estimate of cycles, as iai-callgrind
  // and CodSpeed weigh callgrind's counts.
  int64_t estimated() const { return ir + 10 * l1_misses + 100 * ll_misses; }
  WorkCost& operator+=(const WorkCost& o);
};

// One dump (part) of a callgrind.out file.
struct CallgrindDump {
  std::string creator;  // "callgrind-3.19.0"
  std::string trigger;  // "Client Request: moebench-gate fox decode 23"
  std::string cache;    // the simulated caches: "I1 cache: 32768 B, 64 B, 8-way associative; D1 ...; LL ..."
  WorkCost total;       // the dump's totals
  std::map<std::string, WorkCost> self;  // exclusive cost by function name
};

// Parses callgrind's text output (name compression, relative positions, call
// lines, omitted trailing zero costs). `source` names the file in errors. Fails
// when the file has no cache events (callgrind was run without --cache-sim=yes) or
// when the functions' costs do not add up to its totals.
CallgrindDump parse_callgrind(const std::string& text, const std::string& source);

// What changes the counts besides moebench's own code: recorded with every
// work-counts file; two files are compared only when these are equal.
struct WorkEnvironment {
  std::string valgrind;    // callgrind's creator line
  std::string compiler;    // "gcc 12.2.0"
  std::string build_type;  // CMAKE_BUILD_TYPE and whether CUDA is linked: "Release, CPU only"
  std::string cpu;         // vendor and features as valgrind's virtual CPU presents them
  std::string libraries;   // "glibc 2.36, libgomp.so.1.0.0, libm.so.6, libstdc++.so.6.0.30"
  int threads = 0;         // OpenMP threads the cases ran with
  std::string cache;       // simulated cache geometry
  bool operator==(const WorkEnvironment&) const = default;
};

// The environment of this process: compiler and build type of this binary, the
// CPU as this process sees it (under valgrind: valgrind's virtual CPU).
// valgrind, threads and cache are left for the caller.
WorkEnvironment this_process_environment();
nlohmann::json environment_to_json(const WorkEnvironment& e);
WorkEnvironment environment_from_json(const nlohmann::json& j, const std::string& source);

struct PhaseWork {
  int steps = 0;  // prefill: generations; decode: decode steps
  WorkCost total;
  std::map<std::string, WorkCost> functions;  // exclusive cost by function
  double estimated_per_step() const;
};

struct CaseWork {
  std::string name;
  std::string token_hash;
  ExpertCounters experts;  // hits, misses, loads, bytes_moved and usage are compared
  PhaseWork prefill, decode;
};

struct WorkCounts {
  std::string commit;
  WorkEnvironment env;
  std::vector<CaseWork> cases;  // in run order
};

// Sums the dumps whose trigger is "Client Request: moebench-gate CASE PHASE STEPS"
// per case and phase, and takes each case's token hash and expert counters from
// the results. Fails when a case of the results has no dumps (or the reverse), or
// when the dumps disagree on valgrind or cache geometry.
WorkCounts summarise_work(const Results& results, const std::vector<CallgrindDump>& dumps, WorkEnvironment env);

nlohmann::json workcounts_to_json(const WorkCounts& w);
WorkCounts workcounts_from_json(const nlohmann::json& j, const std::string& source);
WorkCounts load_workcounts(const std::string& path);
void save_workcounts(const std::string& path, const WorkCounts& w);  // atomic

struct GateVerdict {
  bool pass = true;
  std::vector<std::string> lines;  // one per case and metric, then the failures' details
};

// The gate's verdict of `now` against `base`: tokens and expert counters equal,
// estimated cost per prefill and per decode token at most `tolerance` (0.015 =
// 1.5%) above the baseline's. A failure names the case, the metric, the change and
// the `top` functions whose cost per step grew most. Fails with one line (saying
// how to re-record) when the environments differ, or the cases do.
GateVerdict compare_work(const WorkCounts& base, const WorkCounts& now, double tolerance, int top = 5);

}  // namespace moebench::reports
