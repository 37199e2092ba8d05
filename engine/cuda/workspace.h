// workspace.h: the device temporaries of one forward pass, and the `buffers` knob:
//   pooled — allocated once from the arena (sized at start-up for a decode step and for
//            a prefill chunk of `pool_tokens`), reused by every forward: zero arena
//            allocations in steady-state decode. A forward larger than the pool grows it
//            (counted like any allocation).
//   alloc  — every buffer allocated from the arena at the start of each forward and freed
//            at its end (the seed's behaviour: tensors made on every forward).
// Every allocation goes through the arena, so arena.alloc_count() counts them. Host C++.
#pragma once
#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moebench::cuda {

class DeviceArena;

struct WorkspaceDims {
  int hidden = 0, q_dim = 0, kv_dim = 0, inter = 0, n_experts = 0, top_k = 0, vocab = 0;
};

// Rows of lm_head logits computed at once when every token's logits are wanted.
constexpr int kLogitRows = 64;

// m = tokens of this forward; pairs = m * top_k. Shapes in the comments.
struct ForwardBuffers {
  int32_t* tokens = nullptr;        // (m)
  int32_t* pos = nullptr;           // (m)
  float* x = nullptr;               // (m, hidden) residual stream
  __nv_bfloat16* h = nullptr;       // (m, hidden) normed activations
  float* q = nullptr;               // (m, q_dim)
  float* k = nullptr;               // (m, kv_dim)
  float* v = nullptr;               // (m, kv_dim)
  __nv_bfloat16* att = nullptr;     // (m, q_dim)
  float* attn_ws = nullptr;         // attention_workspace_floats(m, pos0, ...) or paged_attention_workspace_floats(...)
  float* router_logits = nullptr;   // (m, n_experts)
  float* pred_logits = nullptr;     // (n_experts) decode: the experts scored on the layer's input (ops.cuh ExpertPredict)
  int32_t* ids = nullptr;           // (m, top_k)
  float* wts = nullptr;             // (m, top_k)
  int32_t* perm = nullptr;          // (pairs) sorted row -> pair
  int32_t* inv = nullptr;           // (pairs) pair -> sorted row
  int32_t* offsets = nullptr;       // (n_experts + 1)
  __nv_bfloat16* moe_h = nullptr;   // (pairs, inter) fused decode's silu(g)*u
  __nv_bfloat16* moe_xin = nullptr; // (pairs, hidden) gathered expert inputs
  float* moe_y = nullptr;           // (pairs, hidden) expert outputs
  float* moe_out = nullptr;         // (m, hidden) combined MoE output
  void* swiglu = nullptr;           // swiglu_scratch_bytes(pairs, inter)
  float* logits = nullptr;          // (min(m, kLogitRows), vocab)
  int32_t* next = nullptr;          // (1) device argmax
};

class Workspace {
 public:
  Workspace(DeviceArena& arena, const WorkspaceDims& d, bool pooled, int pool_tokens, size_t pool_attn_floats);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // Buffers for a forward of m tokens needing attn_floats of attention workspace.
  ForwardBuffers& begin(int m, size_t attn_floats);
  // End of the forward (the stream must be synchronised): alloc mode frees everything.
  void end();
  bool pooled() const { return pooled_; }
  // Arena bytes (after alignment) of the buffers of an m-token forward.
  static uint64_t bytes_for(const WorkspaceDims& d, int m, size_t attn_floats);

 private:
  struct Slot {
    const char* name;
    void** field;
    uint64_t bytes;
  };
  static std::vector<Slot> slots(const WorkspaceDims& d, ForwardBuffers& b, int m, size_t attn_floats);
  void allocate(int m, size_t attn_floats);
  void release();

  DeviceArena& arena_;
  WorkspaceDims d_;
  bool pooled_;
  ForwardBuffers b_;
  std::vector<void*> live_;
  int cap_m_ = 0;
  size_t cap_attn_ = 0;
};

}  // namespace moebench::cuda
