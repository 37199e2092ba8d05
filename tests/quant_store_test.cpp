// quant_store_test.cpp: the host store of quantised experts (CPU only, no GPU): the
// pinned tier holds, for every expert, exactly the bytes the CPU backend computes with
// (WeightSource::read_quant, what `:dtype=` and expert_dtype give) at the layout's
// offsets; the disk tier reads the same bytes from a make-model checkpoint in that
// format; a checkpoint in another format is refused in one line.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "common/error.h"
#include "engine/expert_host_store.h"
#include "engine/synth_checkpoint.h"
#include "test_util.h"

namespace moebench {
namespace quant_store_test {

const char* kW[3] = {"w1", "w3", "w2"};

// The bytes of expert (l, e) as the CPU backend gets them, in the layout.
std::vector<uint8_t> cpu_expert(const WeightSource& w, QuantFormat f, const ExpertLayout& L, int l, int e) {
  std::vector<uint8_t> out(L.total_bytes, 0);
  for (int m = 0; m < 3; ++m) {
    const QuantMatrix q = w.read_quant(tensor_spec(w.config(), names::expert(l, e, kW[m])), f);
    const std::vector<uint8_t>* part[3] = {&q.q, &q.scale, &q.zero};
    for (int p = 0; p < L.n_parts; ++p) std::memcpy(out.data() + L.offset[m][p], part[p]->data(), part[p]->size());
  }
  return out;
}

bool same_parts(const uint8_t* a, const std::vector<uint8_t>& b, const ExpertLayout& L) {
  for (int m = 0; m < 3; ++m)
    for (int p = 0; p < L.n_parts; ++p)
      if (std::memcmp(a + L.offset[m][p], b.data() + L.offset[m][p], L.bytes[m][p]) != 0) return false;
  return true;
}

TEST(QuantStore, PinnedHoldsTheCpuBackendsBytesForEachFormat) {
  for (QuantFormat f : {QuantFormat::fp8, QuantFormat::int8, QuantFormat::int4}) {
    SCOPED_TRACE(quant_format_name(f));
    auto w = WeightSource::open("synthetic:micro", 7);
    HostStoreOptions o;
    o.progress = 0;
    auto st = ExpertHostStore::pinned(w, aligned_host_allocator(), o, f);
    EXPECT_EQ(st->format(), f);
    EXPECT_EQ(st->expert_bytes(), expert_layout(w.config(), f).total_bytes);
    EXPECT_LT(st->expert_bytes(), expert_layout(w.config(), QuantFormat::bf16).total_bytes);
    for (int l = 0; l < st->n_layers(); ++l)
      for (int e = 0; e < st->n_experts(); ++e)
        EXPECT_TRUE(same_parts(reinterpret_cast<const uint8_t*>(st->expert(l, e)), cpu_expert(w, f, st->layout(), l, e),
                               st->layout()))
            << "layer " << l << " expert " << e;
  }
}

TEST(QuantStore, SyntheticDtypeModelsAndQuantisingOnLoadGiveTheSameBytes) {
  // `:dtype=int8` stores the experts quantised; expert_dtype=int8 on the bf16 model
  // quantises them on load: the CPU backend computes with the same bytes either way.
  auto stored = WeightSource::open("synthetic:micro:dtype=int8", 7);
  auto plain = WeightSource::open("synthetic:micro", 7);
  HostStoreOptions o;
  o.progress = 0;
  auto a = ExpertHostStore::pinned(stored, aligned_host_allocator(), o, QuantFormat::int8);
  auto b = ExpertHostStore::pinned(plain, aligned_host_allocator(), o, QuantFormat::int8);
  ASSERT_EQ(a->expert_bytes(), b->expert_bytes());
  EXPECT_EQ(std::memcmp(a->expert(1, 2), b->expert(1, 2), a->expert_bytes()), 0);
}

TEST(QuantStore, DiskReadsTheCheckpointsPartsAsThePinnedStoreHoldsThem) {
  for (QuantFormat f : {QuantFormat::fp8, QuantFormat::int8, QuantFormat::int4}) {
    SCOPED_TRACE(quant_format_name(f));
    test::TempDir dir;
    write_synthetic_checkpoint(preset_config("micro"), 7, DType::bf16, dir.str(), 4ULL << 30, f);
    auto w = WeightSource::checkpoint(dir.str());
    HostStoreOptions o;
    o.progress = 0;
    o.allow_page_cache = true;
    auto pinned = ExpertHostStore::pinned(w, aligned_host_allocator(), o, f);
    auto disk = ExpertHostStore::disk(w, o, f);
    const ExpertLayout& L = disk->layout();
    ASSERT_EQ(disk->expert_bytes(), pinned->expert_bytes());
    void* staging = std::aligned_alloc(ExpertHostStore::kStagingAlign, disk->staging_bytes());
    for (int l = 0; l < disk->n_layers(); ++l)
      for (int e = 0; e < disk->n_experts(); ++e) {
        const StagedExpert s = disk->read_expert(l, e, staging);
        const auto* want = reinterpret_cast<const uint8_t*>(pinned->expert(l, e));
        for (int m = 0; m < 3; ++m)
          for (int p = 0; p < L.n_parts; ++p)
            EXPECT_EQ(std::memcmp(static_cast<const uint8_t*>(staging) + s.part[m][p], want + L.offset[m][p], L.bytes[m][p]), 0)
                << "layer " << l << " expert " << e << " matrix " << m << " part " << p;
      }
    std::free(staging);
    // The same bytes as the synthetic model quantised on load.
    auto synth = ExpertHostStore::pinned(WeightSource::open("synthetic:micro", 7), aligned_host_allocator(), o, f);
    EXPECT_EQ(std::memcmp(synth->expert(0, 1), pinned->expert(0, 1), synth->expert_bytes()), 0);
  }
}

TEST(QuantStore, DiskRefusesACheckpointInAnotherFormat) {
  test::TempDir dir;
  write_synthetic_checkpoint(preset_config("micro"), 7, DType::bf16, dir.str());
  auto w = WeightSource::checkpoint(dir.str());
  try {
    ExpertHostStore::disk(w, {}, QuantFormat::int4);
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("expert_dtype=int4"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

}  // namespace quant_store_test
}  // namespace moebench
