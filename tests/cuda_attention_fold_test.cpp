// cuda_attention_fold_test.cpp: the decode attention launch with the work of its
// neighbours folded in (decode_attention_folded: the new token's RoPE and KV store, and/or
// the key splits merged by the last split of each block of heads instead of a merge
// kernel) against the launches it replaces, rope_kv_store_paged then decode_attention with
// its merge kernel: the attention output and both pools bit for bit; the attention against
// the fp32 CPU paged_attention on the device's rotated q and bf16 pools within the bf16
// output's tolerance, and the device's RoPE and store against the CPU's within their
// rounding. Mixtral's heads (32 over 8, head_dim 128), groups of 2, 3 and 8 heads and one
// head per KV head, from one key to several splits' worth, one sequence on the contiguous
// cache seen as one block and two sequences on scrambled block tables of 16-key blocks;
// the folded launch also with 1, 2, 3 and 4 query heads a block where they divide the group
// (MOEBENCH_ATTN_HEADS_PER_BLOCK), the same bits. Skipped, with a message, without a GPU.
#include <gtest/gtest.h>

#if MOEBENCH_HAVE_CUDA
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/arena.h"
#include "engine/cuda/check.cuh"
#include "engine/cuda/decode_attention.h"
#include "engine/cuda/device.h"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/dtype.h"
#include "engine/ops/ops.h"
#include "tests/device_copy.h"
#include "tests/paged_steps.h"

namespace cuda_attention_fold_test {

using namespace moebench;
using test::download;
using test::upload;

namespace {

struct Shape {
  int heads, kv, hd;
};

TEST(CudaAttentionFold, RopeAndMergeInsideDecodeAttentionMatchTheLaunchesTheyReplace) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA attention fold tests skipped";
  std::mt19937 rng(71);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int max_len = 1024;
  const float theta = 1e6f;
  for (const Shape sh : {Shape{32, 8, 128}, Shape{8, 4, 64}, Shape{12, 4, 32}, Shape{32, 4, 128}, Shape{8, 8, 64}})
    for (const int bs : {max_len, 16})
      for (const int len : {1, 50, 64, 65, 178, 300, 1000})
        for (const bool split : {false, true})
          for (const bool rope : {false, true})
            for (const bool merge : {false, true})
              for (const int hpb : {0, 1, 2, 3, 4}) {  // MOEBENCH_ATTN_HEADS_PER_BLOCK for the folded launch (0: by shape)
              if (!rope && !merge && hpb == 0) continue;  // that is decode_attention itself
              if (hpb > 0 && (sh.heads / sh.kv) % hpb != 0) continue;  // not taken: the shape's own
              SCOPED_TRACE("heads " + std::to_string(sh.heads) + "/" + std::to_string(sh.kv) + " head_dim " +
                           std::to_string(sh.hd) + " block " + std::to_string(bs) + " len " + std::to_string(len) +
                           (split ? " split" : " unsplit") + (rope ? " rope" : "") + (merge ? " merge" : "") +
                           " heads a block " + std::to_string(hpb));
              const int hd = sh.hd, width = max_len / bs, m = bs == max_len ? 1 : 2;
              const auto& [table, pos, seq_row, slot] = paged_steps(m, width, bs, len, rng);
              const size_t nq = static_cast<size_t>(m) * sh.heads * hd, nk = static_cast<size_t>(sh.kv) * hd;
              const size_t pool = static_cast<size_t>(m) * max_len * nk;
              std::vector<float> q(nq), k(m * nk), v(m * nk);
              for (auto* vec : {&q, &k, &v})
                for (auto& x : *vec) x = 2 * nd(rng);
              std::vector<uint16_t> kpool(pool), vpool(pool);
              for (auto* vec : {&kpool, &vpool})
                for (auto& x : *vec) x = f32_to_bf16(nd(rng));

              cuda::DeviceArena arena(64ull << 20, "attention fold test");
              float *q1 = upload(arena, q), *q2 = upload(arena, q), *k1 = upload(arena, k), *k2 = upload(arena, k);
              const float* vd = upload(arena, v);
              auto bf = [&](const std::vector<uint16_t>& h) { return reinterpret_cast<__nv_bfloat16*>(upload(arena, h)); };
              __nv_bfloat16 *kp1 = bf(kpool), *vp1 = bf(vpool), *kp2 = bf(kpool), *vp2 = bf(vpool);
              const int32_t *td = upload(arena, table), *pd = upload(arena, pos), *sd = upload(arena, seq_row),
                            *sl = upload(arena, slot);
              const size_t ws_n = cuda::paged_attention_workspace_floats(m, sh.heads, sh.kv, hd, max_len);
              float* ws = split && ws_n ? arena.alloc_n<float>(ws_n, "workspace") : nullptr;
              if (ws) CUDA_CHECK(cudaMemset(ws, 0xff, ws_n * sizeof(float)));  // NaN: an unwritten partial shows
              auto* out1 = arena.alloc_n<__nv_bfloat16>(nq, "out");
              auto* out2 = arena.alloc_n<__nv_bfloat16>(nq, "out folded");
              ASSERT_TRUE(cuda::decode_attention_supported(sh.heads, sh.kv, hd, kp2, vp2));

              // The launches replaced: RoPE + store, then the attention with its merge kernel.
              cuda::rope_kv_store_paged(q1, k1, vd, pd, sl, kp1, vp1, m, sh.heads, sh.kv, hd, theta, nullptr);
              cuda::decode_attention_folded(q1, nullptr, nullptr, theta, kp1, vp1, td, width, sd, pd, out1, m, sh.heads,
                                            sh.kv, hd, bs, ws, false, false, nullptr);
              if (!rope) cuda::rope_kv_store_paged(q2, k2, vd, pd, sl, kp2, vp2, m, sh.heads, sh.kv, hd, theta, nullptr);
              {
                const cuda::ScopedSwitch heads(cuda::set_attention_heads_per_block, hpb);
                cuda::decode_attention_folded(q2, k2, vd, theta, kp2, vp2, td, width, sd, pd, out2, m, sh.heads,
                                              sh.kv, hd, bs, ws, rope, merge, nullptr);
              }
              auto down = [](const auto* d, size_t count) {
                return download(reinterpret_cast<const uint16_t*>(d), count);
              };
              const std::vector<uint16_t> o1 = down(out1, nq), o2 = down(out2, nq), kp = down(kp2, pool);
              EXPECT_EQ(o1, o2) << "attention output";
              EXPECT_EQ(down(kp1, pool), kp) << "key pool";
              EXPECT_EQ(down(vp1, pool), down(vp2, pool)) << "value pool";
              EXPECT_NE(kp, kpool) << "the new key was not stored";

              // The CPU reference of the attention on the device's own inputs: q as the launches
              // replaced rotated it and the pools as they stored them (bit for bit the folded
              // launch's, checked above). A CPU RoPE instead would move a new key by a bf16 step
              // now and then (the device's sin/cos), and a key with much of the weight moves the
              // output by more than any attention tolerance; RoPE itself is checked against the
              // CPU's apart, below, within what its rounding allows.
              const std::vector<float> qdev = download(q1, nq);
              const std::vector<uint16_t> vp = down(vp2, pool);
              std::vector<float> kf(pool), vf(pool), ref(nq);
              for (size_t e = 0; e < pool; ++e) kf[e] = bf16_to_f32(kp[e]), vf[e] = bf16_to_f32(vp[e]);
              cpu::paged_attention(qdev.data(), kf.data(), vf.data(), table.data(), width, seq_row.data(), pos.data(),
                                   ref.data(), m, sh.heads, sh.kv, hd, bs);
              size_t bad = 0;
              for (size_t e = 0; e < nq; ++e) {
                const double got = bf16_to_f32(o2[e]);
                const double tol = 2e-3 + std::fabs(ref[e]) / 128;  // the output rounded to bf16; fp32 sums reordered
                if (!(std::fabs(got - ref[e]) <= tol) && bad++ < 5)
                  ADD_FAILURE() << "element " << e << ": got " << got << ", CPU reference " << ref[e];
              }
              EXPECT_EQ(bad, 0u);
              // RoPE: the device's q and new keys against the CPU's on the same projections.
              std::vector<float> qr = q, kr(pool, 0.0f), vr(pool, 0.0f);
              cpu::rope_kv_store_paged(qr.data(), k.data(), v.data(), pos.data(), slot.data(), kr.data(), vr.data(), m,
                                       sh.heads, sh.kv, hd, theta);
              size_t off = 0;
              for (size_t e = 0; e < nq; ++e)
                if (!(std::fabs(qdev[e] - qr[e]) <= 2e-3 + 1e-4 * std::fabs(qr[e])) && off++ < 5)
                  ADD_FAILURE() << "rotated q " << e << ": device " << qdev[e] << ", CPU " << qr[e];
              for (int i = 0; i < m; ++i)
                for (size_t e = 0; e < nk; ++e) {
                  const size_t at = static_cast<size_t>(slot[i]) * nk + e;
                  const double want = kr[at];  // a bf16 step of the CPU's value, and its sin/cos
                  if (!(std::fabs(kf[at] - want) <= 2e-3 + std::fabs(want) / 128) && off++ < 5)
                    ADD_FAILURE() << "stored key " << at << ": device " << kf[at] << ", CPU " << want;
                  if (vf[at] != bf16_to_f32(f32_to_bf16(vr[at])) && off++ < 5)
                    ADD_FAILURE() << "stored value " << at << ": device " << vf[at] << ", CPU " << vr[at];
                }
              EXPECT_EQ(off, 0u);
            }
}

// The count of heads a block by shape (no GPU needed).
TEST(CudaAttentionFold, HeadsPerBlockByShape) {
  EXPECT_EQ(cuda::decode_attention_heads_per_block(32, 8), 4);  // Mixtral: the whole group
  EXPECT_EQ(cuda::decode_attention_heads_per_block(12, 4), 3);
  EXPECT_EQ(cuda::decode_attention_heads_per_block(32, 4), 1);  // Qwen3-30B-A3B: one head a block
  EXPECT_EQ(cuda::decode_attention_heads_per_block(12, 2), 6);
  EXPECT_EQ(cuda::decode_attention_heads_per_block(16, 16), 1);
}

TEST(CudaAttentionFold, RopeInsideAttentionNeedsTheProjections) {
  if (!cuda::gpu_available()) GTEST_SKIP() << "no GPU present: CUDA attention fold tests skipped";
  cuda::DeviceArena arena(1ull << 20, "attention fold refusal");
  const std::vector<int32_t> zero{0};
  const int32_t* z = upload(arena, zero);
  float* q = arena.alloc_n<float>(32 * 128, "q");
  auto* pool = arena.alloc_n<__nv_bfloat16>(8 * 128, "pool");
  auto* out = arena.alloc_n<__nv_bfloat16>(32 * 128, "out");
  try {
    cuda::decode_attention_folded(q, nullptr, nullptr, 1e6f, pool, pool, z, 1, z, z, out, 1, 32, 8, 128, 1, nullptr,
                                  true, false, nullptr);
    FAIL() << "RoPE in the launch without the key and value projections was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("projections"), std::string::npos) << e.what();
  }
}

}  // namespace

}  // namespace cuda_attention_fold_test

#endif  // MOEBENCH_HAVE_CUDA
