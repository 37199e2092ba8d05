// suite_test.cpp: suite files — one-line errors naming the file and field, the
// shipped suites parse and expand, sweeps are ordered to minimise reloads, and
// the short/medium/long prompts have the token counts they claim.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <deque>
#include <filesystem>
#include <set>

#include "engine/embedded_tokenizer.h"
#include "common/error.h"
#include "engine/tokenizer.h"
#include "model/config.h"
#include "suites/suite.h"
#include "tests/test_util.h"

namespace suite_test {

using namespace moebench;
using namespace moebench::suites;

namespace {

std::string cpu(const std::string&) { return "cpu"; }

// The error message parse_suite gives for `text`, or "" when it parses.
std::string error_of(const std::string& text) {
  try {
    parse_suite(text, "suites/x.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_one_line_error(const std::string& text, const std::string& expected_start) {
  std::string e = error_of(text);
  EXPECT_EQ(e.rfind(expected_start, 0), 0u) << "got: " << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

const char* kGood = R"({"name": "x", "defaults": {"model": "tiny"},
  "cases": [{"name": "a", "prompt": "Hello there"}, {"name": "b", "prompt_tokens": 8, "new_tokens": 4}]})";

}  // namespace

TEST(Suite, ParsesAMinimalSuite) {
  Suite s = parse_suite(kGood, "suites/x.json");
  EXPECT_EQ(s.name, "x");
  ASSERT_EQ(s.cases.size(), 2u);
  EXPECT_EQ(s.cases[0].prompt, "Hello there");
  EXPECT_EQ(s.cases[1].prompt_tokens, 8);
  EXPECT_EQ(s.cases[1].new_tokens, 4);
  auto v = expand(s, {}, cpu);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].model, "tiny");
  EXPECT_EQ(v[0].new_tokens, 32);  // the default
  EXPECT_EQ(v[1].new_tokens, 4);
  EXPECT_EQ(v[0].warmup_runs, 0);  // engine default: warmup knob off
}

TEST(Suite, MalformedJsonIsOneLine) {
  expect_one_line_error("{\"name\": \"x\",\n \"cases\": [", "suites/x.json: invalid JSON at byte");
  expect_one_line_error("[1, 2]", "suites/x.json: the top level is [1,2], expected an object");
}

TEST(Suite, MissingFieldsNameThePath) {
  expect_one_line_error(R"({"cases": [{"name": "a", "prompt": "x"}]})", "suites/x.json: name is missing");
  expect_one_line_error(R"({"name": "x", "cases": [{"prompt": "x"}]})", "suites/x.json: cases[0].name is missing");
  expect_one_line_error(R"({"name": "x", "cases": [{"name": "a"}]})",
                        "suites/x.json: cases[0] needs exactly one of prompt (text) or prompt_tokens (a count)");
  expect_one_line_error(R"({"name": "x"})", "suites/x.json: the suite has no cases");
}

TEST(Suite, WrongTypesNameThePathAndTheValue) {
  expect_one_line_error(
      R"({"name": "x", "cases": [{"name": "a", "prompt": "x"}, {"name": "b", "prompt": "y", "new_tokens": "a"}]})",
      R"(suites/x.json: cases[1].new_tokens is "a", expected a positive integer)");
  expect_one_line_error(R"({"name": "x", "cases": [{"name": "a", "prompt_tokens": -3}]})",
                        "suites/x.json: cases[0].prompt_tokens is -3, expected a positive integer");
  expect_one_line_error(R"({"name": "x", "defaults": {"repetitions": 2.5}, "cases": [{"name": "a", "prompt": "x"}]})",
                        "suites/x.json: defaults.repetitions is 2.5, expected a positive integer");
  expect_one_line_error(R"({"name": "x", "defaults": {"model": 7}, "cases": [{"name": "a", "prompt": "x"}]})",
                        "suites/x.json: defaults.model is 7, expected a model name");
  expect_one_line_error(R"({"name": "x", "cases": {"name": "a"}})", "suites/x.json: cases is {\"name\":\"a\"}, expected a non-empty array");
  expect_one_line_error(R"({"name": "x", "cases": [{"name": "a", "prompt": "x", "settings": {"warmup": [1]}}]})",
                        "suites/x.json: cases[0].settings.warmup is [1], expected a string, number or boolean");
}

TEST(Suite, UnknownFieldsStagesAndSettingsAreRefused) {
  expect_one_line_error(R"({"name": "x", "cases": [{"name": "a", "promt": "x"}]})",
                        "suites/x.json: cases[0].promt is not a known field (expected one of: name, prompt,");
  expect_one_line_error(R"({"name": "x", "defaults": {"stage": "P9"}, "cases": [{"name": "a", "prompt": "x"}]})",
                        "suites/x.json: defaults.stage: unknown stage 'P9', expected one of baseline|P0|P1|P2");
  expect_one_line_error(R"({"name": "x", "cases": [{"name": "a", "prompt": "x", "settings": {"cache_slotz": 4}}]})",
                        "suites/x.json: cases[0].settings.cache_slotz: unknown setting 'cache_slotz'");
  expect_one_line_error(R"({"name": "x", "cases": [{"name": "a", "prompt": "x", "settings": {"dispatch": "magic"}}]})",
                        "suites/x.json: cases[0].settings.dispatch: setting dispatch=magic: expected one of serial|grouped|fused");
  expect_one_line_error(R"({"name": "x", "cases": [{"name": "a", "prompt": "x", "settings": {"routing": "dice"}}]})",
                        "suites/x.json: cases[0].settings.routing: setting routing=dice");
  expect_one_line_error(R"({"name": "x", "cases": [{"name": "a", "prompt": "x"}], "sweep": {"cache_slots": [16, "x"]}})",
                        "suites/x.json: sweep.cache_slots[1]: setting cache_slots=x: expected an integer >= 0");
  expect_one_line_error(R"({"name": "x", "cases": [{"name": "a", "prompt": "x"}], "sweep": {"stage": ["P0", "P7"]}})",
                        "suites/x.json: sweep.stage[1]: unknown stage 'P7'");
  expect_one_line_error(R"({"name": "x", "cases": [{"name": "a", "prompt": "x"}, {"name": "a", "prompt": "y"}]})",
                        "suites/x.json: case name a appears twice");
  expect_one_line_error(R"({"name": "x", "cases": [{"name": "a", "prompt": "x", "workload": "dance"}]})",
                        R"(suites/x.json: cases[0].workload is "dance", expected model or calibration)");
}

TEST(Suite, ModelPerBackendAndOverrides) {
  Suite s = parse_suite(R"({"name": "x", "defaults": {"model": {"cpu": "tiny", "cuda": "mixtral-8x7b"}, "stage": "P1",
    "settings": {"cache_slots": 8}}, "cases": [{"name": "a", "prompt": "x", "settings": {"cache_slots": 16}}]})",
                        "suites/x.json");
  auto v = expand(s, {}, cpu);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].model, "tiny");
  EXPECT_EQ(v[0].settings.stage, "P1");
  EXPECT_EQ(v[0].settings.cache_policy, "lfu-prefetch");  // from the P1 preset
  EXPECT_EQ(v[0].settings.cache_slots, 16);           // case beats defaults
  EXPECT_EQ(v[0].warmup_runs, 1);                     // P1 has warm-up
  auto cuda = [](const std::string&) { return std::string("cuda"); };
  EXPECT_EQ(expand(s, {}, +cuda)[0].model, "mixtral-8x7b");
  Overrides o;
  o.model = "micro";
  o.stage = "baseline";
  o.settings = {{"cache_slots", "3"}};
  o.repetitions = 7;
  auto w = expand(s, o, cpu);
  EXPECT_EQ(w[0].model, "micro");
  EXPECT_EQ(w[0].settings.stage, "baseline");
  EXPECT_EQ(w[0].settings.expert_tier, "disk");
  EXPECT_EQ(w[0].settings.cache_slots, 3);  // --set wins
  EXPECT_EQ(w[0].repetitions, 7);
  EXPECT_EQ(w[0].warmup_runs, 0);  // the baseline stage has no warm-up
  o.settings = {{"cache_slotz", "3"}};
  EXPECT_THROW(expand(s, o, cpu), Error);
}

// What expand says of suite s with overrides o: its error's line, or "" when it expands.
std::string error(const Suite& s, const Overrides& o) {
  try {
    expand(s, o, cpu);
  } catch (const Error& e) {
    return std::string(e.what());
  }
  return std::string();
}

// A bad synthetic model spec, a checkpoint folder without a config.json or a routing trace
// that does not open is one line from expand, naming where it came from, before any case
// runs (every case used to fail with it).
TEST(Suite, BadModelSpecsAndMissingTracesFailBeforeAnyCase) {
  Suite s = parse_suite(R"({"name": "x", "defaults": {"model": "synthetic:tiny:layers=0"},
    "cases": [{"name": "a", "prompt": "x"}, {"name": "b", "prompt": "y"}]})",
                        "suites/x.json");
  EXPECT_EQ(error(s, {}), "suites/x.json: defaults.model: model 'synthetic:tiny:layers=0': layers '0' must be a positive integer");
  Overrides o;
  o.model = "synthetic:tiny:dtype=int5";
  EXPECT_EQ(error(s, o).rfind("--model: model 'synthetic:tiny:dtype=int5': dtype=int5: expected one of bf16|fp8|int8|int4", 0),
            0u)
      << error(s, o);
  o.model = "synthetic:tiny:layers=1";
  EXPECT_EQ(error(s, o), "");
  test::TempDir d;
  o.model = d.str("ckpt");  // no such folder, then a folder without a config.json; its files are not read here
  EXPECT_EQ(error(s, o), "--model: " + d.str("ckpt") +
                             ": not a directory and not a preset (expected a checkpoint folder or one of the presets)");
  std::filesystem::create_directories(d.str("ckpt"));
  EXPECT_EQ(error(s, o), "--model: " + d.str("ckpt") + ": missing config.json (expected an HF checkpoint folder)");
  o.model = std::string(5000, 'x');  // a name too long for the file system: the same line, no exception of its own
  EXPECT_EQ(error(s, o).rfind("--model: " + o.model + ": not a directory and not a preset", 0), 0u);
  o.model = "org/" + std::string(300, 'x');
  EXPECT_EQ(error(s, o).rfind("--model: ", 0), 0u);
  EXPECT_EQ(error(s, o).find('\n'), std::string::npos);
  const char* had = std::getenv("HF_HUB_CACHE");
  const std::string before = had ? had : "";
  ::setenv("HF_HUB_CACHE", d.str().c_str(), 1);  // an empty cache
  o.model = "some-org/not-cached";  // shaped as ORG/NAME: looked up in the Hugging Face cache
  EXPECT_EQ(error(s, o).rfind("--model: model 'some-org/not-cached': not a folder or a preset, and not in the Hugging Face cache", 0),
            0u)
      << error(s, o);
  if (had) ::setenv("HF_HUB_CACHE", before.c_str(), 1);
  else ::unsetenv("HF_HUB_CACHE");
  o.model = d.str("ckpt");
  test::write_file(d.str("ckpt/config.json"), "{}");  // read as the load reads it: a bad field is this line, before any case
  EXPECT_EQ(error(s, o), "--model: " + d.str("ckpt/config.json") + ": missing field 'vocab_size' (expected an integer)");
  test::write_file(d.str("ckpt/config.json"), config_to_json(preset_config("tiny")).dump());
  EXPECT_EQ(error(s, o), "");  // its tensors are not read here
  const std::string missing = d.str("missing.json");
  Suite t = parse_suite(R"({"name": "x", "defaults": {"model": "tiny"},
    "cases": [{"name": "a", "prompt": "x", "settings": {"routing": "trace:)" + missing + R"("}}]})",
                        "suites/x.json");
  const std::string e = error(t, {});
  EXPECT_EQ(e.rfind("suites/x.json: case a: routing trace:" + missing + ": cannot open it (", 0), 0u) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  Overrides r;
  r.settings = {{"routing", "trace:" + missing}};
  EXPECT_EQ(error(s, r).rfind("suites/x.json: defaults.model", 0), 0u);  // the model is checked first
  EXPECT_EQ(error(parse_suite(kGood, "suites/x.json"), r).rfind("--routing: routing trace:" + missing + ": cannot open it (", 0),
            0u)
      << error(parse_suite(kGood, "suites/x.json"), r);
  test::write_file(missing, "{}");  // it opens: what it holds is checked when a case loads it
  EXPECT_EQ(error(t, {}), "");
}

TEST(Suite, CasesLongerThanTheModelTakesFailBeforeAnyCase) {
  const int positions = preset_config("tiny").max_position_embeddings;
  auto suite = [](int prompt_tokens, const std::string& settings) {
    return parse_suite(fmt::format(R"({{"name": "x", "defaults": {{"model": "synthetic:tiny", "new_tokens": 16{}}},
      "cases": [{{"name": "short", "prompt_tokens": 8}}, {{"name": "long", "prompt_tokens": {}}},
                {{"name": "text", "prompt": "a text prompt: its length is known once tokenised"}}]}})",
                                   settings, prompt_tokens),
                       "suites/x.json");
  };
  EXPECT_EQ(error(suite(1000, ""), {}), "");  // 1016 tokens: within max_model_len's default 1024
  EXPECT_EQ(error(suite(1009, ""), {}),
            "suites/x.json: case long: prompt_tokens 1009 + new_tokens 16 = 1025 exceed max_model_len 1024 (raise it: "
            "--max-model-len or the setting max_model_len)");
  EXPECT_EQ(error(suite(1009, R"(, "settings": {"max_model_len": "4096"})"), {}), "");  // fits once raised
  const int over = positions - 15;  // one past the model's positions with 16 new tokens
  EXPECT_EQ(error(suite(over, R"(, "settings": {"max_model_len": "100000"})"), {}),
            fmt::format("suites/x.json: case long: prompt_tokens {} + new_tokens 16 = {} exceed the model's "
                        "max_position_embeddings {} (synthetic:tiny)",
                        over, positions + 1, positions));
  Overrides o;  // the command line's settings count too
  o.settings = {{"max_model_len", "100000"}};
  EXPECT_EQ(error(suite(over - 1, ""), o), "");
  o.settings = {{"max_model_len", "64"}};
  EXPECT_EQ(error(suite(over - 1, ""), o).rfind("suites/x.json: case long: prompt_tokens", 0), 0u);
}

TEST(Suite, SweepExpansionIsOrderedToMinimiseReloads) {
  Suite s = parse_suite(R"({"name": "sw", "defaults": {"model": "tiny"},
    "cases": [{"name": "a", "prompt": "x"}, {"name": "b", "prompt": "y"}, {"name": "c", "prompt_tokens": 9},
              {"name": "ref", "workload": "calibration", "prompt_tokens": 4}],
    "sweep": {"cache_slots": [16, 32], "stage": ["baseline", "P0", "P1"], "batch_size": [1, 2]}})",
                        "suites/x.json");
  auto v = expand(s, {}, cpu);
  ASSERT_EQ(v.size(), 3u * 2 * 3 * 2 + 1);
  // 2 slot counts x 3 stages = 6 distinct engine configurations; the batch size and
  // the case do not force a reload.
  std::set<std::string> keys;
  for (const Instance& i : v)
    if (i.spec->workload == Workload::model) keys.insert(i.reload_key());
  EXPECT_EQ(keys.size(), 6u);
  EXPECT_EQ(count_reloads(v), 6);
  // Each key's instances are contiguous and keep case order inside.
  std::string last;
  std::set<std::string> done;
  for (const Instance& i : v) {
    if (i.spec->workload != Workload::model) continue;
    std::string k = i.reload_key();
    if (k != last) {
      EXPECT_TRUE(done.insert(k).second) << "key seen twice: " << k;
      last = k;
    }
  }
  // The disk-tier baseline instances form one block before the pinned P0/P1 ones.
  size_t first_pinned = v.size(), last_disk = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i].settings.expert_tier == "disk") last_disk = i;
    if (v[i].settings.expert_tier == "pinned") first_pinned = std::min(first_pinned, i);
  }
  EXPECT_LT(last_disk, first_pinned);
  // Case order inside the first group: a, a, b, b, c, c (batch sizes 1 and 2).
  EXPECT_EQ(v[0].case_name, "a[cache_slots=16,batch_size=1]");
  EXPECT_EQ(v[1].case_name, "a[cache_slots=16,batch_size=2]");
  EXPECT_EQ(v[2].case_name, "b[cache_slots=16,batch_size=1]");
  EXPECT_EQ(v[1].batch_size, 2);
  // The calibration case is not swept and loads nothing.
  int calib = 0;
  for (const Instance& i : v) calib += i.spec->workload == Workload::calibration;
  EXPECT_EQ(calib, 1);
  // Case-major order (the file's) would reload for nearly every instance.
  std::vector<Instance> naive = v;
  std::sort(naive.begin(), naive.end(), [](const Instance& x, const Instance& y) { return x.case_name < y.case_name; });
  EXPECT_GT(count_reloads(naive), 6);
  // --stage replaces the stage sweep.
  Overrides o;
  o.stage = "P2";
  auto w = expand(s, o, cpu);
  EXPECT_EQ(w.size(), 3u * 2 * 2 + 1);
  EXPECT_EQ(count_reloads(w), 2);
}

TEST(Suite, SetReplacesASweepOverItsKey) {
  const char* text = R"({"name": "q", "defaults": {"model": "tiny"}, "cases": [{"name": "a", "prompt_tokens": 4}],
    "sweep": {"expert_dtype": ["bf16", "int8", "int4"], "cache_slots": [8, 16]}})";
  Suite s = parse_suite(text, "suites/q.json");
  EXPECT_EQ(expand(s, {}, cpu).size(), 6u);
  Overrides o;
  o.settings = {{"expert_dtype", "int4"}};
  auto v = expand(s, o, cpu);
  // One instance per remaining point, each labelled with what it runs (no "bf16" label on an int4 run).
  ASSERT_EQ(v.size(), 2u);
  for (const Instance& i : v) {
    EXPECT_EQ(i.settings.expert_dtype, "int4");
    EXPECT_EQ(i.case_name.find("expert_dtype"), std::string::npos) << i.case_name;
  }
  EXPECT_EQ(v[0].case_name, "a[cache_slots=8]");
}

TEST(Suite, ColdEachCaseReloadsBeforeEveryCase) {
  const char* text = R"({"name": "c", "defaults": {"model": "tiny", "cold_each_case": COLD},
    "cases": [{"name": "a", "prompt": "x"}, {"name": "b", "prompt": "y"}, {"name": "c", "prompt_tokens": 9}],
    "sweep": {"stage": ["P0", "P1"]}})";
  std::deque<Suite> keep;  // instances point into their suite
  auto with = [&](const char* cold) {
    std::string t = text;
    t.replace(t.find("COLD"), 4, cold);
    keep.push_back(parse_suite(t, "suites/c.json"));
    return expand(keep.back(), {}, cpu);
  };
  EXPECT_EQ(count_reloads(with("false")), 2);  // one load per stage
  EXPECT_EQ(count_reloads(with("true")), 6);   // one per case and stage: a TTFT cold each
  try {
    with("\"yes\"");
    FAIL() << "a string cold_each_case was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("defaults.cold_each_case"), std::string::npos) << e.what();
  }
}

TEST(Suite, ShippedSuitesParseAndExpand) {
  setenv("MOEBENCH_SUITES_DIR", (test::source_dir() + "/suites").c_str(), 1);
  std::vector<std::string> names = suite_names();
  for (const char* n : {"short", "medium", "long", "stages", "default", "ci", "capacity", "budget"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  for (const std::string& n : names) {
    SCOPED_TRACE(n);
    Suite s = load_suite(n);
    EXPECT_FALSE(s.description.empty());
    auto v = expand(s, {}, cpu);
    EXPECT_FALSE(v.empty());
    for (const Instance& i : v)
      if (i.spec->workload == Workload::model) {  // the CPU default everywhere: tiny, or a family's tiny shape
        EXPECT_TRUE(i.model == "tiny" || i.model == "tiny-qwen3" || i.model == "tiny-olmoe") << i.model;
      }
  }
  Suite stages_suite = load_suite("stages");  // instances point into their suite
  auto stages = expand(stages_suite, {}, cpu);
  EXPECT_EQ(stages.size(), 4u * 6);
  EXPECT_EQ(count_reloads(stages), 4);
  EXPECT_EQ(stages.front().settings.stage, "baseline");
  EXPECT_EQ(stages.back().settings.stage, "P2");
  auto cuda = [](const std::string&) { return std::string("cuda"); };
  for (const std::string& n : names) {  // the GPU models too: their cases fit what the model and settings take
    SCOPED_TRACE(n);
    Suite s = load_suite(n);
    if (s.defaults.clock == "thread_cpu") continue;  // the CPU's work counts (the CI gate): CPU only
    EXPECT_NO_THROW(expand(s, {}, +cuda));
  }
  Suite default_suite = load_suite("default");
  EXPECT_EQ(expand(default_suite, {}, +cuda).front().model, "mixtral-8x7b:layers=8");
  EXPECT_THROW(load_suite("no-such-suite"), Error);
}

TEST(Suite, PromptLengthsMatchTheirNames) {
  setenv("MOEBENCH_SUITES_DIR", (test::source_dir() + "/suites").c_str(), 1);
  Tokenizer tok = Tokenizer::from_json_text(std::string(embedded_mistral_tokenizer_json()), "mistral");
  for (auto [name, target] : {std::pair{"short", 10}, {"medium", 50}, {"long", 200}}) {
    Suite s = load_suite(name);
    ASSERT_GE(s.cases.size(), 1u);
    for (const CaseSpec& c : s.cases) {
      ASSERT_FALSE(c.prompt.empty()) << name << "/" << c.name << " must be real text";
      int n = static_cast<int>(tok.encode(c.prompt, true).size());
      EXPECT_GE(n, target * 0.7) << name << "/" << c.name;
      EXPECT_LE(n, target * 1.3) << name << "/" << c.name;
      EXPECT_GT(c.new_tokens, 0) << name << "/" << c.name;
    }
  }
}

// OpenMP thread counts beyond what any CPU has crash the runtime (a stack overflow at
// 100000, an abort at 40000): the suite refuses them, the same on every machine.
TEST(Suite, ThreadCountIsBounded) {
  auto with_threads = [](const std::string& n) {
    return R"({"name": "x", "defaults": {"cpu_threads": )" + n + R"(}, "cases": [{"name": "a", "prompt": "x"}]})";
  };
  for (const char* n : {"100000", "40000", "1025", "-1"})
    expect_one_line_error(with_threads(n), std::string("suites/x.json: defaults.cpu_threads is ") + n +
                                               ", expected an integer in [0, 1024] (0: OpenMP's default)");
  EXPECT_EQ(error_of(with_threads("1024")), "");
  EXPECT_EQ(error_of(with_threads("0")), "");
}

}  // namespace suite_test
