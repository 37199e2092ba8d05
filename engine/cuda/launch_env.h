// launch_env.h: the launch knobs of the decode kernels that the environment sets, for
// measuring one build several ways (none changes what is computed, only how the work is
// laid out over the GPU or when the next kernel may start):
//   MOEBENCH_PDL             programmatic dependent launch (pdl.h): 1 (unset) or 0;
//   MOEBENCH_GRAPH_PDL       the same inside captured CUDA graphs (decode steps): 1
//                            (unset: programmatic edges) or 0 (full dependencies);
//   MOEBENCH_STEP_GRAPH      single-sequence decode steps (forward_argmax) replayed from
//                            CUDA graphs (cuda_model_graph.cpp): 1 (unset) or 0;
//   MOEBENCH_GEMV_PREFETCH   the one-row GEMV's default shape prefetches that many
//                            iterations ahead (ops.cuh GemvShape): 0 (unset), 2 or 4;
//   MOEBENCH_GEMV_ROWS       rows per warp of the one-row GEMV's default shape up to 16384
//                            rows (o_proj, not the lm_head): 0 (unset: the shape table's
//                            choice), 1, 2 or 4;
//   MOEBENCH_QKV_ROWS        the same for decode's fused norm + q/k/v launch;
//   MOEBENCH_QKV_PREFETCH_KB how much of each of its rows that launch asks L2 for before
//                            its wait: 2 (unset), 4 or 8 KiB;
//   MOEBENCH_L2_PREFETCH_WARPS warps per block of the L2 prefetch kernel (l2_prefetch.h):
//                            4 (unset) or 1 (the requests spread over 4x the SMs);
//   MOEBENCH_GATEUP_ROWS     rows of w1 (and of w3) per warp of the fused MoE gate/up
//                            kernel: 0 (unset: 2 from 1056 rows on, else 1), 1 or 2;
//   MOEBENCH_DOWN_ROWS       rows of w2 per warp of the grouped MoE down kernel: 0 (unset:
//                            2 from 2112 rows on, else 1), 1 or 2;
//   MOEBENCH_DOWN_PRELOAD    the grouped MoE down kernel's warps load their first chunks of
//                            w2 before the wait: 0 (unset) or 1;
//   MOEBENCH_DOWN_TRIGGER    where the grouped MoE down kernel lets the next kernel's
//                            blocks start: 0 (unset: once its dot products are done) or 1
//                            (right after its wait);
//   MOEBENCH_ATTN_MERGE_HERE decode attention's key splits merged by the last split of each
//                            block of heads to finish (a head per warp) instead of by a
//                            merge kernel: 0 (unset) or 1;
//   MOEBENCH_ROPE_IN_ATTENTION the single-sequence decode step rotates q and k and stores the
//                            new key and value inside the decode attention launch (models
//                            without q/k bias or norm) instead of a RoPE + store launch
//                            before it: 1 (unset) or 0;
//   MOEBENCH_OPROJ_ROUTER    the single-sequence decode step runs o_proj and the MoE
//                            block's norm + router in one launch (o_proj_router.h: the last
//                            o_proj block to finish takes the router) instead of two: 0
//                            (unset) or 1;
//   MOEBENCH_SIDE_PREFETCH   the single-sequence decode step's side-stream L2 prefetch of
//                            o_proj's weights (and the router's norm and gate) during
//                            attention: 1 (unset) or 0 (none);
//   MOEBENCH_OPROJ_STAGED    the single-sequence decode step's o_proj with its weights staged
//                            in shared memory during attention (gemv_staged.h): unset (by
//                            shape), 0, 1 or 2 (below);
//   MOEBENCH_EXPERT_PREDICT_BYTES the single-sequence decode step scores the experts on the
//                            layer's input in its norm + q/k/v launch, and L2 is asked for
//                            that many bytes of every bf16 gate/up block's w1 and w3 ranges
//                            of the guessed expert (ops.cuh ExpertPredict): 8192 (unset), 0
//                            (no scores, no prefetch), 4096, 16384, 32768 or 65536;
//   MOEBENCH_EXPERT_PREDICT_AT who asks for those bytes: 1 (unset) the side stream right after
//                            its o_proj prefetch (for every block range of the expert ranked
//                            first; resident experts), 0 the gate/up blocks before their
//                            wait, 2 both;
//   MOEBENCH_EXPERT_PREDICT_QUANT_BYTES the same for quantised experts, from the side stream:
//                            that many bytes of each w1 and w3 row the gate/up launch's
//                            resident warps take first (whole rows where it is at least a
//                            row): 1024 (unset), 0 (none), 512, 2048 or 4096;
//   MOEBENCH_GATEUP_ROUTER   the single-sequence decode step's quantised gate/up launch
//                            takes the MoE block's norm + router itself (every block;
//                            quant_gemv.h quant_moe_gemv_gate_up_router) instead of a
//                            one-block launch before it: 0 (unset) or 1;
//   MOEBENCH_QUANT_MOE_PERSISTENT the single-sequence decode step's quantised MoE block as
//                            one persistent launch (quant_gemv.h quant_moe_block_persistent):
//                            0 (unset) no, 1 the gate/up and the down + combine, 2 the norm +
//                            router too (one block, the others waiting at a grid barrier), 3
//                            the norm + router in every block;
//   MOEBENCH_QUANT_DOWN_TRIGGER where the quantised down + combine launch (the exact and
//                            warp-row kernels) lets the next kernel's blocks start: 1 (unset:
//                            as its warps finish their items) or 0 (right after its wait).
// Each is read once; a value outside its list is an Error naming the variable. Host C++.
#pragma once
#include <atomic>
#include <cstddef>
#include <initializer_list>
#include <span>

namespace moebench::cuda {

// The integer value of environment variable `name`, one of `allowed` (a list or a span);
// `unset` when unset or empty.
int env_choice(const char* name, std::initializer_list<int> allowed, int unset);
int env_choice(const char* name, std::span<const int> allowed, int unset);

// An integer setting of the process: its environment variable (one of `allowed`; `unset`
// when unset or empty) read on first use, until a test sets a value of its own (set: any
// value >= 0, not checked against `allowed`) or hands it back to the environment (set with
// a negative value: read again on next use). `allowed` must outlive the setting (a static
// array).
class EnvChoice {
 public:
  template <std::size_t N>
  constexpr EnvChoice(const char* name, const int (&allowed)[N], int unset)
      : name_(name), allowed_(allowed, N), unset_(unset) {}
  int get();
  void set(int value) { value_.store(value < 0 ? -1 : value, std::memory_order_relaxed); }

 private:
  const char* name_;
  std::span<const int> allowed_;
  int unset_;
  std::atomic<int> value_{-1};  // -1: not read yet
};

inline constexpr int kEnvOffOn[] = {0, 1};

// A 0/1 switch of the process (an EnvChoice of 0 and 1): its environment variable
// (`fallback` when unset or empty) read on first use, until a test sets it (set) or hands
// it back to the environment (reset: read again on next use).
class EnvSwitch {
 public:
  constexpr EnvSwitch(const char* name, int fallback) : choice_(name, kEnvOffOn, fallback) {}
  bool get() { return choice_.get() == 1; }
  void set(bool on) { choice_.set(on ? 1 : 0); }
  void reset() { choice_.set(-1); }
  // The tests' three-way setter: 1 on, 0 off, negative the environment again.
  void force(int on) { on < 0 ? reset() : set(on != 0); }

 private:
  EnvChoice choice_;
};

int gemv_prefetch_from_env();     // MOEBENCH_GEMV_PREFETCH
int gemv_rows_from_env();         // MOEBENCH_GEMV_ROWS (0: the table's)
int qkv_rows_from_env();          // MOEBENCH_QKV_ROWS (0: the table's)
unsigned qkv_prefetch_bytes_from_env();  // MOEBENCH_QKV_PREFETCH_KB, in bytes
bool down_early_trigger_from_env();      // MOEBENCH_DOWN_TRIGGER == 1
bool step_graph_from_env();              // MOEBENCH_STEP_GRAPH != 0
int gate_up_rows_from_env();             // MOEBENCH_GATEUP_ROWS (0: by size)
int down_rows_from_env();                // MOEBENCH_DOWN_ROWS (0: by size)
bool down_preload_from_env();            // MOEBENCH_DOWN_PRELOAD == 1
int l2_prefetch_warps_from_env();        // MOEBENCH_L2_PREFETCH_WARPS
bool attention_merge_in_last_split_from_env();  // MOEBENCH_ATTN_MERGE_HERE == 1
bool rope_in_attention_from_env();       // MOEBENCH_ROPE_IN_ATTENTION != 0
// MOEBENCH_ATTN_HEADS_PER_BLOCK: the query heads a decode attention block takes (1, 2 or 4;
// 0 or unset: by shape, decode_attention_heads_per_block), or what
// set_attention_heads_per_block said last (tests: any count, 0 by shape; negative: the
// environment's again, read only then). A count that does not divide a model's group of
// heads per KV head is not taken.
int attention_heads_per_block_setting();
void set_attention_heads_per_block(int hpb);
bool side_prefetch_from_env();           // MOEBENCH_SIDE_PREFETCH != 0
// Whether decode takes o_proj with the norm + router in one launch: MOEBENCH_OPROJ_ROUTER,
// or what set_o_proj_router said last (tests: 1 on, 0 off, -1 the environment again).
bool o_proj_router_on();
void set_o_proj_router(int on);
// Whether decode's quantised gate/up takes the norm + router: MOEBENCH_GATEUP_ROUTER, or
// what set_gate_up_router said last (tests: 1 on, 0 off, -1 the environment again).
bool gate_up_router_on();
void set_gate_up_router(int on);
// MOEBENCH_QUANT_MOE_PERSISTENT (0 .. 3), or what set_quant_moe_persistent said last
// (tests: 0 .. 3; -1 the environment again).
int quant_moe_persistent();
void set_quant_moe_persistent(int level);
// MOEBENCH_OPROJ_STAGED: 0 the one-row GEMV; 1 the single-sequence decode step's o_proj
// takes gemv_staged (its weights staged in shared memory before its wait) and the split
// merge launch before it lets its blocks start at once (AttentionHandoff 1); 2 the
// attention launch too; unset (-1): 2 where the grid's shared memory holds the whole
// matrix (gemv_staged_holds_all: Qwen3-30B-A3B's o_proj), else 0 (Mixtral's: a tail of
// blocks waiting for attention's SMs costs what the staging saves, docs/PERFORMANCE.md).
// o_proj_staged_level: that, or what set_o_proj_staged said last (tests: -1 by shape, 0,
// 1, 2; -2 the environment again).
int o_proj_staged_from_env();
int o_proj_staged_level();
void set_o_proj_staged(int level);
// Whether the quantised down + combine launch lets the next kernel's blocks start only as its
// warps finish (MOEBENCH_QUANT_DOWN_TRIGGER unset or 1; 0: right after its wait), or what set_quant_down_trigger said last
// (tests: 0 or 1; -1: the environment's again).
bool quant_down_late_trigger();
void set_quant_down_trigger(int on);
// MOEBENCH_EXPERT_PREDICT_BYTES, or what set_expert_predict_bytes said last (tests: the
// bytes, one of the environment's values; negative: the environment's again).
unsigned expert_predict_bytes();
void set_expert_predict_bytes(int bytes);
int expert_predict_at_from_env();  // MOEBENCH_EXPERT_PREDICT_AT
// MOEBENCH_EXPERT_PREDICT_QUANT_BYTES: for quantised experts, the bytes L2 is asked for of
// each w1 and w3 row the gate/up launch's resident warps take first (whole rows where it is
// at least a row), or what set_expert_predict_quant_bytes said last (tests: the bytes, a
// multiple of 16; negative: the environment's again).
unsigned expert_predict_quant_bytes();
void set_expert_predict_quant_bytes(int bytes);

// One of the setters above for one scope: set(value) now and set(reset) when the scope
// ends, also when an exception or a failed test assertion leaves it, so that a setting
// never carries into the next test. reset is the setter's "the environment's again" value
// (-1 for all but set_o_proj_staged, whose is -2).
class ScopedSwitch {
 public:
  ScopedSwitch(void (*set)(int), int value, int reset = -1) : set_(set), reset_(reset) { set_(value); }
  ~ScopedSwitch() { set_(reset_); }
  ScopedSwitch(const ScopedSwitch&) = delete;
  ScopedSwitch& operator=(const ScopedSwitch&) = delete;

 private:
  void (*set_)(int);
  int reset_;
};

}  // namespace moebench::cuda
