// routing_test.cpp: routing traces (round trip, malformed files), the routing
// source registry, and the mixtral-locality calibration against published Mixtral routing statistics.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/config.h"
#include "variants/routing.h"
#include "variants/routing_driver.h"
#include "variants/routing_trace.h"

namespace routing_test {

using namespace moebench;

namespace {

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("moebench_routing_test_" + name)).string();
}

RoutingTrace make(const std::string& routing, int layers, int tokens, uint64_t seed, int per_step = 1,
                  bool weights = false) {
  RoutingParams p{layers, 8, 2, seed, ""};
  auto src = make_routing_source(parse_routing_spec(routing), p);
  return generate_trace(*src, p, tokens / per_step, per_step, weights);
}

// Expects `text` to fail to load with a message containing every needle.
void expect_load_error(const std::string& text, std::initializer_list<std::string> needles) {
  try {
    trace_from_json_text(text, "bad.json");
    FAIL() << "no error for: " << text.substr(0, 200);
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("bad.json"), std::string::npos) << m;
    for (const std::string& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "missing '" << n << "' in: " << m;
  }
}

}  // namespace

TEST(RoutingTrace, RoundTripsThroughFile) {
  RoutingTrace t = make("mixtral-locality", 4, 12, 3, 3, true);
  std::string path = tmp_path("rt.json");
  save_trace(t, path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  RoutingTrace u = load_trace(path);
  EXPECT_EQ(u.n_layers, 4);
  EXPECT_EQ(u.n_experts, 8);
  EXPECT_EQ(u.top_k, 2);
  EXPECT_EQ(u.source, t.source);
  ASSERT_EQ(u.n_steps(), 4);
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ(u.steps[s].n_tokens, 3);
    EXPECT_EQ(u.steps[s].ids, t.steps[s].ids);
    ASSERT_EQ(u.steps[s].weights.size(), t.steps[s].weights.size());
    for (size_t i = 0; i < u.steps[s].weights.size(); ++i) EXPECT_NEAR(u.steps[s].weights[i], t.steps[s].weights[i], 1e-6);
  }
  std::filesystem::remove(path);
}

TEST(RoutingTrace, MalformedFilesNameFileFieldAndExpectation) {
  RoutingTrace t = make("uniform", 2, 2, 1);
  nlohmann::json good = nlohmann::json::parse(trace_to_json_text(t));
  expect_load_error("{not json", {"not valid JSON"});
  expect_load_error("[1,2]", {"expected a JSON object"});
  auto j = good;
  j["format"] = "other";
  expect_load_error(j.dump(), {"'format'", "moebench-routing-trace"});
  j = good;
  j["version"] = 99;
  expect_load_error(j.dump(), {"'version'", "99", "expected 1"});
  j = good;
  j.erase("layers");
  expect_load_error(j.dump(), {"missing field 'layers'"});
  j = good;
  j["top_k"] = 9;
  expect_load_error(j.dump(), {"'top_k'", "9"});
  j = good;
  j["steps"][1]["ids"].push_back(0);
  expect_load_error(j.dump(), {"steps[1].ids", "has 5 values, expected 4"});
  j = good;
  j["steps"][0]["ids"][3] = 8;
  expect_load_error(j.dump(), {"steps[0]", "ids[3]", "expected an expert id in [0, 8)"});
  j = good;
  j["steps"][0]["ids"][0] = "x";
  expect_load_error(j.dump(), {"steps[0]", "ids[0]", "expected an integer"});
  j = good;
  j["steps"][0]["ids"][1] = j["steps"][0]["ids"][0];
  expect_load_error(j.dump(), {"steps[0].ids[1]", "distinct"});
  j = good;
  j["steps"][0].erase("n_tokens");
  expect_load_error(j.dump(), {"steps[0]", "'n_tokens'"});
  j = good;
  j["steps"][0]["weights"] = {0.5};
  expect_load_error(j.dump(), {"steps[0].weights", "expected 4"});
  // Shapes beyond a model's: a table per (layer, expert) would not fit in memory.
  j = good;
  j["layers"] = 1025;
  expect_load_error(j.dump(), {"'layers'", "1025", "[1, 1024]"});
  j = good;
  j["experts"] = 257;
  expect_load_error(j.dump(), {"'experts'", "257", "[1, 256]"});
  // A weight a float cannot hold (converting it would be undefined).
  j = good;
  j["steps"][0]["weights"] = {0.5, 1e39, 0.5, 0.5};
  expect_load_error(j.dump(), {"steps[0].weights[1]", "a float holds"});
}

// The top-k of a token are checked for repeats in one pass: the widest top-k a trace
// may have (every one of kMaxExperts experts) loads, and a repeat at its end is named.
TEST(RoutingTrace, WidestTopKLoadsAndItsRepeatsAreNamed) {
  RoutingTrace t;
  t.n_layers = 2;
  t.n_experts = kMaxExperts;
  t.top_k = kMaxExperts;
  RoutingStep& s = t.add_step(3, false);
  for (size_t i = 0; i < s.ids.size(); ++i) s.ids[i] = static_cast<int32_t>((i * 7 + i / kMaxExperts) % kMaxExperts);
  const std::string text = trace_to_json_text(t);
  EXPECT_EQ(trace_from_json_text(text, "wide.json").steps[0].ids, s.ids);
  nlohmann::json j = nlohmann::json::parse(text);
  j["steps"][0]["ids"][2 * kMaxExperts - 1] = j["steps"][0]["ids"][kMaxExperts].get<int>();
  expect_load_error(j.dump(), {"steps[0].ids[" + std::to_string(2 * kMaxExperts - 1) + "]", "repeats expert",
                               "distinct"});
}

TEST(RoutingTrace, MissingFileNamesIt) {
  try {
    load_trace("/nonexistent/trace.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/trace.json"), std::string::npos);
  }
}

TEST(RoutingSources, RegistryAndSpecs) {
  EXPECT_EQ(parse_routing_spec("uniform").kind, RoutingKind::uniform);
  EXPECT_EQ(parse_routing_spec("mixtral-locality").kind, RoutingKind::mixtral_locality);
  EXPECT_EQ(parse_routing_spec("model").kind, RoutingKind::model);
  RoutingSpec t = parse_routing_spec("trace:a/b.json");
  EXPECT_EQ(t.kind, RoutingKind::trace);
  EXPECT_EQ(t.trace_path, "a/b.json");
  EXPECT_THROW(parse_routing_spec("zipf"), Error);
  EXPECT_THROW(parse_routing_spec("trace:"), Error);
  for (const auto& s : routing_sources()) {
    EXPECT_FALSE(s.name.empty());
    EXPECT_FALSE(s.description.empty());
    EXPECT_EQ(s.make == nullptr, s.kind == RoutingKind::model) << s.name;
  }
  RoutingParams p{2, 8, 2, 1, ""};
  EXPECT_THROW(make_routing_source(parse_routing_spec("model"), p), Error);
}

TEST(RoutingSources, SeededAndDeterministic) {
  for (const char* r : {"uniform", "mixtral-locality"}) {
    RoutingTrace a = make(r, 4, 50, 7), b = make(r, 4, 50, 7), c = make(r, 4, 50, 8);
    for (int s = 0; s < a.n_steps(); ++s) EXPECT_EQ(a.steps[s].ids, b.steps[s].ids) << r;
    bool differs = false;
    for (int s = 0; s < a.n_steps(); ++s) differs |= a.steps[s].ids != c.steps[s].ids;
    EXPECT_TRUE(differs) << r;
    validate_trace(a, r);  // distinct ids per token, in range
  }
}

TEST(RoutingSources, LocalityAsksStepsInOrder) {
  RoutingParams p{2, 8, 2, 1, ""};
  auto src = make_routing_source(parse_routing_spec("mixtral-locality"), p);
  std::vector<int32_t> ids(2);
  src->route(0, 0, 1, ids, {});
  EXPECT_THROW(src->route(2, 0, 1, ids, {}), Error);
  src->route(0, 1, 1, ids, {});  // layers are independent streams
}

TEST(RoutingSources, TraceReplayReproducesAndChecksShape) {
  RoutingTrace t = make("mixtral-locality", 3, 10, 2);
  std::string path = tmp_path("replay.json");
  save_trace(t, path);
  RoutingParams p{3, 8, 2, 1, ""};
  auto src = make_routing_source(parse_routing_spec("trace:" + path), p);
  RoutingTrace u = generate_trace(*src, p, 10);
  for (int s = 0; s < 10; ++s) EXPECT_EQ(u.steps[s].ids, t.steps[s].ids);
  std::vector<int32_t> ids(2);
  EXPECT_THROW(src->route(10, 0, 1, ids, {}), Error);  // past the end
  RoutingParams wrong{4, 8, 2, 1, ""};
  try {
    make_routing_source(parse_routing_spec("trace:" + path), wrong);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos);
    EXPECT_NE(m.find("'layers'"), std::string::npos) << m;
  }
  std::filesystem::remove(path);
}

// Mixtral paper Table 5 (ranges over 8 Pile subsets) and the
// MMLU popularity skew. 20000 tokens keep the sampling error of a share near 0.3 %,
// well inside the narrowest range (layer 0 first-choice: 13.6-14.9 %).
TEST(RoutingSources, MixtralLocalityLandsInPublishedRanges) {
  struct Range {
    int layer;
    double rep_lo, rep_hi, ovl_lo, ovl_hi;
  };
  const Range ranges[] = {{0, 13.6, 14.9, 44.9, 49.9}, {15, 23.6, 28.4, 61.6, 67.0}, {31, 19.7, 26.3, 44.5, 53.6}};
  for (uint64_t seed : {1, 2, 3}) {
    RoutingTrace t = make("mixtral-locality", 32, 20000, seed);
    auto st = measure_routing(t);
    for (const Range& r : ranges) {
      const auto& s = st[r.layer];
      SCOPED_TRACE(testing::Message() << "seed " << seed << " layer " << r.layer);
      EXPECT_GE(100 * s.first_repeat, r.rep_lo);
      EXPECT_LE(100 * s.first_repeat, r.rep_hi);
      EXPECT_GE(100 * s.topk_overlap, r.ovl_lo);
      EXPECT_LE(100 * s.topk_overlap, r.ovl_hi);
      EXPECT_GE(100 * s.top_share, 13.5);
      EXPECT_LE(100 * s.top_share, 23.7);
      EXPECT_LE(100 * s.least_share, 6.0);  // published: "can be near 1 %"
    }
    // Locality peaks mid-depth.
    EXPECT_GT(st[15].first_repeat, st[0].first_repeat);
    EXPECT_GT(st[15].topk_overlap, st[31].topk_overlap);
  }
}

TEST(RoutingSources, LocalityInterpolatesOverDepthForAnyLayerCount) {
  EXPECT_DOUBLE_EQ(mixtral_locality_params(0).first_repeat, 0.1425);
  EXPECT_DOUBLE_EQ(mixtral_locality_params(15.0 / 31.0).first_repeat, 0.26);
  EXPECT_DOUBLE_EQ(mixtral_locality_params(1).first_repeat, 0.225);
  // A 4-layer model: layer 0 and 3 are the ends, the repeat rate in between is higher.
  RoutingTrace t = make("mixtral-locality", 4, 20000, 5);
  auto st = measure_routing(t);
  EXPECT_NEAR(st[0].first_repeat, 0.1425, 0.008);
  EXPECT_NEAR(st[3].first_repeat, 0.225, 0.008);
  EXPECT_GT(st[1].first_repeat, 0.2);
}

TEST(RoutingSources, UniformMatchesRandomBaseline) {
  RoutingTrace t = make("uniform", 4, 20000, 1);
  for (const auto& s : measure_routing(t)) {
    EXPECT_NEAR(s.first_repeat, 0.125, 0.008);
    EXPECT_NEAR(s.topk_overlap, 1.0 - 15.0 / 28.0, 0.012);  // 46.4 %
    EXPECT_NEAR(s.top_share, 0.125, 0.01);
  }
}

// Warm-ups run on another stream: other draws, the same model (per-layer popularity),
// and stream 0 is what it always was.
TEST(RoutingSources, StreamsDrawOtherChoicesFromTheSamePopularity) {
  for (const char* r : {"uniform", "mixtral-locality"}) {
    RoutingParams p0{4, 8, 2, 7, ""};
    RoutingParams p1 = p0;
    p1.stream = 1;
    const int tokens = 20000;
    auto s0 = make_routing_source(parse_routing_spec(r), p0);
    auto s1 = make_routing_source(parse_routing_spec(r), p1);
    RoutingTrace a = generate_trace(*s0, p0, tokens, 1, false);
    RoutingTrace b = generate_trace(*s1, p1, tokens, 1, false);
    RoutingTrace same = make(r, 4, tokens, 7);
    int differ = 0;
    for (int s = 0; s < a.n_steps(); ++s) {
      EXPECT_EQ(a.steps[s].ids, same.steps[s].ids) << r;
      differ += a.steps[s].ids != b.steps[s].ids;
    }
    EXPECT_GT(differ, tokens / 2) << r;
    // Per-layer expert shares agree within sampling noise (20000 tokens x 2 choices).
    for (int l = 0; l < 4; ++l) {
      std::vector<double> ca(8), cb(8);
      for (int s = 0; s < a.n_steps(); ++s)
        for (int j = 0; j < 2; ++j) {
          ca[a.steps[s].ids[l * 2 + j]] += 1.0 / (2 * tokens);
          cb[b.steps[s].ids[l * 2 + j]] += 1.0 / (2 * tokens);
        }
      for (int e = 0; e < 8; ++e) EXPECT_NEAR(ca[e], cb[e], 0.02) << r << " layer " << l << " expert " << e;
    }
  }
}

TEST(RoutingDriver, WarmUpStreamDiffersAndStreamZeroComesBack) {
  RoutingParams p{4, 8, 2, 3, ""};
  RoutingDriver d(parse_routing_spec("mixtral-locality"), p, 1.0);
  auto run = [&](uint64_t stream) {
    d.set_stream(stream);
    d.reset();
    std::vector<int32_t> all, ids(2);
    for (int step = 0; step < 64; ++step)
      for (int l = 0; l < 4; ++l) {
        d.route(step, l, 1, ids);
        all.insert(all.end(), ids.begin(), ids.end());
      }
    return all;
  };
  std::vector<int32_t> measured = run(0), warm = run(1), again = run(0);
  EXPECT_NE(measured, warm);
  EXPECT_EQ(measured, again);
}

}  // namespace routing_test
