// results_test.cpp: the results schema (round trip, strict validation with
// field paths), the stats primitive and the atomic file writer.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/error.h"
#include "profiler/stats.h"
#include "common/atomic_file.h"
#include "reports/results.h"
#include "tests/results_fixture.h"

namespace results_test {

using namespace moebench;
using namespace moebench::reports;
using moebench::test::make_results;
using moebench::test::TempDir;
using nlohmann::json;

namespace {

// The message of the Error that parsing `j` as "r.json" throws ("" if none).
std::string error_of(const json& j) {
  try {
    results_from_json(j, "r.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

}  // namespace

// ---------------------------------------------------------------- stats

TEST(Stats, SummarizeKnownValues) {
  std::vector<int64_t> v = {5, 1, 4, 2, 3};
  profiler::Stats s = profiler::summarize(v);
  EXPECT_EQ(s.n, 5);
  EXPECT_EQ(s.min_ns, 1);
  EXPECT_EQ(s.max_ns, 5);
  EXPECT_EQ(s.sum_ns, 15);
  EXPECT_DOUBLE_EQ(s.mean_ns, 3);
  EXPECT_DOUBLE_EQ(s.median_ns, 3);
  EXPECT_DOUBLE_EQ(s.p50_ns, 3);
  EXPECT_DOUBLE_EQ(s.p90_ns, 4.6);  // numpy.percentile([1..5], 90)
  EXPECT_DOUBLE_EQ(s.p99_ns, 4.96);
  EXPECT_NEAR(s.stddev_ns, std::sqrt(2.5), 1e-12);
}

TEST(Stats, EvenCountMedianAndEmpty) {
  std::vector<int64_t> v = {10, 40, 20, 30};
  EXPECT_DOUBLE_EQ(profiler::summarize(v).median_ns, 25);
  profiler::Stats e = profiler::summarize({});
  EXPECT_EQ(e.n, 0);
  EXPECT_EQ(e.median_ns, 0);
  EXPECT_DOUBLE_EQ(profiler::median({3.0, 1.0, 2.0, 10.0}), 2.5);
}

TEST(Stats, Formatting) {
  EXPECT_EQ(profiler::format_ns(812), "812 ns");
  EXPECT_EQ(profiler::format_ns(12'400), "12.4 us");
  EXPECT_EQ(profiler::format_ns(3'214'000), "3.21 ms");
  EXPECT_EQ(profiler::format_ns(1.52e9), "1.52 s");
  EXPECT_EQ(profiler::format_ns(125e9), "2 min 05 s");
  EXPECT_EQ(profiler::format_bytes(512), "512 B");
  EXPECT_EQ(profiler::format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(profiler::format_bytes(22.0 * (1LL << 30)), "22.0 GiB");
  EXPECT_EQ(profiler::format_rate(45.6, "tok/s"), "45.6 tok/s");
  EXPECT_EQ(profiler::format_rate(1234.5, "tok/s"), "1.23 k tok/s");
  EXPECT_EQ(profiler::format_gbps(24.13), "24.1 GB/s");
  EXPECT_EQ(profiler::format_gbps(3350), "3.35 TB/s");
  EXPECT_EQ(profiler::format_percent(0.8734), "87.3%");
  EXPECT_EQ(profiler::format_delta(1.042), "+4.2%");
  EXPECT_EQ(profiler::format_ns(NAN), "n/a");
}

// ---------------------------------------------------------------- schema

TEST(Results, RoundTripThroughText) {
  Results r = make_results();
  r.cases[1].status = CaseStatus::failed;
  r.cases[1].error = "CUDA out of memory in expert slot 3";
  r.cases[1].samples.pop_back();
  r.cases[1].bound.reset();
  r.cases[1].memory.allocation_count.reset();
  r.cases[0].samples[1].ttft_cold_ns.reset();
  r.device.hbm_read_gbps = 4450;
  r.device.hbm_copy_gbps = 3950;
  r.cases[0].memory.host_peak_rss_bytes = 123LL << 20;
  r.cases[0].memory.engine_host_bytes = 45LL << 20;
  r.cases[0].bound->time_model = "overlap";
  r.cases[0].bound->bandwidth_gbps = {{"h2d", 55.5}, {"hbm", 4450}};
  r.cases[0].other_tokens_repetitions = {2};
  std::string text = results_to_string(r);
  Results back = results_from_json(json::parse(text), "r.json");
  EXPECT_EQ(to_json(back), to_json(r));
  EXPECT_EQ(back.device.hbm_read_gbps, 4450);
  EXPECT_EQ(back.cases[0].memory.host_peak_rss_bytes, 123LL << 20);
  EXPECT_EQ(back.cases[0].bound->time_model, "overlap");
  EXPECT_EQ(back.cases[0].bound->bandwidth_gbps.at("h2d"), 55.5);
  EXPECT_EQ(results_to_string(back), text);
  EXPECT_EQ(back.device.kind, DeviceKind::cuda);
  EXPECT_EQ(back.cases[0].samples[0].phase[0], Phase::prefill);
  EXPECT_EQ(back.cases[0].samples[0].ttft_cold_ns, r.cases[0].samples[0].ttft_cold_ns);
  EXPECT_FALSE(back.cases[0].samples[1].ttft_cold_ns.has_value());
  EXPECT_EQ(back.cases[1].status, CaseStatus::failed);
  EXPECT_FALSE(back.cases[1].bound.has_value());
  EXPECT_EQ(back.cases[0].settings.knobs.at("gpu_slots"), 42);
  EXPECT_EQ(back.cases[0].experts.usage, r.cases[0].experts.usage);
  EXPECT_EQ(back.cases[2].output_token_hash, "9f86d081884c7d65");
  EXPECT_EQ(back.cases[0].other_tokens_repetitions, std::vector<int>{2});
  EXPECT_TRUE(back.cases[2].other_tokens_repetitions.empty());
}

// Which repetitions gave other tokens than the first: absent in older files (none recorded),
// and only measured repetitions after the first can be named.
TEST(Results, OtherTokensRepetitionsAreOptionalAndChecked) {
  json j = to_json(make_results());
  j["cases"][0].erase("other_tokens_repetitions");
  EXPECT_TRUE(results_from_json(j, "r.json").cases[0].other_tokens_repetitions.empty());
  j["cases"][0]["other_tokens_repetitions"] = {0};
  EXPECT_EQ(error_of(j), "r.json: cases[0].other_tokens_repetitions[0] is 0, expected a measured repetition after "
                         "the first (1 to repetitions - 1)");
  j["cases"][0]["other_tokens_repetitions"] = {3};  // the case has 3 repetitions: 0, 1, 2
  EXPECT_NE(error_of(j).find("other_tokens_repetitions[0] is 3"), std::string::npos);
  j["cases"][0]["other_tokens_repetitions"] = "1";
  EXPECT_NE(error_of(j).find("other_tokens_repetitions is \"1\", expected an array of repetition indexes"),
            std::string::npos);
}

// The distinct experts a batched decode step ran (bench, one GPU): absent in older files (not
// counted; null reads the same), round-trips, and a count must be a number of at least 0.
TEST(Results, DecodeExpertsPerStepIsOptionalAndChecked) {
  Results r = make_results();
  r.cases[0].experts.decode_experts_per_step = 121.5;
  json j = to_json(r);
  EXPECT_EQ(results_from_json(j, "r.json").cases[0].experts.decode_experts_per_step, 121.5);
  j["cases"][0]["experts"].erase("decode_experts_per_step");
  EXPECT_EQ(results_from_json(j, "r.json").cases[0].experts.decode_experts_per_step, 0);
  j["cases"][0]["experts"]["decode_experts_per_step"] = -3;
  EXPECT_EQ(error_of(j), "r.json: cases[0].experts.decode_experts_per_step is -3, expected a count of experts, at least 0");
  j["cases"][0]["experts"]["decode_experts_per_step"] = "240";
  EXPECT_EQ(error_of(j), "r.json: cases[0].experts.decode_experts_per_step is \"240\", expected a number (or null)");
  j["cases"][0]["experts"]["decode_experts_per_step"] = nullptr;  // null, like absent: not counted
  EXPECT_EQ(results_from_json(j, "r.json").cases[0].experts.decode_experts_per_step, 0);
}

TEST(Results, NumberArraysStayOnOneLine) {
  std::string text = results_to_string(make_results());
  EXPECT_NE(text.find("\"latency_ns\": [20000000, "), std::string::npos);
  EXPECT_NE(text.find("[10, 20, 30, 40]"), std::string::npos);
}

TEST(Results, NonFiniteAggregatesRoundTripAsNull) {
  Results r = make_results();
  r.cases[0].aggregates.decode_tok_s = NAN;
  json j = to_json(r);
  EXPECT_TRUE(j["cases"][0]["aggregates"]["decode_tok_s"].is_null());
  Results back = results_from_json(j, "r.json");
  EXPECT_TRUE(std::isnan(back.cases[0].aggregates.decode_tok_s));
}

TEST(Results, AggregatesFromSamples) {
  Case c = moebench::test::make_case("s", "c", "P0", 1, 4, 1000);
  c.samples[0].latency_ns = {50'000, 1000, 2000, 3000, 4000};
  c.samples[0].ttft_warm_ns = 51'000;
  Aggregates a = compute_aggregates(c);
  EXPECT_DOUBLE_EQ(a.prefill_tok_s, 50 * 1e9 / 50'000);
  EXPECT_DOUBLE_EQ(a.decode_tok_s, 4 * 1e9 / 10'000);
  EXPECT_DOUBLE_EQ(a.tpot_ns, 2500);
  EXPECT_DOUBLE_EQ(a.itl_p50_ns, 2500);
  EXPECT_DOUBLE_EQ(a.ttft_warm_ns, 51'000);
  EXPECT_DOUBLE_EQ(a.hit_rate, 130.0 / 200.0);
  EXPECT_DOUBLE_EQ(a.mean_expert_load_ns, 100'000);
}

TEST(Results, WrongTypeNamesTheFieldPath) {
  json j = to_json(make_results());
  j["cases"][2]["samples"][0]["latency_ns"][5] = "x";
  EXPECT_EQ(error_of(j), "r.json: cases[2].samples[0].latency_ns[5] is \"x\", expected a non-negative integer");
  j = to_json(make_results());
  j["device"]["sm_count"] = 1.5;
  EXPECT_EQ(error_of(j), "r.json: device.sm_count is 1.5, expected a non-negative integer");
  j = to_json(make_results());
  j["cases"][0]["experts"]["usage"][1] = "many";
  EXPECT_EQ(error_of(j), "r.json: cases[0].experts.usage[1] is \"many\", expected an array of integers");
  j = to_json(make_results());
  j["run"]["command_line"] = {"moebench", 3};
  EXPECT_EQ(error_of(j), "r.json: run.command_line[1] is 3, expected a string");
  // Hit rates are fractions (null: n/a); the dashboard's fuzz target drew a series of 9e15.
  j = to_json(make_results());
  ASSERT_GE(j["cases"][0]["hit_rate"]["overall"].size(), 2u);
  j["cases"][0]["hit_rate"]["overall"][1] = 9007199254740993.0;
  EXPECT_EQ(error_of(j), "r.json: cases[0].hit_rate.overall[1] is 9.007199254740992e+15, expected a rate in [0, 1] (or null)");
  j = to_json(make_results());
  ASSERT_FALSE(j["cases"][0]["hit_rate"]["per_layer"].empty());
  j["cases"][0]["hit_rate"]["per_layer"][0][0] = -0.5;
  EXPECT_EQ(error_of(j), "r.json: cases[0].hit_rate.per_layer[0][0] is -0.5, expected a rate in [0, 1] (or null)");
  j = to_json(make_results());
  j["cases"][0]["aggregates"]["hit_rate"] = 1.25;
  EXPECT_EQ(error_of(j), "r.json: cases[0].aggregates.hit_rate is 1.25, expected a rate in [0, 1] (or null)");
  j = to_json(make_results());
  j["cases"][0]["hit_rate"]["overall"][0] = nullptr;  // n/a is a rate
  EXPECT_EQ(error_of(j), "");
}

TEST(Results, MissingFieldNamesTheFieldPath) {
  json j = to_json(make_results());
  j["cases"][1]["samples"][0].erase("ttft_warm_ns");
  EXPECT_EQ(error_of(j), "r.json: cases[1].samples[0].ttft_warm_ns is missing (expected a non-negative integer)");
  j = to_json(make_results());
  j.erase("device");
  EXPECT_EQ(error_of(j), "r.json: device is missing (expected an object)");
  j = to_json(make_results());
  j["cases"][0]["aggregates"].erase("hit_rate");
  EXPECT_EQ(error_of(j), "r.json: cases[0].aggregates.hit_rate is missing (expected a rate in [0, 1])");
}

TEST(Results, BadSchemaVersion) {
  json j = to_json(make_results());
  j["schema_version"] = 2;
  EXPECT_NE(error_of(j).find("r.json: schema_version is 2, expected 1"), std::string::npos);
  j["schema_version"] = "1";
  EXPECT_EQ(error_of(j), "r.json: schema_version is \"1\", expected the integer 1");
  j.erase("schema_version");
  EXPECT_EQ(error_of(j), "r.json: schema_version is missing (expected an integer)");
  // A version-2 file whose layout changed reports the version, not a moved field.
  j = json{{"schema_version", 2}, {"something", "else"}};
  EXPECT_NE(error_of(j).find("schema_version is 2"), std::string::npos);
}

TEST(Results, InconsistentAndUnknownFields) {
  json j = to_json(make_results());
  j["cases"][0]["samples"][1]["phase"].erase(0);
  EXPECT_NE(error_of(j).find("cases[0].samples[1].phase has 32 entries, expected 33"), std::string::npos);
  j = to_json(make_results());
  j["cases"][0]["samples"][0]["phase"][3] = "generate";
  EXPECT_EQ(error_of(j), "r.json: cases[0].samples[0].phase[3] is \"generate\", expected \"prefill\" or \"decode\"");
  j = to_json(make_results());
  j["cases"][1]["samples"].erase(0);
  EXPECT_NE(error_of(j).find("cases[1].samples has 2 entries, expected 3"), std::string::npos);
  j = to_json(make_results());
  j["cases"][0]["settings"]["knobs"]["slots"] = {1, 2};
  EXPECT_NE(error_of(j).find("cases[0].settings.knobs.slots is an array, expected a string, number, bool or null"),
            std::string::npos);
  j = to_json(make_results());
  j["cases"][2]["experts"]["hitz"] = 3;
  EXPECT_EQ(error_of(j), "r.json: cases[2].experts.hitz is not a field of results schema_version 1");
  j = to_json(make_results());
  j["cases"][0]["status"] = "failed";
  EXPECT_EQ(error_of(j), "r.json: cases[0].error is \"\", expected the reason the case failed");
  j = to_json(make_results());
  j["cases"][0]["experts"]["loads_per_layer"] = {1, 2, 3};
  EXPECT_NE(error_of(j).find("cases[0].experts.loads_per_layer has 3 entries, expected 2"), std::string::npos);
  j = to_json(make_results());
  j["device"]["kind"] = "tpu";
  EXPECT_EQ(error_of(j), "r.json: device.kind is \"tpu\", expected \"cpu\" or \"cuda\"");
  j = to_json(make_results());
  j["cases"] = json::object();
  EXPECT_EQ(error_of(j), "r.json: cases is an object, expected an array of cases");
  EXPECT_EQ(error_of(json::array()), "r.json: the top level is an array, expected an object");
}

TEST(Results, ErrorsAreOneLine) {
  json j = to_json(make_results());
  j["model"]["config"] = std::string(200, 'x');
  std::string e = error_of(j);
  EXPECT_EQ(e.rfind("r.json: model.config is \"xxx", 0), 0u) << e;
  EXPECT_NE(e.find("...,"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  EXPECT_LT(e.size(), 120u);
}

TEST(Results, TruncatedAndMissingFiles) {
  TempDir d;
  std::string text = results_to_string(make_results());
  std::string p = d.str("r.json");
  write_text(p, text.substr(0, text.size() / 2));
  try {
    load_results(p);
    FAIL() << "truncated file accepted";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind(p + ": invalid JSON at byte ", 0), 0u) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos);
  }
  write_text(p, "");
  EXPECT_THROW(load_results(p), Error);
  try {
    load_results(d.str("absent.json"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("absent.json: cannot read"), std::string::npos);
  }
}

TEST(Results, FileIsValidAfterEveryFinishedCase) {
  TempDir d;
  std::string p = d.str("run.json");
  Results full = make_results();
  Results r = full;
  r.cases.clear();
  save_results(p, r);
  EXPECT_EQ(load_results(p).cases.size(), 0u);
  for (size_t i = 0; i < full.cases.size(); ++i) {
    r.cases.push_back(full.cases[i]);
    save_results(p, r);
    EXPECT_EQ(load_results(p).cases.size(), i + 1);
  }
  // Nothing but the results file is left in the directory.
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(d.path)) ++n;
  EXPECT_EQ(n, 1u);
}

// ---------------------------------------------------------------- atomic writes

TEST(AtomicFile, ReplacesContentAndLeavesNoTemporaries) {
  TempDir d;
  std::string p = d.str("a.txt");
  write_file_atomic(p, "first");
  write_file_atomic(p, "second");
  EXPECT_EQ(read_file(p), "second");
  EXPECT_EQ(std::filesystem::status(p).permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::others_read);
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(d.path)) ++n;
  EXPECT_EQ(n, 1u);
}

TEST(AtomicFile, FailedRenameKeepsTargetAndCleansUp) {
  TempDir d;
  // The target is a non-empty directory: rename() must fail, nothing may be left behind.
  std::filesystem::create_directory(d.path / "target");
  write_text(d.str("target/inside"), "keep");
  try {
    write_file_atomic(d.str("target"), "new");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("target: cannot rename"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_file(d.str("target/inside")), "keep");
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(d.path)) ++n;
  EXPECT_EQ(n, 1u);
  EXPECT_THROW(write_file_atomic(d.str("no/such/dir/x.json"), "x"), Error);
}

TEST(AtomicFile, ReadOnlyDirectoryKeepsOldFile) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  TempDir d;
  std::string p = d.str("r.json");
  save_results(p, make_results());
  std::filesystem::permissions(d.path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
  EXPECT_THROW(write_file_atomic(p, "garbage"), Error);
  std::filesystem::permissions(d.path, std::filesystem::perms::owner_all);
  EXPECT_EQ(load_results(p).cases.size(), 3u);
}

// A writer killed in the middle of writing (here by exceeding RLIMIT_FSIZE,
// which delivers SIGXFSZ during write()) leaves the previous file intact.
TEST(AtomicFile, WriterKilledMidWriteLeavesOldFileIntact) {
  TempDir d;
  std::string p = d.str("r.json");
  Results r = make_results();
  save_results(p, r);
  std::string before = read_file(p);
  std::string big(4 << 20, 'x');
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    struct rlimit lim {};
    lim.rlim_cur = lim.rlim_max = 64 * 1024;
    ::setrlimit(RLIMIT_FSIZE, &lim);
    std::signal(SIGXFSZ, SIG_DFL);
    try {
      write_file_atomic(p, big);
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the writer was expected to die mid-write";
  EXPECT_EQ(WTERMSIG(status), SIGXFSZ);
  EXPECT_EQ(read_file(p), before);
  EXPECT_EQ(load_results(p).cases.size(), 3u);
}

// Mutation fuzzing (fixed seed): replace, delete or retype random values of a
// valid file. The reader must either accept the result or throw Error with a
// one-line message; never another exception, never a crash.
TEST(Results, MutatedFilesGiveErrorsNotCrashes) {
  Results small = make_results();
  small.cases.resize(1);
  small.cases[0] = moebench::test::make_case("s", "c", "P0", 2, 4);
  json valid = to_json(small);
  std::vector<json::json_pointer> leaves;
  json flat = valid.flatten();
  for (auto it = flat.begin(); it != flat.end(); ++it) leaves.emplace_back(it.key());
  const json replacements[] = {json(nullptr), json("x"), json(-1), json(1.5), json::array(), json::object(),
                               json(true), json(int64_t{1} << 40), json::array({1, "a"})};
  std::mt19937 rng(1234);
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    json j = valid;
    int n_mut = 1 + static_cast<int>(rng() % 3);
    for (int m = 0; m < n_mut; ++m) {
      json::json_pointer p = leaves[rng() % leaves.size()];
      // Sometimes mutate the parent container instead of the leaf.
      if (rng() % 4 == 0 && !p.empty()) p = p.parent_pointer();
      if (!j.contains(p)) continue;
      if (rng() % 5 == 0 && !p.empty()) {
        json& parent = j[p.parent_pointer()];
        if (parent.is_object()) parent.erase(p.back());
        else if (parent.is_array() && !parent.empty()) parent.erase(parent.size() - 1);
      } else {
        j[p] = replacements[rng() % std::size(replacements)];
      }
    }
    try {
      results_from_json(j, "f.json");
      ++accepted;
    } catch (const Error& e) {
      ++rejected;
      std::string m = e.what();
      ASSERT_EQ(m.rfind("f.json: ", 0), 0u) << m;
      ASSERT_EQ(m.find('\n'), std::string::npos) << m;
    } catch (const std::exception& e) {
      FAIL() << "non-Error exception: " << e.what() << " for " << j.dump().substr(0, 400);
    }
  }
  EXPECT_GT(rejected, 2000);
  EXPECT_GT(accepted, 0);  // e.g. a knob changed to another scalar
}

}  // namespace results_test
