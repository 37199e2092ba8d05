// cuda_model_quant.cpp: the CudaModel's attention projections in a quantised
// weight_dtype (fp8 128x128 blocks or int8 per row, engine/quant.h): their device bytes
// for the memory plan and their upload. The forward calls linear_weight /
// linear_multi_weight (engine/cuda/quant_linear.h) on them.
#include <array>
#include <exception>

#include "engine/cuda/check.cuh"
#include "engine/cuda/cuda_model.h"
#include "engine/weights.h"

namespace moebench::cuda {

uint64_t CudaModel::dense_bytes(const TensorSpec& s) const {
  if (attn_fmt_ == QuantFormat::bf16 || !is_attention_projection(s.name))
    return round256(static_cast<uint64_t>(s.numel()) * 2);
  uint64_t b = 0;
  for (const QuantPart& p : quant_parts(attn_fmt_, s.shape[0], s.shape[1])) b += round256(p.nbytes());
  return b;
}

uint64_t CudaModel::upload_quant_attention(const WeightSource& src, int l, Layer& L) {
  static const char* const kNames[4] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                        "self_attn.o_proj.weight"};
  std::array<TensorSpec, 4> specs;  // the model's own specs (a synthetic model's values come from them)
  for (const TensorSpec& s : model_tensor_specs(cfg_))
    for (int i = 0; i < 4; ++i)
      if (s.name == names::layer(l, kNames[i])) specs[i] = s;
  std::array<QuantMatrix, 4> m;
  std::array<std::exception_ptr, 4> err;  // an Error may not leave the parallel region
#pragma omp parallel for num_threads(4)
  for (int i = 0; i < 4; ++i) {
    try {
      m[i] = src.read_quant(specs[i], attn_fmt_);
    } catch (...) {
      err[i] = std::current_exception();
    }
  }
  for (auto& e : err)
    if (e) std::rethrow_exception(e);
  uint64_t bytes = 0;
  L.wq = L.wk = L.wv = L.wo = nullptr;
  for (int i = 0; i < 4; ++i) {
    auto up = [&](const std::vector<uint8_t>& v, const char* what) {
      auto* d = arena_->alloc_n<uint8_t>(v.size(), fmt::format("layer {} {} {}", l, kNames[i], what));
      CUDA_CHECK(cudaMemcpy(d, v.data(), v.size(), cudaMemcpyHostToDevice));
      bytes += round256(v.size());
      return d;
    };
    L.lw[i].format = attn_fmt_;
    L.lw[i].w = nullptr;
    L.lw[i].q = up(m[i].q, "values");
    L.lw[i].scale = up(m[i].scale, "scales");
  }
  return bytes;
}

}  // namespace moebench::cuda
