// workspace.cpp: see workspace.h.
#include "engine/cuda/workspace.h"

#include <algorithm>

#include "engine/cuda/arena.h"
#include "engine/cuda/ops.cuh"

namespace moebench::cuda {

Workspace::Workspace(DeviceArena& arena, const WorkspaceDims& d, bool pooled, int pool_tokens, size_t pool_attn_floats)
    : arena_(arena), d_(d), pooled_(pooled) {
  if (pooled_) allocate(std::max(1, pool_tokens), pool_attn_floats);
}

Workspace::~Workspace() { release(); }

std::vector<Workspace::Slot> Workspace::slots(const WorkspaceDims& d, ForwardBuffers& b, int m, size_t attn_floats) {
  const uint64_t M = static_cast<uint64_t>(m), P = M * d.top_k, H = d.hidden;
  const uint64_t rows = static_cast<uint64_t>(std::min(m, kLogitRows));
  auto f = [](auto*& p) { return reinterpret_cast<void**>(&p); };
  return {
      {"ws.tokens", f(b.tokens), M * 4},
      {"ws.pos", f(b.pos), M * 4},
      {"ws.x", f(b.x), M * H * 4},
      {"ws.h", f(b.h), M * H * 2},
      {"ws.q", f(b.q), M * d.q_dim * 4},
      {"ws.k", f(b.k), M * d.kv_dim * 4},
      {"ws.v", f(b.v), M * d.kv_dim * 4},
      {"ws.att", f(b.att), M * d.q_dim * 2},
      {"ws.attn_ws", f(b.attn_ws), std::max<uint64_t>(attn_floats, 1) * 4},
      {"ws.router_logits", f(b.router_logits), M * d.n_experts * 4},
      {"ws.pred_logits", f(b.pred_logits), static_cast<uint64_t>(d.n_experts) * 4},
      {"ws.ids", f(b.ids), P * 4},
      {"ws.wts", f(b.wts), P * 4},
      {"ws.perm", f(b.perm), P * 4},
      {"ws.inv", f(b.inv), P * 4},
      {"ws.offsets", f(b.offsets), (static_cast<uint64_t>(d.n_experts) + 1) * 4},
      {"ws.moe_h", f(b.moe_h), std::min<uint64_t>(P, 64) * d.inter * 2},  // fused decode only (<= 64 pairs)
      {"ws.moe_xin", f(b.moe_xin), P * H * 2},
      {"ws.moe_y", f(b.moe_y), P * H * 4},
      {"ws.moe_out", f(b.moe_out), M * H * 4},
      {"ws.swiglu", f(b.swiglu), swiglu_scratch_bytes(static_cast<int>(P), d.inter)},
      {"ws.logits", f(b.logits), rows * d.vocab * 4},
      {"ws.next", f(b.next), 4},
  };
}

uint64_t Workspace::bytes_for(const WorkspaceDims& d, int m, size_t attn_floats) {
  ForwardBuffers b;
  uint64_t total = 0;
  for (auto& s : slots(d, b, m, attn_floats)) total += (s.bytes + 255) / 256 * 256;
  return total;
}

void Workspace::allocate(int m, size_t attn_floats) {
  for (auto& s : slots(d_, b_, m, attn_floats)) {
    *s.field = arena_.alloc(s.bytes, s.name);
    live_.push_back(*s.field);
  }
  cap_m_ = m;
  cap_attn_ = attn_floats;
}

void Workspace::release() {
  for (auto it = live_.rbegin(); it != live_.rend(); ++it) arena_.free(*it);
  live_.clear();
  cap_m_ = 0;
  cap_attn_ = 0;
}

ForwardBuffers& Workspace::begin(int m, size_t attn_floats) {
  if (!pooled_) {
    allocate(m, attn_floats);
  } else if (m > cap_m_ || attn_floats > cap_attn_) {  // grow the pool (counted)
    const int nm = std::max(m, cap_m_);
    const size_t na = std::max(attn_floats, cap_attn_);
    release();
    allocate(nm, na);
  }
  return b_;
}

void Workspace::end() {
  if (!pooled_) release();
}

}  // namespace moebench::cuda
