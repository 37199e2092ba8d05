// env_switches.cpp: see env_switches.h. Alphabetical; the values list the default first.
#include "engine/env_switches.h"

namespace moebench {

const std::vector<EnvSwitchDoc>& env_switch_docs() {
  static const std::vector<EnvSwitchDoc> docs = {
      {"MOEBENCH_ARGMAX_SPLIT", "by vocabulary (65536 and more), 0, 1",
       "greedy argmax over the logits in 4096-logit slices, the last block of a row reducing them (0 never, 1 always)",
       "docs/FAMILIES.md"},
      {"MOEBENCH_ATTN_HEADS_PER_BLOCK", "0, 1, 2, 4",
       "query heads a decode attention block takes (0: by shape; a value not dividing the group is not taken)",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_ATTN_MERGE_HERE", "0, 1",
       "decode attention's key splits merged by the last split of each block of heads instead of a merge launch",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_CACHE_DIR", "$XDG_CACHE_HOME/moebench or ~/.cache/moebench, a directory",
       "where synthetic models are written once as checkpoints for the disk tier", "engine/checkpoint_cache.h"},
      {"MOEBENCH_CPU_INT4", "new[:rows=N][:prefetch=N][:lead=N][:l2=0|1][:steal=0|1], old",
       "the host's int4 expert kernel on AVX-512: the stripe kernel and its parameters, or the table kernel (old: "
       "sums in another order); read at every call",
       "docs/CPU_KERNELS.md"},
      {"MOEBENCH_CPU_ISA", "auto, generic, avx2, avx512, avx512_bf16",
       "the host kernels' instruction set (a lower one than the CPU has, to run every path on one machine); read at "
       "every call",
       "docs/CPU_KERNELS.md"},
      {"MOEBENCH_DEQUANT8", "1, 0",
       "the quantised prefill's dequantisation 8 codes a thread (0: one element a thread; the same bits)",
       "docs/QUANT.md"},
      {"MOEBENCH_DOWN_PRELOAD", "0, 1",
       "the grouped MoE down kernel's warps load their first w2 chunks into registers before their wait",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_DOWN_ROWS", "by size (2 from 2112 rows on, else 1), 1, 2",
       "rows of w2 per warp of the grouped MoE down kernel", "docs/PERFORMANCE.md"},
      {"MOEBENCH_DOWN_TRIGGER", "0, 1",
       "the grouped MoE down kernel lets the next kernel's blocks start after its dot products (0) or right after its "
       "wait (1)",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_EXPERT_PREDICT_AT", "1, 0, 2",
       "who asks L2 for the guessed expert's rows: the side stream after its o_proj prefetch (1), the gate/up blocks "
       "before their wait (0), both (2)",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_EXPERT_PREDICT_BYTES", "8192, 0, 4096, 16384, 32768, 65536",
       "single-sequence decode scores the experts on the layer's input, and L2 is asked for that many bytes of every "
       "bf16 gate/up block's w1 and w3 ranges of the guessed expert (who asks: MOEBENCH_EXPERT_PREDICT_AT)",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_EXPERT_PREDICT_QUANT_BYTES", "1024, 0, 512, 2048, 4096",
       "quantised experts: single-sequence decode scores the experts on the layer's input, and the side stream asks "
       "L2 for that many bytes of each w1 and w3 row of the guessed expert that the gate/up launch's resident warps "
       "take first (whole rows where it is at least a row; 0: off)",
       "docs/QUANT.md"},
      {"MOEBENCH_EXPERT_PREDICT_STATS", "0, 1",
       "eager decode steps count how often the experts scored on the layer's input are the router's choice, logged "
       "when the model closes (a sync a layer)",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_GATEUP_ROUTER", "0, 1",
       "the single-sequence step's quantised gate/up launch takes the MoE block's norm + router in every block "
       "instead of a one-block launch before it",
       "docs/QUANT.md"},
      {"MOEBENCH_GATEUP_ROWS", "by size (2 from 1056 rows on, else 1), 1, 2",
       "rows of w1 (and of w3) per warp of the fused MoE gate/up kernel", "docs/PERFORMANCE.md"},
      {"MOEBENCH_GEMV_PREFETCH", "0, 2, 4", "the one-row GEMV also prefetches that many iterations ahead",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_GEMV_ROWS", "the shape table's, 1, 2, 4",
       "rows per warp of the one-row GEMV up to 16384 rows (o_proj, not the lm_head)", "docs/PERFORMANCE.md"},
      {"MOEBENCH_GPU_CC", "the device's own, 8.0, 8.6, 8.9",
       "the compute capability (and its shared-memory limit a block) every launch decision takes: with a build of "
       "compute_80 PTX only, a Hopper GPU runs the code an Ampere or Ada GPU runs",
       "docs/GPUS.md"},
      {"MOEBENCH_GRAPH_PDL", "1, 0",
       "captured decode graphs keep programmatic edges (0: full dependencies)", "docs/PERFORMANCE.md"},
      {"MOEBENCH_HOST_PIN", "1, 0", "the host expert threads pinned to cores", "docs/HYBRID.md"},
      {"MOEBENCH_HYBRID_JOINT", "1, 0",
       "the hybrid split uses the joint rates of the link and the host measured together (0: each one's solo rate)",
       "docs/HYBRID.md"},
      {"MOEBENCH_HYBRID_SPLIT", "the hybrid_split setting, 1, all, balance, 0, half",
       "how a layer's misses are shared between the host and the link, over the hybrid_split setting (half: tests)",
       "docs/HYBRID.md"},
      {"MOEBENCH_INJECT_SLOWDOWN", "1, a factor in [1, 10]",
       "test hook of the CI gate: every CPU linear op does that many times its work", "docs/GATE.md"},
      {"MOEBENCH_INT4_PAIRED", "1, 0",
       "int4 experts on the GPU in the paired nibble order (0: as stored)", "docs/QUANT.md"},
      {"MOEBENCH_L2_PREFETCH_WARPS", "4, 1", "warps per block of the o_proj L2 prefetch (1: over 4x the SMs)",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_LOG_LEVEL", "warn, error, info, debug", "the log level when --log-level is not given",
       "common/log.h"},
      {"MOEBENCH_NORM_ROUTER_CLUSTER", "1, 0",
       "the norm + router of many-expert models as one launch of a thread-block cluster", "docs/FAMILIES.md"},
      {"MOEBENCH_OPROJ_ROUTER", "0, 1",
       "o_proj and the MoE block's norm + router in one launch (the last o_proj block takes the router)",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_OPROJ_STAGED", "by shape, 0, 1, 2",
       "the decode step's o_proj stages its weights in shared memory during attention (2: from the attention's start; "
       "unset: 2 where the SMs hold the whole matrix)",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_PDL", "1, 0", "programmatic dependent launch of the decode kernels", "docs/PERFORMANCE.md"},
      {"MOEBENCH_QKV_PREFETCH_KB", "2, 4, 8",
       "how much of each q/k/v row the fused norm + q/k/v launch asks L2 for before its wait", "docs/PERFORMANCE.md"},
      {"MOEBENCH_QKV_QK_NORM", "0, 1, 2",
       "Qwen3's one-token step: norm, q/k/v, per-head q/k norm, RoPE and KV store in one launch (2: the attention "
       "starts once every block's rows are written)",
       "docs/FAMILIES.md"},
      {"MOEBENCH_QKV_ROWS", "the shape table's, 1, 2, 4", "rows per warp of the fused norm + q/k/v launch",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_QK_NORM_IN_ATTENTION", "0, 1",
       "Qwen3's per-head q/k norm, RoPE and KV store inside the decode attention launch", "docs/FAMILIES.md"},
      {"MOEBENCH_QUANT_DOWN_TRIGGER", "1, 0",
       "the quantised down + combine launch lets the next launch start only as its warps finish (0: right after its "
       "wait)",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_EXACT", "by format and launch, 0, 40 .. 45",
       "the one-token quantised launches' exact warp kernel shape (0: the tile kernel; the same bits)",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_FUSED", "1, 0",
       "quantised experts' decode in two launches (gate/up + SiLU, down + combine) instead of GEMVs and combines",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_HALF", "1, 0, 2",
       "the exact warp kernels' fp16 form for the GEMV and the gate/up (0: the bf16 form, 2: the down + combine too; "
       "the same bits)",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_MOE_PERSISTENT", "0, 1, 2, 3",
       "the single-sequence step's quantised MoE block as one persistent launch, one block an SM (1: the gate/up and "
       "the down + combine, 2: the norm + router too in one block behind a grid barrier, 3: in every block; the same "
       "bits)",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_MOE_PERSISTENT_SHAPES", "1, 0",
       "that persistent launch's shapes: 1, int4 in shape 44 (its launches' default) in blocks of 16 warps; 0, int4 "
       "in shape 40 in blocks of 32 warps, as fp8 and int8 always (the same bits)",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_PLAIN", "1, 0",
       "the exact warp kernels' loop without row-end conditions where rows fill whole batches, int4's zero point a "
       "constant where none are stored (0: the general loop; the same bits)",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_BATCH_TILES", "1, 2",
       "row tiles a block of the quantised experts' tile kernel takes where a launch's pairs average two or more an "
       "expert (a batched decode step): 2 loads each pair's activations once for both (the same bits; measured "
       "slower, session 51)",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_DECODE_TOKENS", "64, 8, 16, 32",
       "the longest forward (tokens) whose quantised MoE block runs the decode launches in one pass (at most 64 "
       "pairs: 32 tokens at top-2, 8 at top-8); 8: the rule before session 47, when a 16-sequence decode step took "
       "the dequantising path (the same sums per pair either way, so each pair's bits are its slice's)",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_PREFILL_SLICES", "by format (experts: int4 128, int8 and fp8 64; projections never), 0, 16, 32, "
       "64, 128, 256, 512",
       "the longest forward (tokens) whose quantised experts and projections run the decode kernels a pass at a "
       "time (the experts MOEBENCH_QUANT_DECODE_TOKENS tokens a pass, the projections 8) instead of being "
       "dequantised to bf16 for cuBLAS (0 never; the exact dequantised values, not their bf16 rounding: the logits "
       "move within the prefill tolerance)",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_WARP_ORDER", "1, 0, 2",
       "which items the exact GEMV and gate/up warps take first: warp-major for int4 and block-major for int8 and fp8 "
       "(0: block-major, 2: warp-major everywhere; the same bits)",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_PREFETCH", "0, 1, 2, 4", "L2 prefetch passes ahead of the quantised tile kernels",
       "docs/QUANT.md"},
      {"MOEBENCH_QUANT_VARIANT", "by launch, 0 .. 8, 10, 11, 32 .. 38, 40 .. 45",
       "the quantised kernels' inner loop for every launch (32 .. 38: the warp-row kernels, whose sums add in another "
       "order)",
       "docs/QUANT.md"},
      {"MOEBENCH_ROPE_IN_ATTENTION", "1, 0",
       "the single-sequence step rotates q and k and stores the new key and value inside the decode attention launch",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_ROUTER_TOPK_RANK", "0, 1",
       "the cluster norm + router takes its top-k by rank with the whole block", "docs/FAMILIES.md"},
      {"MOEBENCH_SMALL_DOWN_SHAPE", "0 .. 3", "the many-small-expert down kernel's launch shape", "docs/FAMILIES.md"},
      {"MOEBENCH_SIDE_PREFETCH", "1, 0",
       "the decode step's side-stream L2 prefetch of o_proj's weights (and the router's) during attention (0: none)",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_SMALL_DOWN_TRIGGER", "1, 0",
       "the small-expert down launch lets the next launch start only as its warps finish (0: right after its wait)",
       "docs/FAMILIES.md"},
      {"MOEBENCH_SMALL_EXPERTS", "1, 0",
       "the many-small-expert kernels at one token (0: the fused MoE kernels)", "docs/FAMILIES.md"},
      {"MOEBENCH_SMALL_GATE_UP_SHAPE", "0 .. 4", "the many-small-expert gate/up kernel's launch shape",
       "docs/FAMILIES.md"},
      {"MOEBENCH_SMALL_MOE_BLOCK", "0, 1 .. 4",
       "the whole MoE block of one token in one launch with grid barriers (variants 1 .. 4)", "docs/FAMILIES.md"},
      {"MOEBENCH_SMALL_ONE_LAUNCH", "0, 1 .. 4",
       "many small experts' gate/up and down in one launch with per-slot counters (variants 1 .. 4)",
       "docs/FAMILIES.md"},
      {"MOEBENCH_SPLIT_QUANT", "1, 0",
       "quantised host experts may give parts of their rows to the link (0: whole experts per link)",
       "docs/HYBRID.md"},
      {"MOEBENCH_STEP_GRAPH", "1, 0", "single-sequence decode steps replayed from CUDA graphs",
       "docs/PERFORMANCE.md"},
      {"MOEBENCH_SUITES_DIR", "next to the binary, a directory", "where `run --suite NAME` looks for NAME.json first",
       "suites/suite.h"},
      {"MOEBENCH_TP_L2_PREFETCH", "0, 1",
       "tensor-parallel decode also prefetches o_proj's weights into L2 on the side stream", "docs/PARALLEL.md"},
  };
  return docs;
}

}  // namespace moebench
