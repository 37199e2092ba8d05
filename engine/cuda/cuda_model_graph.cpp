// cuda_model_graph.cpp: single-sequence decode steps (forward_argmax, one token) as CUDA
// graphs. A resident decode step that asks only for the next token has nothing on the host
// between its launches (the fused MoE dispatch, a routing source's choices staged before
// the step, no observer, no tracing profiler, pooled buffers: the same conditions as the
// batched path's graphs, cuda_model_batch.cpp), so its launches are captured once and
// replayed: the GPU runs them back to back, without a gap for each launch. The step's
// inputs (token, position) and output (the argmax) go through the pinned host_io_, which
// the graph's copies read and write at every replay. The launches depend on the position
// only through the attention's key split (one split up to decode_attention_one_split's
// keys, several above), so there are two graphs at most. The first step of each runs
// eagerly (it uploads the expert tables that later steps find unchanged), the second is
// captured. The capture keeps the programmatic launches as programmatic edges (pdl.h;
// MOEBENCH_GRAPH_PDL=0: plain dependencies); MOEBENCH_STEP_GRAPH=0 runs every step
// eagerly. The L2 prefetches of decode (prefetch_attention_out) run on a side stream:
// inside a capture its branch joins the step's stream before the end.
// Multi-GPU (tensor or expert parallel): every rank captures its own step on its own
// thread, all-reduces included (NCCL calls are capturable, as are the kernels of
// tp_allreduce=lsa); a rank > 0 runs rank 0's step without the lm_head (forward_follow)
// and graphs it when rank 0 does. As on the batched path, one replay in kTpTimedEvery
// runs a graph with the all-reduces' timing events, the others one without.
#include "engine/cuda/check.cuh"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/decode_attention.h"
#include "engine/cuda/graph_capture.h"
#include "profiler/counters.h"

namespace moebench::cuda {

bool CudaModel::decode_graph_ok(int m, const float* logits, const float* all_logits, const int32_t* next) const {
  const bool tracing = prof_ && prof_->trace.enabled();
  return decode_graphs_on_ && m == 1 && (next || follow_step_) && !logits && !all_logits && !tracing && !observed_ &&
         !host_experts_ && ws_->pooled() && settings_.expert_tier == "resident" && !moe_->syncs(1);
}

void CudaModel::forward_follow(const int32_t* tokens, int n, int pos0, bool graphs) {
  follow_step_ = graphs;
  try {
    run_chunks(tokens, n, pos0, nullptr, nullptr, nullptr);
  } catch (...) {
    follow_step_ = false;
    throw;
  }
  follow_step_ = false;
}

void CudaModel::decode_graph_step(ForwardBuffers& b, int pos0, int64_t step, int32_t* next) {
  const int split = decode_attention_one_split(pos0 + 1) ? 1 : 0;
  tp_timing_ = !tp_ || decode_graph_replays_ % kTpTimedEvery == 0;  // one GPU: no events, always "timed"
  const int key = 2 * split + (tp_timing_ ? 1 : 0);
  try {
    if (decode_graph_[key]) {
      CUDA_CHECK(cudaGraphLaunch(decode_graph_[key], stream_));
      ++decode_graph_replays_;
      tp_events_used_ = decode_graph_events_[key];  // recorded again by the replay (none when untimed)
    } else if (!decode_seen_[split]) {
      forward_body(b, 1, pos0, step, nullptr, nullptr, next);
      decode_seen_[split] = true;
    } else {
      cudaGraphExec_t exec = capture_graph(stream_, [&] {
        forward_body(b, 1, pos0, step, nullptr, nullptr, next);
        if (prefetch_stream_) {  // join the side stream's branch (every prefetch of the step is on it, in order)
          CUDA_CHECK(cudaEventRecord(prefetch_event_, prefetch_stream_));
          CUDA_CHECK(cudaStreamWaitEvent(stream_, prefetch_event_, 0));
        }
      });
      decode_graph_[key] = exec;
      decode_graph_events_[key] = tp_events_used_;
      CUDA_CHECK(cudaGraphLaunch(exec, stream_));
      ++decode_graph_replays_;
    }
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    read_collective_times(true);
    note_decode_step(1);
  } catch (...) {
    tp_timing_ = true;
    throw;
  }
  tp_timing_ = true;  // every other forward is timed
}

}  // namespace moebench::cuda
