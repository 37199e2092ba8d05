// cli_flags_test.cpp: flags a subcommand lists in --help are honoured and recorded:
// --version, the presets every --preset help names, the stage presets --stage and `info` list,
// bench's one-line refusal of a bad model spec or a missing routing trace, the number checks' messages, a model
// name too long for the file system,
// --threads, --format (csv, jsonl, compare's json), bench's --stage / --routing (which it once accepted and
// dropped, recording stage "custom" and routing "model"), and --stage / --routing / --set recorded by every command
// that writes results (run, bench, profile-check).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <vector>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/build_info.h"
#include "model/config.h"
#include "reports/results.h"
#include "variants/stages.h"
#include "test_util.h"

namespace cli_flags_test {

using namespace moebench;
using test::TempDir;

TEST(CliFlags, VersionNamesVersionAndCommit) {
  TempDir d;
  test::CliRun r = test::run_moebench({"--version"}, d);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find(std::string("moebench ") + kVersion), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(build_commit()), std::string::npos) << r.out;
}

TEST(CliFlags, BenchRecordsStageRoutingAndSet) {
  TempDir d;
  test::CliRun r = test::run_moebench({"bench", "--backend", "cpu", "--preset", "tiny", "--stage", "P1", "--routing",
                                       "uniform", "--set", "cache_slots=20", "--threads", "1", "--prompt-tokens",
                                       "8", "--new-tokens", "4", "--out", d.str("b.json")},
                                      d);
  ASSERT_EQ(r.code, 0) << r.err;
  reports::Results b = reports::load_results(d.str("b.json"));
  ASSERT_FALSE(b.cases.empty());
  for (const reports::Case& c : b.cases) {
    EXPECT_EQ(c.settings.stage, "P1");
    EXPECT_EQ(c.settings.knobs.at("routing"), "uniform");
    EXPECT_EQ(c.settings.knobs.at("cache_slots"), 20);
  }
}

// Every results-writing command, on the CPU backend with the tiny preset, takes
// --stage, --routing and --set and records them in its results file: each case's
// stage, its routing knob and routing source, and the knob set. No verdict rests on
// speed: the runs are short and only the recorded settings are checked.
namespace {
void expect_case_records(const nlohmann::json& c, const std::string& what) {
  EXPECT_EQ(c.at("settings").at("stage"), "P1") << what;
  EXPECT_EQ(c.at("settings").at("knobs").at("routing"), "uniform") << what;
  EXPECT_EQ(c.at("routing_source"), "uniform") << what;
  EXPECT_EQ(c.at("settings").at("knobs").at("cache_slots"), 20) << what;
}
}  // namespace

TEST(CliFlags, ResultsWritingCommandsRecordStageRoutingAndSet) {
  TempDir d;
  const std::vector<std::string> common = {"--backend", "cpu", "--stage", "P1", "--routing", "uniform",
                                           "--set", "cache_slots=20", "--threads", "1"};
  auto with = [&](std::vector<std::string> head, const std::vector<std::string>& tail) {
    head.insert(head.end(), common.begin(), common.end());
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };
  const std::vector<std::vector<std::string>> commands = {
      with({"run", "--suite", test::source_dir() + "/suites/short.json", "--model", "tiny"},
           {"--repetitions", "1", "--out", d.str("run.json")}),
      with({"bench", "--preset", "tiny"}, {"--prompt-tokens", "8", "--new-tokens", "4", "--repetitions", "1", "--out",
                                           d.str("bench.json")}),
      with({"profile-check", "--preset", "tiny"},
           {"--prompt-tokens", "8", "--new-tokens", "4", "--rounds", "2", "--out", d.str("profile-check.json")}),
  };
  for (const auto& args : commands) {
    test::CliRun r = test::run_moebench(args, d);
    const std::string file = d.str(args[0] + ".json");
    ASSERT_EQ(r.code, 0) << args[0] << ": " << r.err;
    nlohmann::json j = nlohmann::json::parse(test::read_file(file));
    if (args[0] == "profile-check") j = j.at("results");  // its own layout, the runner's results inside
    ASSERT_TRUE(j.contains("cases") && !j.at("cases").empty()) << args[0];
    for (const auto& c : j.at("cases")) expect_case_records(c, args[0]);
    // The flags themselves are in the recorded command line.
    const auto cl = j.at("run").at("command_line").get<std::vector<std::string>>();
    for (const char* flag : {"--stage", "--routing", "--set", "cache_slots=20"})
      EXPECT_NE(std::find(cl.begin(), cl.end(), flag), cl.end()) << args[0] << " " << flag;
  }
}

TEST(CliFlags, ThreadsIsCheckedAndTakenByRun) {
  TempDir d;
  test::CliRun bad = test::run_moebench({"generate", "--preset", "tiny", "--backend", "cpu", "--threads", "0",
                                         "--prompt", "a", "--max-new-tokens", "1"},
                                        d);
  EXPECT_EQ(bad.code, 2) << bad.err;  // a usage error, before any work
  test::CliRun ok = test::run_moebench({"run", "--suite", test::source_dir() + "/suites/short.json", "--backend", "cpu",
                                        "--model", "tiny", "--threads", "1", "--repetitions", "1", "--out",
                                        d.str("r.json")},
                                       d);
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(reports::load_results(d.str("r.json")).cases.size(), 2u);
}

TEST(CliFlags, FormatsCsvJsonlAndCompareJson) {
  TempDir d;
  test::CliRun run = test::run_moebench({"run", "--suite", test::source_dir() + "/suites/short.json", "--backend", "cpu",
                                         "--model", "tiny", "--repetitions", "2", "--format", "csv", "--out",
                                         d.str("r.json")},
                                        d);
  ASSERT_EQ(run.code, 0) << run.err;
  // A header of stable keys, then one row per case.
  ASSERT_EQ(run.out.rfind("suite,case,stage,status,", 0), 0u) << run.out;
  EXPECT_NE(run.out.find("decode_tok_s"), std::string::npos) << run.out;
  EXPECT_EQ(std::count(run.out.begin(), run.out.end(), '\n'), 3) << run.out;
  std::vector<std::string> keys;  // every key once
  std::stringstream header(run.out.substr(0, run.out.find('\n')));
  for (std::string k; std::getline(header, k, ',');) keys.push_back(k);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(std::adjacent_find(keys.begin(), keys.end()), keys.end()) << run.out;

  test::CliRun jl = test::run_moebench({"report", d.str("r.json"), "--format", "jsonl"}, d);
  ASSERT_EQ(jl.code, 0) << jl.err;
  size_t lines = 0;
  for (size_t at = 0, nl; (nl = jl.out.find('\n', at)) != std::string::npos; at = nl + 1, ++lines) {
    nlohmann::json row = nlohmann::json::parse(jl.out.substr(at, nl - at));
    EXPECT_EQ(row.at("suite"), "short");
    EXPECT_TRUE(row.at("decode_tok_s").is_number()) << row.dump();
  }
  EXPECT_EQ(lines, 2u);

  test::CliRun cmp = test::run_moebench({"compare", d.str("r.json"), d.str("r.json"), "--format", "json"}, d);
  ASSERT_EQ(cmp.code, 0) << cmp.err;
  nlohmann::json j = nlohmann::json::parse(cmp.out);
  EXPECT_TRUE(j.at("pass").get<bool>());
  ASSERT_FALSE(j.at("rows").empty());
  for (const auto& row : j.at("rows")) {
    EXPECT_TRUE(row.contains("metric") && row.contains("verdict") && row.contains("base") && row.contains("new"));
    EXPECT_FALSE(row.at("failure").get<bool>());
  }

  test::CliRun bad = test::run_moebench({"report", d.str("r.json"), "--format", "xml"}, d);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("md|csv|json|jsonl|html"), std::string::npos) << bad.err;
}

// bench's -o/--format: the formats run and report print (one row per case in csv),
// and a bad format is one line before any work.
TEST(CliFlags, BenchFormats) {
  TempDir d;
  test::CliRun csv = test::run_moebench({"bench", "--backend", "cpu", "--preset", "tiny", "--threads", "1",
                                         "--prompt-tokens", "4,6", "--new-tokens", "3", "--repetitions", "1", "-o", "csv",
                                         "--out", d.str("b.json")},
                                        d);
  ASSERT_EQ(csv.code, 0) << csv.err;
  ASSERT_EQ(csv.out.rfind("suite,case,stage,status,", 0), 0u) << csv.out;
  // header + two prompt lengths, each single-sequence (b1) and through the batched forward (batch1)
  EXPECT_EQ(std::count(csv.out.begin(), csv.out.end(), '\n'), 5) << csv.out;
  EXPECT_NE(csv.out.find("bench,b1_p4_n3,"), std::string::npos) << csv.out;
  EXPECT_NE(csv.out.find("bench,b1_p6_n3,"), std::string::npos) << csv.out;
  EXPECT_NE(csv.out.find("bench,batch1_p6_n3,"), std::string::npos) << csv.out;

  test::CliRun bad = test::run_moebench({"bench", "--backend", "cpu", "--preset", "tiny", "-o", "xml", "--out",
                                         d.str("x.json")},
                                        d);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("md|csv|json|jsonl|html"), std::string::npos) << bad.err;
  EXPECT_EQ(bad.out, "");
  EXPECT_FALSE(std::filesystem::exists(d.str("x.json")));
}

// Every command that takes --preset names every preset in its help (the lists once
// named four of them, written by hand), and --model names the dtype suffix.
TEST(CliFlags, PresetHelpNamesEveryPreset) {
  TempDir d;
  for (const char* cmd : {"generate", "bench", "make-model", "info"}) {
    test::CliRun r = test::run_moebench({cmd, "--help"}, d);
    ASSERT_EQ(r.code, 0) << cmd << ": " << r.err;
    for (const std::string& n : preset_names()) EXPECT_NE(r.out.find(n), std::string::npos) << cmd << ": " << n;
  }
  test::CliRun r = test::run_moebench({"generate", "--help"}, d);
  EXPECT_NE(r.out.find("synthetic:PRESET[:layers=N][:dtype=F]"), std::string::npos) << r.out;
}

// --stage's help names every stage preset, and `info` lists each with what it sets (the
// help once named four of ten, and nothing listed the quantised, CPU and hybrid ones).
TEST(CliFlags, StagePresetsAreListed) {
  TempDir d;
  test::CliRun help = test::run_moebench({"generate", "--help"}, d), info = test::run_moebench({"info"}, d);
  ASSERT_EQ(help.code, 0) << help.err;
  ASSERT_EQ(info.code, 0) << info.err;
  EXPECT_NE(help.out.find(stage_list()), std::string::npos) << help.out;
  for (const StagePreset& s : stage_presets())
    EXPECT_NE(info.out.find(fmt::format("  {:<24} {}\n", s.name, s.description)), std::string::npos) << s.name;
}

// bench's model and routing flags are checked before any case runs: a bad synthetic spec
// or a routing trace that does not open is one line naming the flag, exit 1, nothing written.
TEST(CliFlags, BenchRefusesABadModelOrTraceBeforeRunning) {
  TempDir d;
  const std::vector<std::vector<std::string>> bad = {
      {"--model", "synthetic:tiny:layers=0"},
      {"--preset", "tiny", "--routing", "trace:" + d.str("missing.json")},
      {"--preset", "tiny", "--set", "routing=trace:" + d.str("missing.json")},
      {"--preset", "tiny", "--prompt-tokens", "8,2000", "--new-tokens", "64"}};  // tiny takes 2048 positions
  const std::vector<std::string> want = {
      "error: --model: model 'synthetic:tiny:layers=0': layers '0' must be a positive integer\n",
      "error: --routing: routing trace:" + d.str("missing.json") + ": cannot open it (No such file or directory)\n",
      "error: --routing: routing trace:" + d.str("missing.json") + ": cannot open it (No such file or directory)\n",
      "error: bench: case b1_p2000_n64: prompt_tokens 2000 + new_tokens 64 = 2064 exceed the model's "
      "max_position_embeddings 2048 (synthetic:tiny)\n"};
  for (size_t i = 0; i < bad.size(); ++i) {
    std::vector<std::string> args = {"bench", "--backend", "cpu", "--out", d.str("b.json")};
    args.insert(args.end(), bad[i].begin(), bad[i].end());
    test::CliRun r = test::run_moebench(args, d);
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(r.err, want[i]);
    EXPECT_FALSE(std::filesystem::exists(d.str("b.json")));
  }
}

// Number options refuse a value out of range or not a number in one short line (CLI11's
// own checks spelled their range out to DBL_MAX in over 300 digits), exit 2.
TEST(CliFlags, NumberChecksAreOneShortLine) {
  TempDir d;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"bench", "--preset", "tiny", "--new-tokens", "0"}, "--new-tokens: expected a number > 0, got 0"},
      {{"bench", "--preset", "tiny", "--prompt-tokens", "10,0"}, "--prompt-tokens: expected a number > 0, got 0"},
      {{"bench", "--preset", "tiny", "--repetitions", "x"}, "--repetitions: expected a number, got 'x'"},
      {{"generate", "--preset", "tiny", "--prompt", "hi", "--temperature", "-1"},
       "--temperature: expected a number >= 0, got -1"}};
  for (const auto& [args, want] : cases) {
    test::CliRun r = test::run_moebench(args, d);
    EXPECT_EQ(r.code, 2) << want;
    EXPECT_EQ(r.err.substr(0, r.err.find('\n')), want);
    EXPECT_LT(r.err.size(), 200u) << r.err;
  }
}

// A model path the file system refuses (a name too long for it) is one line, exit 1; it
// used to end the process in an uncaught std::filesystem_error.
TEST(CliFlags, AModelNameTooLongIsOneLine) {
  TempDir d;
  const std::string m(5000, 'x');
  for (const std::vector<std::string>& args : {std::vector<std::string>{"generate", "--model", m, "--prompt", "hi", "--backend", "cpu"},
                                               std::vector<std::string>{"info", "--model", m}}) {
    test::CliRun r = test::run_moebench(args, d);
    EXPECT_EQ(r.code, 1) << args[0];
    EXPECT_EQ(r.err, "error: " + m + ": not a directory and not a preset (expected a checkpoint folder or one of the presets)\n")
        << args[0];
  }
}

// generate names the limit a sequence exceeds (max_model_len, or the model's
// max_position_embeddings when --max-model-len asks for more) and prints nothing of the
// prompt before the error.
TEST(CliFlags, GenerateNamesTheLimitThatBinds) {
  TempDir d;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--max-new-tokens", "1022"}, "error: prompt (3 tokens) + max-new-tokens (1022) = 1025 exceeds max_model_len 1024\n"},
      {{"--max-model-len", "4096", "--max-new-tokens", "2046"},
       "error: prompt (3 tokens) + max-new-tokens (2046) = 2049 exceeds the model's max_position_embeddings 2048\n"}};
  for (const auto& [extra, want] : cases) {
    std::vector<std::string> args = {"generate", "--preset", "tiny", "--backend", "cpu", "--prompt", "hello"};
    args.insert(args.end(), extra.begin(), extra.end());
    test::CliRun r = test::run_moebench(args, d);
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, want);
    EXPECT_EQ(r.out, "");
  }
}

}  // namespace cli_flags_test
