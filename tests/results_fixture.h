// results_fixture.h: synthetic Results built in code for the reports tests
// (no hand-written results files in the repository).
#pragma once
#include <string>

#include "reports/results.h"
#include "test_util.h"

namespace moebench::test {

// One case of suite `suite` with `reps` repetitions of 1 prefill step and
// `decode_steps` decode steps; timings are deterministic with a little jitter.
inline reports::Case make_case(const std::string& suite, const std::string& name, const std::string& stage,
                               int reps = 3, int decode_steps = 32, int64_t decode_ns = 1'000'000) {
  using namespace reports;
  Case c;
  c.suite = suite;
  c.name = name;
  c.settings.stage = stage;
  c.settings.knobs = {{"cache_policy", "lru"}, {"gpu_slots", 42}, {"pinned", true}, {"budget_gib", 22.5}};
  c.routing_source = "mixtral-locality";
  c.prompt_tokens = 50;
  c.new_tokens = decode_steps + 1;
  c.repetitions = reps;
  c.warmup = 1;
  for (int r = 0; r < reps; ++r) {
    Repetition rep;
    rep.latency_ns.push_back(20'000'000 + r * 1000);
    rep.phase.push_back(Phase::prefill);
    for (int i = 0; i < decode_steps; ++i) {
      rep.latency_ns.push_back(decode_ns + ((i * 7 + r * 3) % 11) * (decode_ns / 1000));
      rep.phase.push_back(Phase::decode);
    }
    rep.ttft_warm_ns = 21'000'000 + r * 1000;
    if (r == 0) rep.ttft_cold_ns = 900'000'000;
    c.samples.push_back(std::move(rep));
  }
  ExpertCounters& e = c.experts;
  e.hits_per_layer = {60, 70};
  e.misses_per_layer = {40, 30};
  e.loads_per_layer = {40, 30};
  e.bytes_moved_per_layer = {40 * 1000, 30 * 1000};
  e.load_time_ns_per_layer = {4'000'000, 3'000'000};
  e.stall_ns_per_layer = {1'000'000, 500'000};
  e.hits = 130;
  e.misses = 70;
  e.loads = 70;
  e.bytes_moved = 70 * 1000;
  e.load_time_ns = 7'000'000;
  e.stall_ns = 1'500'000;
  e.usage = {{10, 20, 30, 40}, {25, 25, 25, 25}};
  for (int i = 0; i <= decode_steps; ++i) c.hit_rate.overall.push_back(i == 0 ? 0.0 : 0.5 + 0.01 * (i % 40));
  c.hit_rate.per_layer = {c.hit_rate.overall, c.hit_rate.overall};
  c.memory.arena_peak_bytes = 3LL << 30;
  c.memory.device_used_peak_bytes = (3LL << 30) + (512LL << 20);
  c.memory.host_pinned_bytes = 10LL << 30;
  c.memory.allocation_count = 12;
  c.memory.timeline = {{0, 1LL << 30, 2LL << 30}, {1'000'000, 3LL << 30, (3LL << 30) + (512LL << 20)}};
  c.gpu_time_ns = {{"kernel", 30'000'000}, {"memcpy_h2d", 5'000'000}};
  c.output_token_hash = "9f86d081884c7d65";
  c.aggregates = compute_aggregates(c);
  Bound b;
  b.description = "resident: 1.2 GB/token / 3.35 TB/s HBM";
  b.value = 2500;
  b.unit = "tok/s";
  b.percent = c.aggregates.decode_tok_s / b.value * 100;
  c.bound = b;
  return c;
}

inline reports::Results make_results() {
  using namespace reports;
  Results r;
  r.run = {"0.1.0", "abc1234", "Release", "2025-01-31T12:00:00Z", {"moebench", "run", "--suite", "short"}, ""};
  r.device = {"Test GPU 80GB", DeviceKind::cuda, 132, 80LL << 30, "13.0", 25.1, 3350.0};
  r.host = {"testhost", "Test CPU", 16, 128LL << 30};
  r.model = {"tiny", nlohmann::json{{"model_type", "mixtral"}, {"hidden_size", 64}}, "bf16", "synthetic:42"};
  r.cases.push_back(make_case("short", "c0", "P0"));
  r.cases.push_back(make_case("short", "c1", "P0"));
  r.cases.push_back(make_case("short", "ref", "P0"));
  return r;
}

// Scales the timings of a case: decode steps by `decode`, prefill and TTFTs by `other`.
inline void scale_case(reports::Case& c, double decode, double other) {
  for (auto& rep : c.samples) {
    for (size_t i = 0; i < rep.latency_ns.size(); ++i)
      rep.latency_ns[i] = static_cast<int64_t>(static_cast<double>(rep.latency_ns[i]) *
                                               (rep.phase[i] == reports::Phase::decode ? decode : other));
    rep.ttft_warm_ns = static_cast<int64_t>(static_cast<double>(rep.ttft_warm_ns) * other);
    if (rep.ttft_cold_ns) *rep.ttft_cold_ns = static_cast<int64_t>(static_cast<double>(*rep.ttft_cold_ns) * other);
  }
  c.aggregates = reports::compute_aggregates(c);
}

}  // namespace moebench::test
