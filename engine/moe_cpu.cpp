// moe_cpu.cpp: the CPU implementation of every MoE strategy (see moe_strategy.h).
// Experts run through cpu::swiglu_expert; strategies differ in how tokens reach the
// experts (dispatch), how weighted outputs are summed (combine) and where buffers
// come from (buffers). Each expert row is computed with the same dot products in
// every strategy, so strategies differ only in the order of the final sums.
#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "engine/ops/ops.h"
#include "engine/moe_strategy.h"

namespace moebench {

const std::vector<MoeVariantInfo>& moe_variants() {
  static const std::vector<MoeVariantInfo> v = {
      {"dispatch", "serial", "loop over every expert, select its tokens with a mask, run it (the original code)"},
      {"dispatch", "grouped", "group tokens by expert once (counting sort), one GEMM per active expert on a contiguous block"},
      {"dispatch", "fused", "decode: each token's top-k experts in one pass; prefill: sorted grouped GEMM with the combine inside"},
      {"combine", "loop", "apply each token-expert weight one at a time"},
      {"combine", "index_add", "one vectorised scatter-add of weighted expert rows"},
      {"combine", "fused", "weights applied inside the dispatch as expert rows are produced"},
      {"buffers", "alloc", "allocate every buffer on each forward pass"},
      {"buffers", "pooled", "pre-allocated workspace reused across passes (no steady-state allocations)"},
  };
  return v;
}

void validate_strategy(const MoeStrategy& s) {
  auto check = [](const char* axis, const std::string& v) {
    std::string all;
    for (auto& i : moe_variants()) {
      if (i.axis != axis) continue;
      if (i.name == v) return;
      all += (all.empty() ? "" : "|") + i.name;
    }
    fail("MoE {} '{}' is not one of {}", axis, v, all);
  };
  check("dispatch", s.dispatch);
  check("combine", s.combine);
  check("buffers", s.buffers);
}

namespace {

// Sizes a workspace vector; pooled keeps capacity, alloc starts from nothing.
template <typename T>
void need(std::vector<T>& v, size_t n, bool pooled, int64_t& allocs) {
  if (!pooled) {
    std::vector<T>().swap(v);
    v.resize(n);
    ++allocs;
    return;
  }
  if (v.capacity() < n) ++allocs;
  v.resize(n);
}

void run_expert_rows(const ExpertWeights& ew, const float* x, const int32_t* rows, int m, int top_k, int hidden,
                     int inter, MoeCpuWorkspace& ws, bool pooled) {
  need(ws.xin, static_cast<size_t>(m) * hidden, pooled, ws.allocations);
  need(ws.yout, static_cast<size_t>(m) * hidden, pooled, ws.allocations);
  need(ws.scratch, static_cast<size_t>(m) * 2 * inter, pooled, ws.allocations);
  for (int i = 0; i < m; ++i)
    std::memcpy(&ws.xin[static_cast<size_t>(i) * hidden], x + static_cast<size_t>(rows[i] / top_k) * hidden,
                sizeof(float) * hidden);
  cpu::swiglu_expert(ws.xin.data(), static_cast<const float*>(ew.w1), static_cast<const float*>(ew.w3),
                     static_cast<const float*>(ew.w2), ws.yout.data(), ws.scratch.data(), m, hidden, inter);
}

}  // namespace

void moe_cpu(const MoeStrategy& s, const float* x, const int32_t* ids, const float* weights,
             const ExpertWeights* experts, float* out, int n, int hidden, int inter, int n_experts, int top_k,
             MoeCpuWorkspace& ws) {
  const bool pooled = s.buffers == "pooled";
  const int R = n * top_k;  // (token, slot) rows
  std::fill(out, out + static_cast<size_t>(n) * hidden, 0.0f);

  if (s.dispatch == "fused" && n == 1) {
    // Decode: the token's top-k experts back to back, weights applied as rows land. In the
    // order the same token's rows land in a pass of several tokens (below): by expert for
    // the fused combine, by slot for the others. So a token's sums have the same bits
    // alone as batched with other sequences (CpuModel::forward_batch).
    int32_t order[64];
    if (top_k > 64) fail("moe_cpu: top_k {} above 64", top_k);
    for (int j = 0; j < top_k; ++j) order[j] = j;
    if (s.combine == "fused") std::stable_sort(order, order + top_k, [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
    for (int jj = 0; jj < top_k; ++jj) {
      const int j = order[jj];
      int32_t row = j;
      run_expert_rows(experts[ids[j]], x, &row, 1, top_k, hidden, inter, ws, pooled);
      const float w = weights[j];
      for (int d = 0; d < hidden; ++d) out[d] += w * ws.yout[d];
    }
    return;
  }

  // Rows in expert order: serial scans a mask per expert; grouped/fused sort once.
  need(ws.order, static_cast<size_t>(R), pooled, ws.allocations);
  need(ws.offsets, static_cast<size_t>(n_experts) + 1, pooled, ws.allocations);
  const bool keep_y = s.combine != "fused";
  if (keep_y) need(ws.y, static_cast<size_t>(R) * hidden, pooled, ws.allocations);

  auto emit = [&](const int32_t* rows, int m) {
    // ws.yout holds m expert rows; store them (loop/index_add) or combine them now (fused).
    for (int i = 0; i < m; ++i) {
      const float* yr = &ws.yout[static_cast<size_t>(i) * hidden];
      if (keep_y) {
        std::memcpy(&ws.y[static_cast<size_t>(rows[i]) * hidden], yr, sizeof(float) * hidden);
      } else {
        float* o = out + static_cast<size_t>(rows[i] / top_k) * hidden;
        const float w = weights[rows[i]];
        for (int d = 0; d < hidden; ++d) o[d] += w * yr[d];
      }
    }
  };

  if (s.dispatch == "serial") {
    std::vector<int32_t> rows;  // the mask's selected rows (allocated per expert: the original code)
    for (int e = 0; e < n_experts; ++e) {
      rows.clear();
      for (int r = 0; r < R; ++r)
        if (ids[r] == e) rows.push_back(r);
      if (rows.empty()) continue;
      run_expert_rows(experts[e], x, rows.data(), static_cast<int>(rows.size()), top_k, hidden, inter, ws, pooled);
      emit(rows.data(), static_cast<int>(rows.size()));
    }
  } else {  // grouped, and fused prefill: counting sort by expert, contiguous blocks
    std::fill(ws.offsets.begin(), ws.offsets.end(), 0);
    for (int r = 0; r < R; ++r) ++ws.offsets[ids[r] + 1];
    for (int e = 0; e < n_experts; ++e) ws.offsets[e + 1] += ws.offsets[e];
    std::vector<int32_t> cursor(ws.offsets.begin(), ws.offsets.end() - 1);
    for (int r = 0; r < R; ++r) ws.order[cursor[ids[r]]++] = r;
    for (int e = 0; e < n_experts; ++e) {
      const int b = ws.offsets[e], m = ws.offsets[e + 1] - b;
      if (m == 0) continue;
      run_expert_rows(experts[e], x, &ws.order[b], m, top_k, hidden, inter, ws, pooled);
      emit(&ws.order[b], m);
    }
  }

  if (s.combine == "loop") {
    // One token-expert weight at a time, in (token, slot) order.
    for (int t = 0; t < n; ++t)
      for (int j = 0; j < top_k; ++j) {
        const int r = t * top_k + j;
        const float w = weights[r];
        const float* yr = &ws.y[static_cast<size_t>(r) * hidden];
        float* o = out + static_cast<size_t>(t) * hidden;
        for (int d = 0; d < hidden; ++d) o[d] += w * yr[d];
      }
  } else if (s.combine == "index_add") {
    // out.index_add_(0, token_of_row, y * w): one pass over all rows, vectorised over hidden.
#pragma omp parallel for if (static_cast<long>(n) * hidden > (1L << 16))
    for (int t = 0; t < n; ++t) {
      float* o = out + static_cast<size_t>(t) * hidden;
      for (int j = 0; j < top_k; ++j) {
        const float w = weights[t * top_k + j];
        const float* yr = &ws.y[static_cast<size_t>(t * top_k + j) * hidden];
#pragma omp simd
        for (int d = 0; d < hidden; ++d) o[d] += w * yr[d];
      }
    }
  }
  if (!pooled) {  // alloc: nothing survives the pass
    MoeCpuWorkspace fresh;
    fresh.allocations = ws.allocations;
    ws = std::move(fresh);
  }
}

}  // namespace moebench
