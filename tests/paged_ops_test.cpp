// paged_ops_test.cpp: the CPU references of the paged-KV ops (engine/ops/paged_attention.cpp,
// paged_kv.cpp) against the contiguous-cache references they generalise: the same keys
// scattered over shuffled blocks give bit-identical attention, for prefill and decode rows
// of several sequences at once; rope_kv_store_paged is rope() + a copy to the named slots.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "engine/ops/ops.h"

namespace paged_ops_test {

using namespace moebench;

TEST(PagedOps, AttentionThroughShuffledBlocksEqualsContiguousCache) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int n_heads = 8, n_kv = 2, hd = 16, bs = 3;
  const std::vector<int> lens = {10, 23};  // two sequences' cache lengths
  const int width = 23 / bs + 1, n_blocks = 2 * width;
  std::vector<int32_t> perm(n_blocks);
  for (int i = 0; i < n_blocks; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  const size_t row = static_cast<size_t>(n_kv) * hd;
  std::vector<float> kpool(n_blocks * bs * row), vpool(kpool.size());
  std::vector<std::vector<float>> kc(2), vc(2);
  for (int s = 0; s < 2; ++s) {
    kc[s].resize(lens[s] * row);
    vc[s].resize(lens[s] * row);
    for (auto& x : kc[s]) x = nd(rng);
    for (auto& x : vc[s]) x = nd(rng);
    for (int t = 0; t < lens[s]; ++t) {
      const size_t slot = static_cast<size_t>(perm[s * width + t / bs]) * bs + t % bs;
      std::copy(kc[s].begin() + t * row, kc[s].begin() + (t + 1) * row, kpool.begin() + slot * row);
      std::copy(vc[s].begin() + t * row, vc[s].begin() + (t + 1) * row, vpool.begin() + slot * row);
    }
  }
  // rows: sequence 0's last 4 positions (a prefill chunk), then sequence 1's last position (decode)
  std::vector<int32_t> seq_row = {0, 0, 0, 0, 1}, pos = {6, 7, 8, 9, 22};
  const int m = 5;
  std::vector<float> q(m * n_heads * hd), out(q.size()), ref0(4 * n_heads * hd), ref1(n_heads * hd);
  for (auto& x : q) x = nd(rng);
  cpu::paged_attention(q.data(), kpool.data(), vpool.data(), perm.data(), width, seq_row.data(), pos.data(), out.data(),
                       m, n_heads, n_kv, hd, bs);
  cpu::attention(q.data(), kc[0].data(), vc[0].data(), ref0.data(), 4, 6, n_heads, n_kv, hd);
  cpu::attention(q.data() + 4 * n_heads * hd, kc[1].data(), vc[1].data(), ref1.data(), 1, 22, n_heads, n_kv, hd);
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + ref0.size()), ref0);
  EXPECT_EQ(std::vector<float>(out.begin() + ref0.size(), out.end()), ref1);
}

TEST(PagedOps, RopeKvStorePagedIsRopeThenCopyToSlots) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int m = 3, nh = 4, nkv = 2, hd = 8;
  const size_t row = nkv * hd;
  std::vector<float> q(m * nh * hd), k(m * row), v(m * row);
  for (auto* a : {&q, &k, &v})
    for (auto& x : *a) x = nd(rng);
  const std::vector<int32_t> pos = {0, 5, 9}, slot = {4, 0, 2};
  std::vector<float> q2 = q, k2 = k, kp(5 * row, -1.0f), vp(5 * row, -1.0f);
  cpu::rope_kv_store_paged(q.data(), k.data(), v.data(), pos.data(), slot.data(), kp.data(), vp.data(), m, nh, nkv, hd,
                           1e4f);
  cpu::rope(q2.data(), pos.data(), m, nh, hd, 1e4f);
  cpu::rope(k2.data(), pos.data(), m, nkv, hd, 1e4f);
  EXPECT_EQ(q, q2);
  for (int i = 0; i < m; ++i)
    for (size_t e = 0; e < row; ++e) {
      EXPECT_EQ(kp[slot[i] * row + e], k2[i * row + e]);
      EXPECT_EQ(vp[slot[i] * row + e], v[i * row + e]);
    }
  EXPECT_EQ(kp[1 * row], -1.0f) << "slot 1 was not named and must stay untouched";
}

}  // namespace paged_ops_test
