// device_plan_test.cpp: the expert layout and the device memory plan of the CUDA model
// (engine/device_plan.h), on the CPU: the layout's bytes are the format's bytes, parts
// lie on 16-byte boundaries, quantised slots multiply at one budget as the bytes say,
// and budgets that cannot hold the model give one line naming what is needed; the
// gate/up layout (w3 right after w1) keeps every part whole.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "engine/device_plan.h"
#include "common/error.h"
#include "engine/weights.h"

namespace moebench {
namespace device_plan_test {

constexpr uint64_t kGiB = 1ull << 30;

ModelConfig mixtral32() {
  ModelConfig c = preset_config("mixtral-8x7b");
  c.num_hidden_layers = 32;
  return c;
}

// The dense (non-expert) weights of c as the CUDA model uploads them (bf16, 256-aligned).
uint64_t dense_bytes(const ModelConfig& c) {
  uint64_t b = 0;
  for (auto& s : model_tensor_specs(c))
    if (s.name.find(".block_sparse_moe.experts.") == std::string::npos)
      b += (static_cast<uint64_t>(s.numel()) * 2 + 255) / 256 * 256;
  return b;
}

DevicePlanInput offloaded(const ModelConfig& c, QuantFormat f, uint64_t budget) {
  DevicePlanInput in;
  in.config = c;
  in.format = f;
  in.resident = false;
  in.budget_bytes = budget;
  in.fixed.dense_weights = dense_bytes(c);
  in.fixed.kv_cache = 2ull * c.num_hidden_layers * 4096 * c.kv_dim() * 2;  // max_model_len 4096
  in.fixed.workspace = 512ull << 20;
  return in;
}

TEST(DevicePlan, MixtralLayoutIsTheFormatsBytesWithoutPadding) {
  const ModelConfig c = mixtral32();
  for (QuantFormat f : {QuantFormat::bf16, QuantFormat::fp8, QuantFormat::int8, QuantFormat::int4}) {
    const ExpertLayout L = expert_layout(c, f);
    EXPECT_EQ(L.total_bytes, expert_bytes(c, f)) << quant_format_name(f);
    EXPECT_EQ(L.offset[0][0], 0u);
  }
  EXPECT_EQ(expert_layout(c, QuantFormat::bf16).total_bytes, 3ull * 4096 * 14336 * 2);
  const ExpertLayout i4 = expert_layout(c, QuantFormat::int4);
  EXPECT_EQ(i4.n_parts, 2);
  EXPECT_EQ(i4.bytes[0][0], 14336ull * 4096 / 2);     // w1 nibbles
  EXPECT_EQ(i4.bytes[0][1], 14336ull * 32 * 2);       // w1 bf16 scales, groups of 128 along 4096
  EXPECT_EQ(i4.bytes[2][1], 4096ull * 112 * 2);       // w2 scales, groups along 14336
  EXPECT_EQ(i4.offset[1][0], i4.bytes[0][0] + i4.bytes[0][1]);
}

TEST(DevicePlan, SmallShapesPadPartsTo16Bytes) {
  ModelConfig c = preset_config("micro");
  const ExpertLayout L = expert_layout(c, QuantFormat::fp8);
  for (int m = 0; m < 3; ++m)
    for (int p = 0; p < L.n_parts; ++p) {
      EXPECT_EQ(L.offset[m][p] % kExpertPartAlign, 0u) << m << " " << p;
      if (p + 1 < L.n_parts) {
        EXPECT_GE(L.offset[m][p + 1], L.offset[m][p] + L.bytes[m][p]);
      }
    }
  EXPECT_GE(L.total_bytes, expert_bytes(c, QuantFormat::fp8));
  EXPECT_LT(L.total_bytes, expert_bytes(c, QuantFormat::fp8) + 6 * kExpertPartAlign);
  const ExpertLayout z = expert_layout(c, QuantFormat::int4, true);
  EXPECT_EQ(z.n_parts, 3);
}

TEST(DevicePlan, Int4HoldsAbout3Point9TimesTheBf16SlotsAt18GiB) {
  const ModelConfig c = mixtral32();
  const DevicePlan b = plan_device_memory(offloaded(c, QuantFormat::bf16, 18 * kGiB));
  const DevicePlan q = plan_device_memory(offloaded(c, QuantFormat::int4, 18 * kGiB));
  EXPECT_EQ(b.slot_bytes, 3ull * 4096 * 14336 * 2);
  EXPECT_EQ(q.slot_bytes, expert_bytes(c, QuantFormat::int4));
  EXPECT_EQ(b.slot_budget_bytes, q.slot_budget_bytes);
  EXPECT_EQ(b.n_slots, static_cast<int>(b.slot_budget_bytes / b.slot_bytes));
  EXPECT_EQ(q.n_slots, static_cast<int>(q.slot_budget_bytes / q.slot_bytes));
  const double ratio = static_cast<double>(q.n_slots) / b.n_slots;
  EXPECT_GT(ratio, 3.7) << b.n_slots << " bf16 slots, " << q.n_slots << " int4 slots";
  EXPECT_LT(ratio, 4.0) << b.n_slots << " bf16 slots, " << q.n_slots << " int4 slots";
  // int8 and fp8 halve the bytes (plus their scales).
  const DevicePlan i8 = plan_device_memory(offloaded(c, QuantFormat::int8, 18 * kGiB));
  const DevicePlan f8 = plan_device_memory(offloaded(c, QuantFormat::fp8, 18 * kGiB));
  EXPECT_NEAR(static_cast<double>(i8.n_slots) / b.n_slots, 2.0, 0.1);
  EXPECT_NEAR(static_cast<double>(f8.n_slots) / b.n_slots, 2.0, 0.1);
}

TEST(DevicePlan, SlotsAreCappedAtEveryExpertAndCacheSlotsAreChecked) {
  const ModelConfig c = mixtral32();
  const DevicePlan all = plan_device_memory(offloaded(c, QuantFormat::int4, 200 * kGiB));
  EXPECT_EQ(all.n_slots, 32 * 8);
  DevicePlanInput in = offloaded(c, QuantFormat::bf16, 18 * kGiB);
  in.cache_slots = 40;
  EXPECT_EQ(plan_device_memory(in).n_slots, 40);
  in.cache_slots = 400;
  try {
    plan_device_memory(in);
    FAIL() << "400 bf16 slots fit in 18 GiB";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cache_slots = 400"), std::string::npos) << e.what();
  }
}

TEST(DevicePlan, TooSmallBudgetsSayWhatIsNeeded) {
  const ModelConfig c = mixtral32();
  try {
    plan_device_memory(offloaded(c, QuantFormat::bf16, 2 * kGiB));
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("needs at least"), std::string::npos) << m;
    EXPECT_NE(m.find("raise --gpu-mem-budget to at least"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  DevicePlanInput in = offloaded(c, QuantFormat::int4, 18 * kGiB);
  in.resident = true;  // 256 int4 experts (~21.7 GiB) do not fit in 18 GiB
  try {
    plan_device_memory(in);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs at least"), std::string::npos) << e.what();
  }
  in.budget_bytes = 40 * kGiB;
  const DevicePlan p = plan_device_memory(in);
  EXPECT_EQ(p.resident_expert_bytes, 256 * p.slot_bytes);
  EXPECT_EQ(p.min_budget_bytes, p.fixed_bytes + p.resident_expert_bytes);
}

// gate_up_layout: w3's parts right after w1's (one (2 x inter)-row matrix), every part
// kept whole and 16-byte aligned, no two overlapping, the same total; formats or shapes
// that cannot hold it keep the layout as it was.
TEST(DevicePlan, GateUpLayoutPutsW3RightAfterW1PartByPart) {
  const ModelConfig c = mixtral32();
  for (QuantFormat f : {QuantFormat::fp8, QuantFormat::int8, QuantFormat::int4}) {
    for (bool zp : {false, true}) {
      if (zp && f != QuantFormat::int4) continue;
      SCOPED_TRACE(std::string(quant_format_name(f)) + (zp ? " zero points" : ""));
      const ExpertLayout L = expert_layout(c, f, zp);
      EXPECT_FALSE(gate_up_adjacent(L));  // the host store's layout: w1's parts, then w3's
      const ExpertLayout D = gate_up_layout(L, c.intermediate_size);
      ASSERT_TRUE(gate_up_adjacent(D));
      EXPECT_EQ(D.total_bytes, L.total_bytes);
      EXPECT_EQ(D.n_parts, L.n_parts);
      std::vector<std::pair<uint64_t, uint64_t>> spans;
      for (int m = 0; m < 3; ++m)
        for (int p = 0; p < D.n_parts; ++p) {
          EXPECT_EQ(D.bytes[m][p], L.bytes[m][p]);
          EXPECT_EQ(D.offset[m][p] % kExpertPartAlign, 0u) << m << " " << p;
          EXPECT_EQ(D.offset[1][p], D.offset[0][p] + D.bytes[0][p]);
          spans.emplace_back(D.offset[m][p], D.offset[m][p] + D.bytes[m][p]);
        }
      std::sort(spans.begin(), spans.end());
      for (size_t i = 0; i < spans.size(); ++i) {
        EXPECT_LE(spans[i].second, D.total_bytes);
        if (i + 1 < spans.size()) {
          EXPECT_LE(spans[i].second, spans[i + 1].first) << "parts overlap";
        }
      }
      EXPECT_EQ(D.offset[0][0], 0u);
      EXPECT_EQ(D.offset[0][1], D.bytes[0][0] + D.bytes[1][0]);  // w1's scales after both value parts
    }
  }
  // bf16: nothing to do; fp8 with an intermediate size that splits a 128-row scale block.
  const ExpertLayout b = expert_layout(c, QuantFormat::bf16);
  EXPECT_FALSE(gate_up_adjacent(gate_up_layout(b, c.intermediate_size)));
  ModelConfig odd = c;
  odd.intermediate_size = 14336 + 64;
  const ExpertLayout f8 = expert_layout(odd, QuantFormat::fp8);
  const ExpertLayout same = gate_up_layout(f8, odd.intermediate_size);
  EXPECT_FALSE(gate_up_adjacent(same));
  EXPECT_EQ(same.offset[1][0], f8.offset[1][0]);
}

}  // namespace device_plan_test
}  // namespace moebench
