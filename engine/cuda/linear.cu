// linear.cu: y = x @ W^T with bf16 x/W and fp32 y (twin: engine/ops/linear.cpp), and
// rmsnorm_linear_multi (the same q/k/v launch with the norm of x folded in).
// Three variants, side by side in the benchmarks:
//   gemv   — own kernel for n <= 8 rows of x: streams W at close to HBM bandwidth
//            (engine/cuda/gemv_core.cuh); a scalar fallback when `in` % 8 != 0. At n = 1
//            its launch shape (rows per warp, depth, warps per block) comes from a table
//            of compiled shapes (gemv_shaped runs any of them; all give the same bits).
//   gemv_tc — the tensor-core GEMV of n <= 8 rows (quant_gemv.cu, ops.cuh gemv_tc).
//   cublas — cublasGemmEx, bf16 inputs, fp32 output and compute. cuBLAS's M = 1
//            path reads W at ~0.3-0.4 TB/s on an H100 (as once measured there), hence gemv.
#include <cublas_v2.h>

#include "engine/cuda/check.cuh"
#include "engine/cuda/gemv_core.cuh"
#include "engine/cuda/launch_env.h"
#include "engine/cuda/ops.cuh"
#include "engine/cuda/pdl.cuh"
#include "engine/cuda/rmsnorm_row.cuh"

namespace moebench::cuda {

namespace {
using detail::gemv_rows;
using detail::kGemvWarps;
constexpr int kGemvMaxSegs = 4;

// W warps per block, R rows per warp, U chunks deep.
template <int M, int R, int U = 8 / R, int W = kGemvWarps, int PF = 0>
__global__ void __launch_bounds__(W * 32) gemv_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                      float* __restrict__ y, int m, int K, int N, bool accumulate) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * W + warp) * R;
  pdl_wait();  // x and (accumulate) y come from the previous kernel
  pdl_trigger();
  if (row0 >= N) return;
  gemv_rows<M, R, U, PF>(x, w, y, m, K, N, row0, lane, accumulate);
}

// Several weight matrices of the same `in` against the same x in one launch (q/k/v):
// blocks [first[s], first[s+1]) compute segment s. Per row, the same arithmetic as
// gemv_kernel (bit-identical outputs).
struct GemvSegments {
  const bf16* w[kGemvMaxSegs];
  float* y[kGemvMaxSegs];
  int rows[kGemvMaxSegs];
  int first[kGemvMaxSegs + 1];
  int n;
};

// The segment of block `block`: its matrix, output, rows and first block. Constant
// indices only (a select per segment), so the parameter struct stays in the constant bank
// instead of being copied to local memory for a dynamic index.
struct GemvSegment {
  const bf16* w;
  float* y;
  int rows, first;
};
__device__ __forceinline__ GemvSegment segment_of(const GemvSegments& sg, int block) {
  GemvSegment s{sg.w[0], sg.y[0], sg.rows[0], 0};
#pragma unroll
  for (int i = 1; i < kGemvMaxSegs; ++i)
    if (i < sg.n && block >= sg.first[i]) s = GemvSegment{sg.w[i], sg.y[i], sg.rows[i], sg.first[i]};
  return s;
}

template <int R, int U, int W, int PF>
__global__ void __launch_bounds__(W * 32) gemv_multi_kernel(const bf16* __restrict__ x, GemvSegments sg, int K) {
  const GemvSegment seg = segment_of(sg, static_cast<int>(blockIdx.x));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = ((static_cast<int>(blockIdx.x) - seg.first) * W + warp) * R;
  if (row0 >= seg.rows) return;
  gemv_rows<1, R, U, PF>(x, seg.w, seg.y, 1, K, seg.rows, row0, lane, false);
}

// The launch's block row_blocks + e (e < pr.n_experts, blocks past the rows' own):
// pr.logits[e] = sum_i x_i * pr.norm_w_i * pr.gate[e][i] (ops.cuh ExpertPredict), each
// thread's 8-element chunks, then the warps.
__device__ __forceinline__ void predict_expert_logit(const float* __restrict__ x, const ExpertPredict& pr, int e, int K) {
  __shared__ float part[kGemvWarps];
  const bf16* g = pr.gate + static_cast<int64_t>(e) * K;
  float s = 0;
  for (int c = threadIdx.x; c < K / 8; c += kGemvWarps * 32) {
    const float4 a = reinterpret_cast<const float4*>(x)[2 * c], b = reinterpret_cast<const float4*>(x)[2 * c + 1];
    const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    float nw[8], gw[8];
    to_float8(load8(pr.norm_w + 8 * c), nw);
    to_float8(load8(g + 8 * c), gw);
#pragma unroll
    for (int i = 0; i < 8; ++i) s = fmaf(xv[i] * nw[i], gw[i], s);
  }
  s = warp_sum(s);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0;
    for (int w = 0; w < kGemvWarps; ++w) t += part[w];
    pr.logits[e] = t;
  }
}

// gemv_multi_kernel with the norm of its input folded in (decode's attention entry): each
// block first asks L2 for the first prefetch_bytes of each of its weight rows (one bulk
// prefetch per row, lanes < R of each warp: HBM streams while the norm is computed; 2 KiB
// unless MOEBENCH_QKV_PREFETCH_KB says otherwise: a whole q/k/v of 50 MB at once would
// crowd L2), then recomputes h = rmsnorm(x) * norm_w into shared memory
// with rmsnorm_row over the block's 256 threads (the sums of rmsnorm()'s block, so h is
// bit-identical), block 0 also writes h out, and the rows are taken against the shared h
// as gemv_multi_kernel does (bit-identical y). Blocks from row_blocks on score the experts
// instead (predict_expert_logit), one each.
template <int R, int U, int PF>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_multi_norm_kernel(const float* __restrict__ x, const bf16* __restrict__ norm_w, float eps,
                           bf16* __restrict__ h, GemvSegments sg, int K, unsigned prefetch_bytes, ExpertPredict pr,
                           int row_blocks) {
  if (static_cast<int>(blockIdx.x) >= row_blocks) {  // a block of its own for each expert's score (no tail added)
    pdl_wait();  // x comes from the previous kernel
    pdl_trigger();
    predict_expert_logit(x, pr, static_cast<int>(blockIdx.x) - row_blocks, K);
    return;
  }
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* hs = reinterpret_cast<bf16*>(smem);
  const GemvSegment seg = segment_of(sg, static_cast<int>(blockIdx.x));
  const int N = seg.rows;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = ((static_cast<int>(blockIdx.x) - seg.first) * kGemvWarps + warp) * R;
  if (lane < R && row0 + lane < N)
    l2_prefetch_bulk(seg.w + static_cast<int64_t>(row0 + lane) * K, min(static_cast<unsigned>(K) * 2u, prefetch_bytes));
  if (threadIdx.x == 0 && aligned16(norm_w)) l2_prefetch_bulk(norm_w, static_cast<unsigned>(K) * 2u);  // the norm's weights
  pdl_wait();  // x comes from the previous kernel
  pdl_trigger();
  rmsnorm_row<kGemvWarps * 32>(x, norm_w, hs, K, eps);
  __syncthreads();
  if (blockIdx.x == 0)
    for (int c = threadIdx.x; c < K / 8; c += kGemvWarps * 32)
      *reinterpret_cast<bf16x8*>(h + 8 * c) = *reinterpret_cast<const bf16x8*>(hs + 8 * c);
  if (row0 >= N) return;
  gemv_rows<1, R, U, PF>(hs, seg.w, seg.y, 1, K, N, row0, lane, false);
}

// Any K, any alignment: one warp per row, scalar loads.
__global__ void gemv_scalar_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, float* __restrict__ y, int m,
                                   int K, int N, bool accumulate) {
  const int row = blockIdx.x * kGemvWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= N) return;
  const bf16* wr = w + static_cast<int64_t>(row) * K;
  for (int mm = 0; mm < m; ++mm) {
    const bf16* xr = x + static_cast<int64_t>(mm) * K;
    float s = 0;
    for (int k = lane; k < K; k += 32) s = fmaf(__bfloat162float(wr[k]), __bfloat162float(xr[k]), s);
    s = warp_sum(s);
    if (lane == 0) {
      float* yp = y + static_cast<int64_t>(mm) * N + row;
      *yp = accumulate ? *yp + s : s;
    }
  }
}

template <int M>
void launch_gemv_m(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool acc, cudaStream_t stream) {
  const int R = detail::gemv_rows_per_warp(out);
  const unsigned blocks = static_cast<unsigned>(ceil_div(out, kGemvWarps * R));
  switch (R) {
    case 4: gemv_kernel<M, 4><<<blocks, kGemvWarps * 32, 0, stream>>>(x, w, y, n, in, out, acc); break;
    case 2: gemv_kernel<M, 2><<<blocks, kGemvWarps * 32, 0, stream>>>(x, w, y, n, in, out, acc); break;
    default: gemv_kernel<M, 1><<<blocks, kGemvWarps * 32, 0, stream>>>(x, w, y, n, in, out, acc); break;
  }
  CUDA_CHECK_LAUNCH("gemv_kernel");
}

// The compiled launch shapes of the one-row GEMV (rows per warp, depth, warps per block),
// for one matrix and for several sharing x (linear_multi).
using GemvLaunch = void (*)(const bf16*, const bf16*, float*, int, int, bool, cudaStream_t);
using GemvMultiLaunch = void (*)(const bf16*, GemvSegments&, int, cudaStream_t);
template <int R, int U, int W, int PF>
void launch_gemv_shape(const bf16* x, const bf16* w, float* y, int in, int out, bool acc, cudaStream_t stream) {
  launch_pdl(gemv_kernel<1, R, U, W, PF>, dim3(static_cast<unsigned>(ceil_div(out, W * R))), dim3(W * 32), 0, stream, x, w, y,
             1, in, out, acc);
}
// Fills sg.first (blocks per segment) for this shape, then launches.
template <int R, int U, int W, int PF>
void launch_gemv_multi_shape(const bf16* x, GemvSegments& sg, int in, cudaStream_t stream) {
  sg.first[0] = 0;
  for (int s = 0; s < sg.n; ++s) sg.first[s + 1] = sg.first[s] + static_cast<int>(ceil_div(sg.rows[s], W * R));
  gemv_multi_kernel<R, U, W, PF><<<static_cast<unsigned>(sg.first[sg.n]), W * 32, 0, stream>>>(x, sg, in);
}
struct GemvShapeEntry {
  GemvShape shape;
  GemvLaunch launch;
  GemvMultiLaunch launch_multi;
};
#define MB_GEMV_SHAPE(R, U, W, PF) {{R, U, W, PF}, launch_gemv_shape<R, U, W, PF>, launch_gemv_multi_shape<R, U, W, PF>}
const GemvShapeEntry kGemvShapeTable[] = {
    MB_GEMV_SHAPE(1, 8, 8, 0), MB_GEMV_SHAPE(1, 16, 8, 0), MB_GEMV_SHAPE(1, 8, 4, 0), MB_GEMV_SHAPE(1, 16, 4, 0),
    MB_GEMV_SHAPE(2, 4, 8, 0), MB_GEMV_SHAPE(2, 8, 8, 0),  MB_GEMV_SHAPE(2, 4, 4, 0), MB_GEMV_SHAPE(2, 8, 4, 0),
    MB_GEMV_SHAPE(4, 2, 8, 0), MB_GEMV_SHAPE(4, 4, 8, 0),  MB_GEMV_SHAPE(4, 4, 4, 0),
    // The same loads with L2 prefetches 2 or 4 iterations ahead (gemv_core.cuh gemv_warp PF).
    MB_GEMV_SHAPE(1, 8, 8, 2), MB_GEMV_SHAPE(2, 4, 8, 2),  MB_GEMV_SHAPE(4, 2, 8, 2), MB_GEMV_SHAPE(4, 2, 8, 4),
};
#undef MB_GEMV_SHAPE

const GemvShapeEntry& find_gemv_shape(GemvShape s) {
  for (const GemvShapeEntry& e : kGemvShapeTable)
    if (e.shape.rows_per_warp == s.rows_per_warp && e.shape.depth == s.depth && e.shape.warps == s.warps &&
        e.shape.prefetch == s.prefetch)
      return e;
  fail_msg(msg("cuda::gemv_shaped: no compiled shape with ", s.rows_per_warp, " rows per warp, depth ", s.depth,
               ", ", s.warps, " warps, prefetch ", s.prefetch, " (gemv_shapes() lists them)"));
}

void cublas_linear(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool accumulate,
                   cublasHandle_t blas, cudaStream_t stream) {
  if (!blas) fail_msg(msg("cuda::linear: n = ", n, " needs cuBLAS but no handle was given"));
  CUBLAS_CHECK(cublasSetStream(blas, stream));
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  // Column-major view: y^T (out x n) = W (in x out)^T * x^T (in x n).
  CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha, w, CUDA_R_16BF, in, x, CUDA_R_16BF,
                            in, &beta, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
}  // namespace

void gemv(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool accumulate, cudaStream_t stream) {
  MB_NVTX_RANGE("gemv");
  if (n <= 0 || out <= 0) return;
  if (n > kGemvMaxRows) fail_msg(msg("cuda::gemv: n = ", n, " rows, the GEMV kernel takes at most ", kGemvMaxRows));
  if (in % 8 != 0 || !aligned16(x) || !aligned16(w)) {
    gemv_scalar_kernel<<<static_cast<unsigned>(ceil_div(out, kGemvWarps)), kGemvWarps * 32, 0, stream>>>(
        x, w, y, n, in, out, accumulate);
    CUDA_CHECK_LAUNCH("gemv_scalar_kernel");
    return;
  }
  if (n == 1) {
    find_gemv_shape(gemv_default_shape(out)).launch(x, w, y, in, out, accumulate, stream);
    CUDA_CHECK_LAUNCH("gemv_kernel");
  } else if (n == 2) launch_gemv_m<2>(x, w, y, n, in, out, accumulate, stream);
  else if (n <= 4) launch_gemv_m<4>(x, w, y, n, in, out, accumulate, stream);
  else launch_gemv_m<8>(x, w, y, n, in, out, accumulate, stream);
}

const std::vector<GemvShape>& gemv_shapes() {
  static const std::vector<GemvShape> shapes = [] {
    std::vector<GemvShape> v;
    for (const GemvShapeEntry& e : kGemvShapeTable) v.push_back(e.shape);
    return v;
  }();
  return shapes;
}

namespace {
// 4 rows per warp, 2 chunks deep (8 loads in flight per lane, each activation chunk
// serving 4 rows) once there are 128 blocks of 32 rows, about one per SM; measured on an
// H200 (one row of x): 4096 x 14336 (w2) 42.9 us against 45.8 with 2 rows x 4 deep and
// 47.8 with 1 x 8, 4096 x 4096 16.0 against 16.6, q/k/v in one launch 20.3 against 22.7;
// below that, fewer rows per warp keep the SMs busy (1024 rows: 11.7-11.9 us at 1 or 2).
// `rows` > 0 (an environment knob) sets the rows per warp instead (8 / rows chunks deep).
// MOEBENCH_GEMV_PREFETCH (launch_env.h) adds prefetching where the table has that shape.
GemvShape default_shape(int out, int rows) {
  GemvShape s{4, 2, kGemvWarps};
  if (out < kGemvWarps * 4 * 128) {
    const int R = detail::gemv_rows_per_warp(out);
    s = {R, 8 / R, kGemvWarps};
  }
  if (rows > 0) s = {rows, 8 / rows, kGemvWarps};
  const GemvShape pf{s.rows_per_warp, s.depth, s.warps, gemv_prefetch_from_env()};
  for (const GemvShapeEntry& e : kGemvShapeTable)
    if (pf.prefetch > 0 && e.shape.rows_per_warp == pf.rows_per_warp && e.shape.depth == pf.depth &&
        e.shape.warps == pf.warps && e.shape.prefetch == pf.prefetch)
      return pf;
  return s;
}
}  // namespace

// MOEBENCH_GEMV_ROWS (launch_env.h) sets the rows per warp up to kGemvRowsKnobMaxOut
// rows (o_proj: its weights come from L2, prefetched while attention runs; the lm_head's
// 32000 rows keep the table's shape).
constexpr int kGemvRowsKnobMaxOut = 16384;
GemvShape gemv_default_shape(int out) {
  return default_shape(out, out <= kGemvRowsKnobMaxOut ? gemv_rows_from_env() : 0);
}

void gemv_shaped(const bf16* x, const bf16* w, float* y, int in, int out, bool accumulate, GemvShape shape,
                 cudaStream_t stream) {
  MB_NVTX_RANGE("gemv_shaped");
  if (out <= 0) return;
  if (in % 8 != 0 || !aligned16(x) || !aligned16(w))
    fail_msg(msg("cuda::gemv_shaped: needs in % 8 == 0 (got ", in, ") and 16-byte aligned x and w"));
  find_gemv_shape(shape).launch(x, w, y, in, out, accumulate, stream);
  CUDA_CHECK_LAUNCH("gemv_kernel");
}

void linear_multi(const bf16* x, const bf16* const* w, float* const* y, const int* out, int n_mats, int n, int in,
                  cublasHandle_t blas, cudaStream_t stream) {
  if (n_mats <= 0 || n_mats > kGemvMaxSegs)
    fail_msg(msg("cuda::linear_multi: ", n_mats, " matrices, expected 1..", kGemvMaxSegs));
  bool fused = n == 1 && in % 8 == 0 && aligned16(x);
  int total = 0;
  for (int s = 0; s < n_mats; ++s) {
    fused = fused && aligned16(w[s]) && out[s] > 0;
    total += out[s];
  }
  if (!fused) {
    for (int s = 0; s < n_mats; ++s) linear(x, w[s], y[s], n, in, out[s], false, blas, stream);
    return;
  }
  // One shape for all segments: per row the result does not depend on it (same lane order).
  linear_multi_shaped(x, w, y, out, n_mats, in, gemv_default_shape(total), stream);
}

void linear_multi_shaped(const bf16* x, const bf16* const* w, float* const* y, const int* out, int n_mats, int in,
                         GemvShape shape, cudaStream_t stream) {
  MB_NVTX_RANGE("gemv_multi");
  if (n_mats <= 0 || n_mats > kGemvMaxSegs)
    fail_msg(msg("cuda::linear_multi_shaped: ", n_mats, " matrices, expected 1..", kGemvMaxSegs));
  bool ok = in % 8 == 0 && aligned16(x);
  for (int s = 0; s < n_mats; ++s) ok = ok && aligned16(w[s]) && out[s] > 0;
  if (!ok)
    fail_msg(msg("cuda::linear_multi_shaped: needs in % 8 == 0 (got ", in,
                 "), 16-byte aligned x and w and at least one row per matrix"));
  GemvSegments sg{};
  sg.n = n_mats;
  for (int s = 0; s < n_mats; ++s) {
    sg.w[s] = w[s];
    sg.y[s] = y[s];
    sg.rows[s] = out[s];
  }
  find_gemv_shape(shape).launch_multi(x, sg, in, stream);
  CUDA_CHECK_LAUNCH("gemv_multi_kernel");
}

bool rmsnorm_linear_multi_supported(const void* h, const bf16* const* w, const int* out, int n_mats, int in) {
  bool ok = n_mats >= 1 && n_mats <= kGemvMaxSegs && in > 0 && in % 8 == 0 &&
            in * sizeof(bf16) <= kRmsnormGemvMaxSharedBytes && aligned16(h);
  int total = 0;
  for (int s = 0; ok && s < n_mats; ++s) {
    ok = aligned16(w[s]) && out[s] > 0;
    total += out[s];
  }
  return ok && default_shape(total, qkv_rows_from_env()).warps == kGemvWarps;
}

bool expert_predict_supported(const float* x, const ExpertPredict& predict) {
  return predict.n_experts == 0 ||
         (predict.n_experts > 0 && predict.n_experts <= kExpertPredictMax && predict.logits && aligned16(x) &&
          aligned16(predict.norm_w) && aligned16(predict.gate));
}

void rmsnorm_linear_multi(const float* x, const bf16* norm_w, float eps, bf16* h, const bf16* const* w, float* const* y,
                          const int* out, int n_mats, int in, cudaStream_t stream, const ExpertPredict& predict) {
  MB_NVTX_RANGE("rmsnorm_gemv_multi");
  if (!rmsnorm_linear_multi_supported(h, w, out, n_mats, in))
    fail_msg(msg("cuda::rmsnorm_linear_multi: ", n_mats, " matrices of in = ", in,
                 " not supported (1..", kGemvMaxSegs, " matrices with rows, in % 8 == 0, in * 2 <= ",
                 kRmsnormGemvMaxSharedBytes, " bytes, 16-byte aligned h and w)"));
  if (!expert_predict_supported(x, predict))
    fail_msg(msg("cuda::rmsnorm_linear_multi: an expert prediction of ", predict.n_experts, " experts (expected 0..",
                 kExpertPredictMax, ", with logits and 16-byte aligned x, norm and gate)"));
  GemvSegments sg{};
  sg.n = n_mats;
  int total = 0;
  for (int s = 0; s < n_mats; ++s) {
    sg.w[s] = w[s];
    sg.y[s] = y[s];
    sg.rows[s] = out[s];
    total += out[s];
  }
  const GemvShape shape = default_shape(total, qkv_rows_from_env());  // MOEBENCH_QKV_ROWS, launch_env.h
  const int R = shape.rows_per_warp;
  sg.first[0] = 0;
  for (int s = 0; s < n_mats; ++s) sg.first[s + 1] = sg.first[s] + static_cast<int>(ceil_div(sg.rows[s], kGemvWarps * R));
  const int row_blocks = sg.first[n_mats];
  const unsigned blocks = static_cast<unsigned>(row_blocks + predict.n_experts);
  const size_t smem = static_cast<size_t>(in) * sizeof(bf16);
  // The one-warp-per-block shapes of the table (kGemvShapeTable), with and without prefetch.
  using Kernel = void (*)(const float*, const bf16*, float, bf16*, GemvSegments, int, unsigned, ExpertPredict, int);
  struct NormShape {
    int R, U, PF;
    Kernel kernel;
  };
  static const NormShape kNormShapes[] = {
      {4, 2, 0, gemv_multi_norm_kernel<4, 2, 0>}, {2, 4, 0, gemv_multi_norm_kernel<2, 4, 0>},
      {1, 8, 0, gemv_multi_norm_kernel<1, 8, 0>}, {4, 2, 2, gemv_multi_norm_kernel<4, 2, 2>},
      {4, 2, 4, gemv_multi_norm_kernel<4, 2, 4>}, {2, 4, 2, gemv_multi_norm_kernel<2, 4, 2>},
      {1, 8, 2, gemv_multi_norm_kernel<1, 8, 2>}};
  for (const NormShape& k : kNormShapes)
    if (k.R == R && k.U == shape.depth && k.PF == shape.prefetch) {
      launch_pdl(k.kernel, dim3(blocks), dim3(kGemvWarps * 32), smem, stream, x, norm_w, eps, h, sg, in,
                 qkv_prefetch_bytes_from_env(), predict, row_blocks);
      CUDA_CHECK_LAUNCH("gemv_multi_norm_kernel");
      return;
    }
  fail_msg(msg("cuda::rmsnorm_linear_multi: no compiled kernel for ", R, " rows per warp, depth ", shape.depth,
               ", prefetch ", shape.prefetch));
}

void linear(const bf16* x, const bf16* w, float* y, int n, int in, int out, bool accumulate, cublasHandle_t blas,
            cudaStream_t stream, LinearAlgo algo) {
  if (n <= 0 || out <= 0) return;
  if (algo == LinearAlgo::automatic)
    algo = (n <= kGemvAutoMaxRows || !blas) && (in % 8 == 0 || !blas) && n <= kGemvMaxRows ? LinearAlgo::gemv : LinearAlgo::cublas;
  if (algo == LinearAlgo::gemv) {
    gemv(x, w, y, n, in, out, accumulate, stream);
    return;
  }
  if (algo == LinearAlgo::gemv_tc) {
    gemv_tc(x, w, y, n, in, out, accumulate, stream);
    return;
  }
  MB_NVTX_RANGE("linear_cublas");
  cublas_linear(x, w, y, n, in, out, accumulate, blas, stream);
}

}  // namespace moebench::cuda
