// bound_test.cpp: bounds are lower limits on time. The model of each bound
// (resident, offloaded with copies overlapped or serial, CPU read stream, bench),
// the tensor-parallel bound and its per-GPU figures, the results check that names a
// case beyond its bound, the committed results
// re-derived under today's model, and a fresh CPU run of the default suite's cases
// held under its bounds with a memory peak.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "model/config.h"
#include "common/error.h"
#include "engine/quant.h"
#include "engine/shard.h"
#include "reports/fields.h"
#include "reports/markdown.h"
#include "reports/results.h"
#include "suites/bound.h"
#include "suites/machine.h"
#include "suites/runner.h"
#include "suites/suite.h"
#include "tests/test_util.h"

namespace bound_test {

using namespace moebench;
using namespace moebench::suites;

namespace {

reports::DeviceInfo cuda_device(double hbm_read_gbps, double hbm_copy_gbps, double h2d_gbps) {
  reports::DeviceInfo d;
  d.kind = reports::DeviceKind::cuda;
  d.hbm_read_gbps = hbm_read_gbps;
  d.hbm_copy_gbps = hbm_copy_gbps;
  d.hbm_gbps = std::max(hbm_read_gbps, hbm_copy_gbps);
  d.h2d_gbps = h2d_gbps;
  return d;
}

// 10 decode steps of 100 ms (10 tok/s) after a 50 ms prefill.
reports::Case decoded_case(const char* tier, const char* policy) {
  reports::Case c;
  c.suite = "s";
  c.name = "c";
  c.settings.stage = "P1";
  c.settings.knobs["expert_tier"] = tier;
  c.settings.knobs["cache_policy"] = policy;
  reports::Repetition r;
  r.latency_ns = {50'000'000};
  r.phase = {reports::Phase::prefill};
  for (int i = 0; i < 10; ++i) {
    r.latency_ns.push_back(100'000'000);
    r.phase.push_back(reports::Phase::decode);
  }
  c.samples.push_back(r);
  c.aggregates = reports::compute_aggregates(c);
  return c;
}

}  // namespace

TEST(Bound, OverlappedCopiesTakeTheSlowerResourceAndSerialOnesTheSum) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  const reports::DeviceInfo d = cuda_device(4400, 3900, 50);
  const double hbm_s = static_cast<double>(bytes_per_decode_token(cfg, 2)) / 4400e9;
  // A prefetching policy loads layer L+1 while layer L computes: the slower one is the limit.
  reports::Case p1 = decoded_case("pinned", "lfu-prefetch");
  p1.experts.decode_bytes_moved = 10LL * 1'000'000'000;  // 1 GB per decode token
  auto b = physical_bound(p1, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->time_model, "overlap");
  EXPECT_NEAR(b->value, 1.0 / std::max(1e9 / 50e9, hbm_s), 1e-9);
  EXPECT_NE(b->description.find("overlap"), std::string::npos) << b->description;
  // Without prefetch the compute stream waits for a layer's copies: the sum.
  reports::Case p0 = p1;
  p0.settings.knobs["cache_policy"] = "lru";
  b = physical_bound(p0, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->time_model, "serial");
  EXPECT_NEAR(b->value, 1.0 / (1e9 / 50e9 + hbm_s), 1e-9);
  EXPECT_EQ(b->bandwidth_gbps.at("h2d"), 50);
  EXPECT_EQ(b->bandwidth_gbps.at("hbm"), 4400);
  EXPECT_TRUE(copies_overlap_compute(p1.settings));
  EXPECT_FALSE(copies_overlap_compute(p0.settings));
}

TEST(Bound, ResidentCudaUsesTheBestOfReadStreamAndCopyAndSaysWhich) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  const reports::Case c = decoded_case("resident", "lru");
  auto b = physical_bound(c, cfg, "cuda", cuda_device(4450, 3950, 55));
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 4450e9 / static_cast<double>(bytes_per_decode_token(cfg, 2)), 1e-6);
  EXPECT_NE(b->description.find("read stream"), std::string::npos) << b->description;
  EXPECT_EQ(b->time_model, "single");
  // A file from before the read stream: its HBM figure is the copy kernel's, and it says so.
  reports::DeviceInfo old = cuda_device(0, 0, 55);
  old.hbm_gbps = 3900;
  b = physical_bound(c, cfg, "cuda", old);
  ASSERT_TRUE(b.has_value());
  EXPECT_NE(b->description.find("copy kernel"), std::string::npos) << b->description;
}

TEST(Bound, CpuUsesItsReadStreamAndNoneWithoutIt) {
  const ModelConfig cfg = preset_config("tiny");
  const reports::Case c = decoded_case("resident", "lru");
  reports::DeviceInfo cpu_dev;
  cpu_dev.hbm_gbps = 10;  // a DRAM copy figure: not what the CPU bound uses
  EXPECT_FALSE(physical_bound(c, cfg, "cpu", cpu_dev).has_value());
  CpuRead r{200, bytes_per_decode_token(cfg, 4), 2};
  auto b = physical_bound(c, cfg, "cpu", cpu_dev, r);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 200e9 / static_cast<double>(bytes_per_decode_token(cfg, 4)), 1e-6);
  EXPECT_EQ(b->bandwidth_gbps.at("cpu_read"), 200);
  EXPECT_NE(b->description.find("2 thread(s)"), std::string::npos) << b->description;
}

// A batched step on one GPU reads every distinct expert its tokens chose at least once: with
// the count bench takes on the device (ExpertCounters::decode_experts_per_step), the bound's
// bytes are one token's plus the experts beyond top_k a layer; a single sequence ignores
// it, and a count no step can give (fewer than top_k a layer, more than every expert) gives
// no bound. A results file's bench case is re-derived with its batch_size and count.
TEST(Bound, BatchedBenchBoundCountsTheDistinctExpertsAStepRan) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");  // 32 layers x 8 experts, top-2
  const reports::DeviceInfo d = cuda_device(4400, 3900, 55);
  reports::Settings s;
  s.knobs["expert_dtype"] = "int4";
  const double expert = static_cast<double>(expert_bytes(cfg, QuantFormat::int4));
  // One token: every non-expert weight in bf16 and top_k int4 experts a layer.
  const double one_token = static_cast<double>(bytes_per_decode_token(cfg, 2)) -
                           64.0 * static_cast<double>(cfg.expert_params()) * 2 + 64.0 * expert;
  auto top_k = bench_decode_bound(cfg, d, s, 16, 100);
  ASSERT_TRUE(top_k.has_value());
  EXPECT_NE(top_k->description.find("top_k experts per layer"), std::string::npos) << top_k->description;
  auto b = bench_decode_bound(cfg, d, s, 16, 100, {}, 240.0);  // 7.5 of 8 experts a layer
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 16 * 4400e9 / (one_token + (240 - 64) * expert), 1e-6);
  EXPECT_NEAR(b->percent, 1600 / b->value * 100, 1e-9);
  EXPECT_LT(b->value, top_k->value / 2);  // int4: the experts are most of a step's bytes
  EXPECT_NE(b->description.find("240.0 distinct experts a step ran, counted on the device"), std::string::npos)
      << b->description;
  // Every expert of every layer, or top_k a layer, are counts a step can give.
  EXPECT_TRUE(bench_decode_bound(cfg, d, s, 16, 100, {}, 256.0).has_value());
  EXPECT_NEAR(bench_decode_bound(cfg, d, s, 16, 100, {}, 64.0)->value, top_k->value, 1e-6);
  EXPECT_FALSE(bench_decode_bound(cfg, d, s, 16, 100, {}, 63.0).has_value());
  EXPECT_FALSE(bench_decode_bound(cfg, d, s, 16, 100, {}, 257.0).has_value());
  // One sequence: its step runs top_k experts a layer, whatever a file says.
  EXPECT_NEAR(bench_decode_bound(cfg, d, s, 1, 100, {}, 240.0)->value, bench_decode_bound(cfg, d, s, 1, 100)->value,
              1e-9);

  reports::Results r;
  r.device = d;
  r.model.config = config_to_json(cfg);
  reports::Case c = decoded_case("resident", "lru");
  c.suite = "bench";
  c.new_tokens = 11;
  c.settings.knobs = s.knobs;
  c.settings.knobs["batch_size"] = 16;
  c.experts.decode_experts_per_step = 240.0;
  std::string why;
  auto re = rederive_bound(r, c, &why);
  ASSERT_TRUE(re.has_value()) << why;
  EXPECT_NEAR(re->value, b->value, 1e-6);
  EXPECT_NE(re->description.find("batch 16 decode"), std::string::npos) << re->description;
}

// The CPU backend's batched bench case: the same counted step over the CPU read stream,
// every weight in fp32 (the CPU model's), and re-derived from a file of a CPU run.
TEST(Bound, BatchedBenchBoundOnTheCpuCountsFp32Experts) {
  const ModelConfig cfg = preset_config("tiny");
  const double expert = 4.0 * static_cast<double>(cfg.expert_params());
  const double one_token = static_cast<double>(bytes_per_decode_token(cfg, 4));
  const double top_k = static_cast<double>(cfg.num_hidden_layers) * cfg.num_experts_per_tok;
  CpuRead cpu;
  cpu.gbps = 40;
  cpu.bytes = static_cast<int64_t>(one_token);
  cpu.threads = 2;
  auto b = bench_cpu_decode_bound(cfg, cpu, 4, 500, top_k + 5);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 4 * 40e9 / (one_token + 5 * expert), 1e-6);
  EXPECT_NEAR(b->percent, 2000 / b->value * 100, 1e-9);
  EXPECT_EQ(b->bandwidth_gbps.count("cpu_read"), 1u);
  EXPECT_NE(b->description.find("counted by the CPU model"), std::string::npos) << b->description;
  EXPECT_NE(b->description.find("with 2 thread(s)"), std::string::npos) << b->description;
  EXPECT_NEAR(bench_cpu_decode_bound(cfg, cpu, 1, 500)->value, 40e9 / one_token, 1e-6);  // batch 1: one token's bytes
  EXPECT_FALSE(bench_cpu_decode_bound(cfg, cpu, 4, 500, top_k - 1).has_value());
  EXPECT_FALSE(bench_cpu_decode_bound(cfg, CpuRead{}, 4, 500).has_value());  // no read stream measured

  reports::Results r;
  r.device.kind = reports::DeviceKind::cpu;
  r.model.config = config_to_json(cfg);
  reports::Case c = decoded_case("resident", "lru");
  c.suite = "bench";
  c.new_tokens = 9;
  c.aggregates.decode_tok_s = 500;
  c.settings.knobs["batch_size"] = 4;
  c.experts.decode_experts_per_step = top_k + 5;
  std::string why;
  EXPECT_FALSE(rederive_bound(r, c, &why).has_value());
  EXPECT_EQ(why, "the file does not record the CPU read stream a bound needs");
  c.bound = b;
  auto re = rederive_bound(r, c, &why);
  ASSERT_TRUE(re.has_value()) << why;
  EXPECT_NEAR(re->value, b->value, 1e-6);
  c.new_tokens = 1;
  EXPECT_FALSE(rederive_bound(r, c, &why).has_value());
  EXPECT_EQ(why, "no prefill bound on the CPU backend");

  // The live case (bench): the same bound from the read stream with its bytes and threads.
  c.new_tokens = 9;
  const CpuRead live = decode_cpu_read(cfg, 2, 40);
  EXPECT_EQ(live.bytes, cpu.bytes);
  EXPECT_EQ(live.threads, 2);
  auto lb = bench_case_bound(cfg, r.device, true, c, 4, live, &why);
  ASSERT_TRUE(lb.has_value()) << why;
  EXPECT_NEAR(lb->value, b->value, 1e-6);
  EXPECT_EQ(lb->description, b->description);
  EXPECT_FALSE(bench_case_bound(cfg, r.device, true, c, 4, CpuRead{}, &why).has_value());
  EXPECT_EQ(why, "the CPU read stream was not measured");
  c.new_tokens = 1;
  EXPECT_FALSE(bench_case_bound(cfg, r.device, true, c, 4, live, &why).has_value());
  EXPECT_EQ(why, "no prefill bound on the CPU backend");
}

TEST(Bound, BenchBoundsUseTheLeastAStepReads) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  const reports::DeviceInfo d = cuda_device(4400, 3900, 55);
  const double bytes = static_cast<double>(bytes_per_decode_token(cfg, 2));
  auto b = bench_decode_bound(cfg, d, reports::Settings{}, 8, 100);  // 8 sequences at 100 tok/s each
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 8 * 4400e9 / bytes, 1e-6);
  EXPECT_NEAR(b->percent, 800 / b->value * 100, 1e-9);
  b = bench_prefill_bound(cfg, d, reports::Settings{}, 5e6);  // TTFT 5 ms
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->unit, "ms");
  EXPECT_NEAR(b->value, bytes / 4400e9 * 1e3, 1e-9);
  EXPECT_NEAR(b->percent, b->value / 5 * 100, 1e-9);
}

// A bench case with quantised experts is held to its own bytes: the int4 limit is
// higher than the bf16 one by exactly the expert bytes saved (it once used bf16 bytes,
// so a quantised batched case read 97.5% of a bound it beat by a factor of three).
TEST(Bound, BenchBoundsCountQuantisedExpertBytes) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  const reports::DeviceInfo d = cuda_device(4400, 3900, 55);
  reports::Settings s;
  s.knobs["expert_dtype"] = "int4";
  const int64_t experts = static_cast<int64_t>(cfg.num_hidden_layers) * cfg.num_experts_per_tok;
  const double bytes = static_cast<double>(bytes_per_decode_token(cfg, 2) - experts * cfg.expert_params() * 2 +
                                           experts * static_cast<int64_t>(expert_bytes(cfg, QuantFormat::int4)));
  auto b = bench_decode_bound(cfg, d, s, 1, 100);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 4400e9 / bytes, 1e-6);
  EXPECT_GT(b->value, 2.5 * bench_decode_bound(cfg, d, reports::Settings{}, 1, 100)->value);
  b = bench_prefill_bound(cfg, d, s, 5e6);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, bytes / 4400e9 * 1e3, 1e-9);
}

// Quantised attention projections (weight_dtype) count their own bytes: Mixtral's q/k/v/o
// per layer, 4096 x 4096 + 2 x 1024 x 4096 + 4096 x 4096 weights, as int8 values + one
// f32 scale a row (4096 + 2 x 1024 + 4096 rows) or fp8 values + one f32 scale per 128x128
// block (32 x 32 + 2 x 8 x 32 + 32 x 32), against 2 bytes a weight in bf16; with int4
// experts too, both savings; the label names what is quantised.
TEST(Bound, QuantisedAttentionCountsItsOwnBytes) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  const reports::DeviceInfo d = cuda_device(4400, 3900, 55);
  const int64_t W = 4096LL * 4096 * 2 + 1024LL * 4096 * 2, L = cfg.num_hidden_layers;
  const int64_t saved_int8 = L * (2 * W - (W + 4 * (4096 + 2 * 1024 + 4096)));
  const int64_t saved_fp8 = L * (2 * W - (W + 4 * (32 * 32 * 2 + 8 * 32 * 2)));
  const int64_t bf16 = bytes_per_decode_token(cfg, 2);
  for (auto [dtype, saved] : {std::pair<const char*, int64_t>{"int8", saved_int8}, {"fp8", saved_fp8}}) {
    SCOPED_TRACE(dtype);
    reports::Settings s;
    s.knobs["weight_dtype"] = dtype;
    auto b = bench_decode_bound(cfg, d, s, 1, 100);
    ASSERT_TRUE(b.has_value());
    EXPECT_NEAR(b->value, 4400e9 / static_cast<double>(bf16 - saved), 1e-6);
    EXPECT_NE(b->description.find("of bf16 + quantised attention weights"), std::string::npos) << b->description;
    s.knobs["expert_dtype"] = "int4";
    const int64_t experts = L * cfg.num_experts_per_tok;
    const int64_t both = bf16 - saved - experts * cfg.expert_params() * 2 +
                         experts * static_cast<int64_t>(expert_bytes(cfg, QuantFormat::int4));
    b = bench_decode_bound(cfg, d, s, 1, 100);
    ASSERT_TRUE(b.has_value());
    EXPECT_NEAR(b->value, 4400e9 / static_cast<double>(both), 1e-6);
    EXPECT_NE(b->description.find("of bf16 + quantised attention + expert weights"), std::string::npos)
        << b->description;
  }
}

TEST(PhysicalBound, ResidentCudaUsesMeasuredHbm) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  reports::DeviceInfo d = cuda_device(3000, 0, 55);
  const reports::Case c = decoded_case("resident", "lru");
  ASSERT_NEAR(c.aggregates.decode_tok_s, 10.0, 1e-9);
  const auto b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  const double bytes = static_cast<double>(bytes_per_decode_token(cfg, 2));
  EXPECT_NEAR(b->value, 3000e9 / bytes, 1e-6);
  EXPECT_NEAR(b->percent, 10.0 / b->value * 100, 1e-9);
  EXPECT_EQ(b->unit, "tok/s");
  EXPECT_NE(b->description.find("HBM"), std::string::npos) << b->description;
  // Without a measured HBM bandwidth there is no bound, not an invented one.
  d.hbm_gbps = 0;
  EXPECT_FALSE(physical_bound(c, cfg, "cuda", d).has_value());
}

TEST(PhysicalBound, OffloadedCudaUsesMeasuredHostToDevice) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  reports::DeviceInfo d = cuda_device(3000, 0, 50);
  reports::Case c = decoded_case("pinned", "lru");
  c.experts.bytes_moved = 12LL * 1'000'000'000;        // the prefill's loads count here only
  c.experts.decode_bytes_moved = 10LL * 1'000'000'000;  // 1 GB per decode token
  const auto b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  // 1 GB over 50 GB/s, plus the token's resident bf16 weights once over 3000 GB/s.
  const double sec = 1e9 / 50e9 + static_cast<double>(bytes_per_decode_token(cfg, 2)) / 3000e9;
  EXPECT_NEAR(b->value, 1.0 / sec, 1e-9);
  EXPECT_NEAR(b->percent, 10.0 * sec * 100, 1e-9);  // measured 10 tok/s
  EXPECT_NE(b->description.find("offloaded"), std::string::npos) << b->description;
  d.h2d_gbps = 0;
  EXPECT_FALSE(physical_bound(c, cfg, "cuda", d).has_value());
}

// Quantised experts: a decode token reads top_k experts per layer in their format's
// bytes (values + scales), so the bound rises by the bytes saved; bf16 is unchanged.
TEST(PhysicalBound, QuantisedExpertsCountTheirOwnBytes) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  const reports::DeviceInfo d = cuda_device(3000, 0, 50);
  const int64_t experts = static_cast<int64_t>(cfg.num_hidden_layers) * cfg.num_experts_per_tok;
  const int64_t bf16_bytes = bytes_per_decode_token(cfg, 2);
  for (const char* dtype : {"bf16", "fp8", "int8", "int4"}) {
    SCOPED_TRACE(dtype);
    reports::Case c = decoded_case("resident", "lru");
    c.settings.knobs["expert_dtype"] = dtype;
    const int64_t bytes = bf16_bytes - experts * cfg.expert_params() * 2 +
                          experts * static_cast<int64_t>(expert_bytes(cfg, parse_quant_format(dtype, "dtype")));
    auto b = physical_bound(c, cfg, "cuda", d);
    ASSERT_TRUE(b.has_value());
    EXPECT_NEAR(b->value, 3000e9 / static_cast<double>(bytes), 1e-6);
    if (std::string(dtype) != "bf16") {
      EXPECT_GT(b->value, 3000e9 / static_cast<double>(bf16_bytes));
    }
    c = decoded_case("pinned", "lru");
    c.settings.knobs["expert_dtype"] = dtype;
    c.experts.decode_bytes_moved = 10LL * 1'000'000'000;
    b = physical_bound(c, cfg, "cuda", d);
    ASSERT_TRUE(b.has_value());
    EXPECT_NEAR(b->value, 1.0 / (1e9 / 50e9 + static_cast<double>(bytes) / 3000e9), 1e-9);
  }
}

TEST(PhysicalBound, DiskTierUsesTheSlowerOfDiskAndHostToDevice) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  reports::DeviceInfo d = cuda_device(3000, 0, 50);
  reports::Case c = decoded_case("disk", "lru");
  c.experts.decode_bytes_moved = 10LL * 1'000'000'000;  // 1 GB per decode token
  // The disk is the limit, and without its measured bandwidth there is no bound.
  EXPECT_FALSE(physical_bound(c, cfg, "cuda", d).has_value());
  d.disk_read_gbps = 2;
  auto b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  const double resident = static_cast<double>(bytes_per_decode_token(cfg, 2)) / 3000e9;
  EXPECT_NEAR(b->value, 1.0 / (1e9 / 2e9 + resident), 1e-9);
  EXPECT_NE(b->description.find("disk read"), std::string::npos) << b->description;
  // A disk faster than the link: the link is the limit.
  d.disk_read_gbps = 80;
  b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 1.0 / (1e9 / 50e9 + resident), 1e-9);
  EXPECT_NE(b->description.find("host->device"), std::string::npos) << b->description;
}

TEST(BoundCheck, WarnsNamingACaseBeyondItsBoundPlusNoise) {
  reports::Results r;
  reports::Case c = decoded_case("resident", "lru");
  c.bound = reports::Bound{"resident: test", 9.5, "tok/s", 10.0 / 9.5 * 100, "single", {}};  // 105.3%
  r.cases.push_back(c);
  c.name = "within-noise";
  c.bound = reports::Bound{"resident: test", 9.8, "tok/s", 10.0 / 9.8 * 100, "single", {}};  // 102.0%
  r.cases.push_back(c);
  auto w = bound_warnings(r);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("s/c (P1)"), std::string::npos) << w[0];
  EXPECT_NE(w[0].find("105.3%"), std::string::npos) << w[0];
}

// Every committed results file that carries bounds, re-derived from its own fields
// under today's model of the limit, stays at or below 100% + noise.
TEST(BoundCheck, CommittedResultsStayUnderTheirBounds) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(test::source_dir()) / "reports" / "baselines";
  int checked = 0;
  std::set<std::string> excluded;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".json") continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(test::read_file(e.path().string()));
    } catch (const nlohmann::json::exception&) {
      continue;
    }
    // Results files only (kernel tables, simulator and profile-check output have other layouts).
    if (!j.is_object() || !j.contains("schema_version") || !j.contains("cases")) continue;
    const reports::Results r = reports::load_results(e.path().string());
    for (const reports::Case& c : r.cases) {
      if (!c.bound || c.status != reports::CaseStatus::ok) continue;
      SCOPED_TRACE(e.path().filename().string() + ": " + c.suite + "/" + c.name + " (" + c.settings.stage + ")");
      std::string why;
      auto b = rederive_bound(r, c, &why);
      if (!b) {
        excluded.insert(e.path().filename().string() + ": " + why);
        continue;
      }
      EXPECT_LE(b->percent, 100 + reports::kBoundNoisePercent) << b->description << " (recorded: " << c.bound->description << ", "
                                                       << c.bound->percent << "%)";
      ++checked;
    }
  }
  EXPECT_GE(checked, 40);  // the committed results files hold 48 bounded cases (2026-11-30)
  // Every committed results file carries what its bound needs.
  EXPECT_EQ(excluded, std::set<std::string>{});
}

// A file recorded under the old offload model (copies + compute summed for a
// prefetching stage) shows the overlapped bound in a report.
TEST(BoundCheck, OldBoundsAreReDerivedForReports) {
  namespace fs = std::filesystem;
  reports::Results r = reports::load_results(
      test::fixture("results/stages_gpu_old_bound_model_h200.json"));
  int p2_over = 0;
  for (const reports::Case& c : r.cases) p2_over += c.settings.stage == "P2" && c.bound->percent > 100;
  EXPECT_GT(p2_over, 0);  // as recorded
  EXPECT_EQ(rederive_recorded_bounds(r), static_cast<int>(r.cases.size()));
  for (const reports::Case& c : r.cases) {
    SCOPED_TRACE(c.name + " " + c.settings.stage);
    EXPECT_LE(c.bound->percent, 100.0);
    EXPECT_EQ(c.bound->time_model, c.settings.stage == "P1" || c.settings.stage == "P2" ? "overlap" : "serial");
  }
  EXPECT_EQ(rederive_recorded_bounds(r), 0);  // already today's
}

// `moebench run --suite default` on the CPU, in process: every case has a bound from
// a read stream measured in the same run, stays under it, and has a memory peak.
TEST(BoundCheck, FreshCpuRunOfTheDefaultCasesStaysUnderItsBounds) {
  Suite s = load_suite("default");
  Overrides o;
  o.repetitions = 2;
  RunOptions opt;  // bandwidths measured, as `run` does
  RunOutcome out = run_suite(expand(s, o, [](const std::string&) { return std::string("cpu"); }), opt);
  ASSERT_EQ(out.failed, 0);
  ASSERT_FALSE(out.results.cases.empty());
  for (const reports::Case& c : out.results.cases) {
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(c.bound.has_value());
    EXPECT_GT(c.bound->bandwidth_gbps.at("cpu_read"), 0);
    EXPECT_LE(c.bound->percent, 100 + reports::kBoundNoisePercent) << c.bound->description;
    EXPECT_GT(reports::memory_peak_bytes(c), 0);
    EXPECT_GT(c.memory.host_peak_rss_bytes, 0);
    EXPECT_GE(c.memory.engine_host_bytes, static_cast<int64_t>(preset_config("tiny").total_params() * 4));
  }
  EXPECT_TRUE(bound_warnings(out.results).empty());
}

// A case without a bound says why, in the results and in the summary.
TEST(BoundCheck, ACaseWithoutABoundSaysWhy) {
  Suite s = load_suite("ci");  // timed by the thread CPU clock
  Overrides o;
  o.repetitions = 1;
  RunOptions opt;
  RunOutcome out = run_suite(expand(s, o, [](const std::string&) { return std::string("cpu"); }), opt);
  ASSERT_EQ(out.failed, 0);
  const reports::Case& fox = out.results.cases.at(1);
  ASSERT_EQ(fox.name, "fox");
  EXPECT_FALSE(fox.bound.has_value());
  EXPECT_NE(fox.no_bound_reason.find("thread_cpu clock"), std::string::npos) << fox.no_bound_reason;
  EXPECT_NE(reports::render_markdown(out.results).find("ci/fox (custom): no bound: timed by the thread_cpu clock"),
            std::string::npos);
  // Without measured bandwidths a CPU case has no bound either, and says so.
  reports::Case c = decoded_case("resident", "lru");
  std::string why;
  EXPECT_FALSE(physical_bound(c, preset_config("tiny"), "cpu", {}, {}, &why).has_value());
  EXPECT_EQ(why, "the CPU read stream was not measured");
}

TEST(Machine, ReadStreamAndPeakResidentSetAreMeasured) {
  EXPECT_GT(measure_read_gbps(1 << 20, 1), 0);
  EXPECT_GT(process_peak_rss_bytes(), 0);
}

namespace {

reports::DeviceInfo h200() { return cuda_device(4400, 0, 50); }

std::vector<reports::GpuRank> two_gpus(int64_t coll0_ns, int64_t coll1_ns) {
  std::vector<reports::GpuRank> g(2);
  g[0] = {"cuda:0 NVIDIA H200", 50'000'000'000, 51'000'000'000, 64, coll0_ns, 64};
  g[1] = {"cuda:1 NVIDIA H200", 49'000'000'000, 50'000'000'000, 64, coll1_ns, 64};
  return g;
}

// A case of decoded_case's timings (10 tok/s) on two GPUs, tensor-parallel.
reports::Case tp_case(const char* tier, const char* policy) {
  reports::Case c = decoded_case(tier, policy);
  c.settings.knobs["tensor_parallel"] = "2";
  c.repetitions = 1;
  return c;
}

}  // namespace

// Tensor parallel: the per-GPU figures (Case::gpus) survive a results file round trip
// and are the deltas of a model's counters per decode step; the bound is the largest
// rank's bytes over HBM plus the least measured all-reduce time per step (resident,
// batch 1 and batched; offloaded: rank 0's copies over the link, serial or
// overlapped); without the per-GPU figures a TP case gets no bound and says why.

TEST(ParallelBound, ResidentIsTheLargestRanksBytesPlusTheLeastCollectiveTime) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  reports::Case c = tp_case("resident", "lru");
  c.gpus = two_gpus(900'000, 1'100'000);
  auto b = physical_bound(c, cfg, "cuda", h200());
  ASSERT_TRUE(b.has_value());
  const double rank_bytes = static_cast<double>(bytes_per_decode_token(tp_rank_config(cfg, 0, 2), 2));
  EXPECT_LT(rank_bytes, 0.55 * static_cast<double>(bytes_per_decode_token(cfg, 2)));  // about half: lm_head and norms stay whole
  EXPECT_NEAR(b->value, 1.0 / (rank_bytes / 4400e9 + 900e-6), 1e-9);
  EXPECT_NEAR(b->percent, 10.0 / b->value * 100, 1e-9);  // 100 ms per step = 10 tok/s
  EXPECT_NE(b->description.find("tensor parallel over 2 GPUs"), std::string::npos) << b->description;
  // Batched: B tokens per step, the same step time.
  auto bb = bench_decode_bound(cfg, h200(), c.settings, 8, 100, c.gpus);
  ASSERT_TRUE(bb.has_value());
  EXPECT_NEAR(bb->value, 8 * b->value, 1e-6);
  EXPECT_NEAR(bb->percent, 800 / bb->value * 100, 1e-9);
}

// A batched step reads the rank's block of every distinct expert its tokens chose: with
// the GPUs' counts (experts_run_per_step, the same count expert parallel's bound takes),
// the tensor-parallel bound's bytes are the rank's non-expert bytes plus that many blocks
// (the most any GPU counted), not one token's top_k per layer.
TEST(ParallelBound, TensorParallelCountsTheExpertsTheStepRan) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  reports::Case c = tp_case("resident", "lru");
  c.gpus = two_gpus(900'000, 1'100'000);
  auto one = bench_decode_bound(cfg, h200(), c.settings, 8, 100, c.gpus);  // not counted: top_k per layer
  ASSERT_TRUE(one.has_value());
  EXPECT_NE(one->description.find("top_k per layer"), std::string::npos) << one->description;
  c.gpus[0].experts_held = c.gpus[1].experts_held = 256;  // a block of each of 32 x 8 experts
  c.gpus[0].experts_run_per_step = 150;
  c.gpus[1].experts_run_per_step = 149;
  auto b = bench_decode_bound(cfg, h200(), c.settings, 8, 100, c.gpus);
  ASSERT_TRUE(b.has_value());
  const ModelConfig rank = tp_rank_config(cfg, 0, 2);
  const double block = static_cast<double>(expert_bytes(rank, QuantFormat::bf16));
  EXPECT_NEAR(block, static_cast<double>(expert_bytes(cfg, QuantFormat::bf16)) / 2, 1.0);
  const double rank_bytes = static_cast<double>(bytes_per_decode_token(rank, 2));
  EXPECT_NEAR(b->value, 8.0 / ((rank_bytes + (150 - 64) * block) / 4400e9 + 900e-6), 1e-6) << b->description;
  EXPECT_LT(b->value, one->value);  // more bytes per step than one token's
  EXPECT_NE(b->description.find("150.0 experts run per step, measured"), std::string::npos) << b->description;
}

TEST(ParallelBound, NoPerGpuFiguresNoBound) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  reports::Case c = tp_case("resident", "lru");
  std::string why;
  EXPECT_FALSE(physical_bound(c, cfg, "cuda", h200(), {}, &why).has_value());
  EXPECT_NE(why.find("tensor_parallel=2 but the case recorded 0 GPUs"), std::string::npos) << why;
  EXPECT_FALSE(bench_decode_bound(cfg, h200(), c.settings, 8, 100).has_value());
}

TEST(ParallelBound, OffloadedAddsTheCollectivesToTheComputeSide) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  const double hbm_s = static_cast<double>(bytes_per_decode_token(tp_rank_config(cfg, 0, 2), 2)) / 4400e9;
  reports::Case c = tp_case("pinned", "lru");
  c.gpus = two_gpus(700'000, 800'000);
  c.experts.decode_bytes_moved = 10LL * 500'000'000;  // 0.5 GB per decode token on rank 0
  auto b = physical_bound(c, cfg, "cuda", h200());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->time_model, "serial");
  EXPECT_NEAR(b->value, 1.0 / (0.5e9 / 50e9 + hbm_s + 700e-6), 1e-9) << b->description;
  c.settings.knobs["cache_policy"] = "lfu-prefetch";
  b = physical_bound(c, cfg, "cuda", h200());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->time_model, "overlap");
  EXPECT_NEAR(b->value, 1.0 / std::max(0.5e9 / 50e9, hbm_s + 700e-6), 1e-9);
}

TEST(ParallelBound, PerGpuFiguresRoundTripAndArePerDecodeStep) {
  Model::GpuRankStats before{"cuda:0 NVIDIA H200", 1, 2, 10, 5'000'000, 640};
  Model::GpuRankStats after{"cuda:0 NVIDIA H200", 30, 40, 74, 69'000'000, 640 + 64 * 64};
  const auto g = gpu_ranks_between({before}, {after});
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].decode_steps, 64);
  EXPECT_EQ(g[0].collective_ns_per_step, 1'000'000);
  EXPECT_EQ(g[0].collective_calls_per_step, 64);
  EXPECT_EQ(g[0].arena_used_bytes, 30);
  EXPECT_TRUE(gpu_ranks_between({}, {}).empty());

  reports::Results r;
  r.device = h200();
  reports::Case c = tp_case("resident", "lru");
  c.gpus = two_gpus(900'000, 1'100'000);
  r.cases.push_back(c);
  const reports::Results back = reports::results_from_json(reports::to_json(r), "round trip");
  ASSERT_EQ(back.cases.size(), 1u);
  ASSERT_EQ(back.cases[0].gpus.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(back.cases[0].gpus[i].device, c.gpus[i].device);
    EXPECT_EQ(back.cases[0].gpus[i].arena_peak_bytes, c.gpus[i].arena_peak_bytes);
    EXPECT_EQ(back.cases[0].gpus[i].collective_ns_per_step, c.gpus[i].collective_ns_per_step);
    EXPECT_EQ(back.cases[0].gpus[i].collective_calls_per_step, c.gpus[i].collective_calls_per_step);
    EXPECT_EQ(back.cases[0].gpus[i].decode_steps, c.gpus[i].decode_steps);
  }
  // A file without the field (every earlier one) reads as one GPU.
  nlohmann::json j = reports::to_json(r);
  j["cases"][0].erase("gpus");
  EXPECT_TRUE(reports::results_from_json(j, "older file").cases[0].gpus.empty());
}

// Expert parallel: the per-GPU expert counters are per decode step and survive a round
// trip; the bound is the slowest GPU's bytes (every non-expert weight, replicated, plus
// the experts it ran per step, whole) over HBM plus the least all-reduce time per step.
TEST(ParallelBound, ExpertParallelIsTheSlowestGpusBytesPlusTheLeastCollectiveTime) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  Model::GpuRankStats before{"cuda:0 NVIDIA H200", 1, 2, 10, 5'000'000, 320, 128, 10, 300, 400};
  Model::GpuRankStats after{"cuda:0 NVIDIA H200", 3, 4, 74, 37'000'000, 320 + 64 * 32, 128, 74, 300 + 64 * 40, 400 + 64 * 44};
  const auto g = gpu_ranks_between({before}, {after});
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].experts_held, 128);
  EXPECT_DOUBLE_EQ(g[0].experts_run_per_step, 40);
  EXPECT_DOUBLE_EQ(g[0].expert_pairs_per_step, 44);

  reports::Case c = decoded_case("resident", "lru");
  c.settings.knobs["expert_parallel"] = "2";
  c.repetitions = 1;
  std::string why;
  EXPECT_FALSE(physical_bound(c, cfg, "cuda", h200(), {}, &why).has_value());
  EXPECT_NE(why.find("expert_parallel=2 but the case recorded 0 GPUs"), std::string::npos) << why;
  c.gpus = two_gpus(900'000, 800'000);
  EXPECT_FALSE(physical_bound(c, cfg, "cuda", h200(), {}, &why).has_value());
  EXPECT_NE(why.find("GPU 0 recorded no expert counters"), std::string::npos) << why;
  c.gpus[0].experts_held = c.gpus[1].experts_held = 128;
  c.gpus[0].experts_run_per_step = 40;
  c.gpus[1].experts_run_per_step = 24;
  auto b = physical_bound(c, cfg, "cuda", h200());
  ASSERT_TRUE(b.has_value());
  const double expert = static_cast<double>(expert_bytes(cfg, QuantFormat::bf16));
  const double dense = static_cast<double>(bytes_per_decode_token(cfg, 2)) - 32 * 2 * expert;
  EXPECT_NEAR(b->value, 1.0 / ((dense + 40 * expert) / 4400e9 + 800e-6), 1e-9);
  EXPECT_NEAR(b->percent, 10.0 / b->value * 100, 1e-9);
  EXPECT_NE(b->description.find("expert parallel over 2 GPUs"), std::string::npos) << b->description;
  EXPECT_NE(b->description.find("GPU 0"), std::string::npos) << b->description;
  auto bb = bench_decode_bound(cfg, h200(), c.settings, 8, 100, c.gpus);
  ASSERT_TRUE(bb.has_value());
  EXPECT_NEAR(bb->value, 8 * b->value, 1e-6);

  reports::Results r;
  r.device = h200();
  r.cases.push_back(c);
  const reports::Results back = reports::results_from_json(reports::to_json(r), "round trip");
  ASSERT_EQ(back.cases[0].gpus.size(), 2u);
  EXPECT_EQ(back.cases[0].gpus[0].experts_held, 128);
  EXPECT_DOUBLE_EQ(back.cases[0].gpus[0].experts_run_per_step, 40);
  EXPECT_DOUBLE_EQ(back.cases[0].gpus[1].experts_run_per_step, 24);
}

// The hybrid bound (expert_exec hybrid): the missed bytes over both links in the best
// split; cpu: the two links side by side; without the host kernel's rate, no bound.
TEST(Bound, HybridSplitsTheMissedBytesOverBothLinks) {
  const ModelConfig cfg = preset_config("mixtral-8x7b");
  const reports::DeviceInfo d = cuda_device(4400, 3900, 50);
  reports::Case c = decoded_case("pinned", "lfu-prefetch");
  c.settings.knobs["expert_exec"] = "hybrid";
  c.experts.decode_bytes_moved = 6LL * 1'000'000'000;  // 0.6 GB copied per decode token
  c.experts.decode_host_bytes = 4LL * 1'000'000'000;   // 0.4 GB on the host per token
  std::string why;
  EXPECT_FALSE(physical_bound(c, cfg, "cuda", d, {}, &why).has_value());
  EXPECT_EQ(why, "the host expert kernel's rate was not measured");
  c.experts.host_kernel_gbps = 75;
  auto b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  // 1 GB per token over 50 + 75 GB/s (above the HBM term), the host idle while the
  // device reads the non-expert weights (bf16) at 4400 GB/s: T = (1 GB + 75 GB/s x idle) / 125 GB/s.
  const double dense = static_cast<double>(bytes_per_decode_token(cfg, 2) -
                                           2LL * cfg.num_hidden_layers * cfg.num_experts_per_tok * cfg.expert_params());
  const double idle = dense / 4400e9;
  ASSERT_GT(idle, 0);
  const double want = 1.0 / ((1e9 + 75e9 * idle) / 125e9);
  EXPECT_NEAR(b->value, want, 1e-6);
  EXPECT_LT(b->value, 125.0);  // the host's idle time only lengthens the best split
  EXPECT_GT(b->value, 110.0);  // 0.67 ms of non-expert reads per token
  EXPECT_EQ(b->bandwidth_gbps.at("host_kernel"), 75);
  EXPECT_NE(b->description.find("best split"), std::string::npos) << b->description;
  EXPECT_NE(b->description.find("75.0 GB/s host kernel (measured at load)"), std::string::npos) << b->description;
  // With the measurement's spread recorded, the bound says how the rate was taken.
  c.experts.host_kernel_median_gbps = 70;
  c.experts.host_kernel_worst_gbps = 61.5;
  c.experts.host_kernel_samples = 8;
  c.experts.host_kernel_cold = true;
  b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, want, 1e-6);  // the best sample is the link
  EXPECT_NE(b->description.find("75.0 GB/s host kernel (best of 8 cold experts measured once per run, median 70.0 "
                                "GB/s, worst 61.5 GB/s)"),
            std::string::npos)
      << b->description;
  // Both links measured at once at load (copies 20 GB/s beside the host kernel's 70): while
  // the host may run they carry at most 90 GB/s together, not 125, and the bound is lower.
  c.experts.joint_copy_gbps = 20;
  c.experts.joint_host_gbps = 70;
  b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 1.0 / (idle + (1e9 - 50e9 * idle) / 90e9), 1e-6);
  EXPECT_LT(b->value, want);
  EXPECT_EQ(b->bandwidth_gbps.at("joint_host_read"), 90);
  EXPECT_NE(b->description.find("at most 90.0 GB/s together while both run"), std::string::npos) << b->description;
  // The case through a results file and back.
  auto round_trip = [&] {
    reports::Results r;
    r.device = d;
    r.cases.push_back(c);
    r.cases.back().repetitions = static_cast<int>(c.samples.size());
    return reports::results_from_json(reports::to_json(r), "round trip").cases[0].experts;
  };
  EXPECT_EQ(round_trip().joint_copy_gbps, 20);
  EXPECT_EQ(round_trip().joint_host_gbps, 70);
  // Decode reached more with both at once (copies 30 beside the host's 70: 100 GB/s): the
  // joint read is a limit only if no schedule beats it, so the bound takes the larger.
  c.experts.decode_joint_copy_bytes = 30;
  c.experts.decode_joint_copy_ns = 1;
  c.experts.decode_joint_host_bytes = 700;
  c.experts.decode_joint_host_ns = 10;
  b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 1.0 / (idle + (1e9 - 50e9 * idle) / 100e9), 1e-6);
  EXPECT_EQ(b->bandwidth_gbps.at("joint_host_read"), 100);
  EXPECT_NE(b->description.find("in decode 30.0 GB/s + 70.0 GB/s"), std::string::npos) << b->description;
  EXPECT_EQ(round_trip().decode_joint_copy_bytes, 30);
  EXPECT_EQ(round_trip().decode_joint_host_ns, 10);
  // Less than the load's measurement: the load's stays.
  c.experts.decode_joint_host_bytes = 300;
  b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 1.0 / (idle + (1e9 - 50e9 * idle) / 90e9), 1e-6);
  c.experts.decode_joint_copy_bytes = c.experts.decode_joint_copy_ns = 0;
  c.experts.decode_joint_host_bytes = c.experts.decode_joint_host_ns = 0;
  // A joint read above the two solo rates added changes nothing.
  c.experts.joint_copy_gbps = 60;
  c.experts.joint_host_gbps = 80;
  b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, want, 1e-6);
  c.experts.joint_copy_gbps = c.experts.joint_host_gbps = 0;
  // cpu: the host carries its 0.4 GB at 75 GB/s beside 0.6 GB at 50 GB/s: the slower is 12 ms.
  c.settings.knobs["expert_exec"] = "cpu";
  b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 1.0 / std::max(0.6 / 50, 0.4 / 75), 1e-6);
  // Decode's host work read faster than the load's best cold expert (0.4 GB a token in
  // 16 ms of kernel time: 25 GB/s against 20 at load): the bound takes decode's rate, in
  // cpu mode (the host link, 16 ms, now sets it beside the 12 ms of copies) and in hybrid.
  c.experts.host_kernel_gbps = 20;
  c.experts.decode_host_busy_ns = c.experts.decode_host_bytes / 25;
  b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 1.0 / (0.4 / 25 + idle), 1e-6);
  EXPECT_EQ(b->bandwidth_gbps.at("host_kernel"), 25);
  EXPECT_NE(b->description.find("25.0 GB/s in decode, the larger"), std::string::npos) << b->description;
  c.settings.knobs["expert_exec"] = "hybrid";
  b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 1.0 / ((1e9 + 25e9 * idle) / 75e9), 1e-6);
  // Slower in decode than at load (beside copies): the load's best stays.
  c.experts.decode_host_busy_ns = c.experts.decode_host_bytes / 10;
  b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->bandwidth_gbps.at("host_kernel"), 20);
  EXPECT_NEAR(b->value, 1.0 / ((1e9 + 20e9 * idle) / 70e9), 1e-6);
  c.experts.host_kernel_gbps = 75;
  c.experts.decode_host_busy_ns = 0;
  // The copy-only case is unchanged by the host fields.
  c.settings.knobs["expert_exec"] = "gpu";
  b = physical_bound(c, cfg, "cuda", d);
  ASSERT_TRUE(b.has_value());
  EXPECT_NEAR(b->value, 1.0 / (0.6 / 50), 1e-6);
  EXPECT_EQ(b->bandwidth_gbps.count("host_kernel"), 0u);
}

}  // namespace bound_test
