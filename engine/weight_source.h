// weight_source.h: where a model's tensors come from — a checkpoint on disk
// (memory-mapped safetensors) or the synthetic generator (no file; the same values
// `moebench make-model` writes). Backends read tensors through it by HF name.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "model/config.h"
#include "engine/dtype.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "engine/weights.h"

namespace moebench {

class WeightSource {
 public:
  // "DIR" (checkpoint with config.json) or "synthetic:PRESET[:layers=N][:dtype=F]" / a
  // preset name, the latter generated from `seed` in `dtype`; with dtype=fp8|int8|int4
  // its experts are those values quantised to F (what `make-model --dtype F` writes).
  static WeightSource open(const std::string& model, uint64_t seed, DType synth_dtype = DType::bf16);
  static WeightSource synthetic(const ModelConfig& cfg, uint64_t seed, DType dtype = DType::bf16,
                                QuantFormat experts = QuantFormat::bf16);
  static WeightSource checkpoint(const std::string& dir);

  const ModelConfig& config() const { return cfg_; }
  bool is_synthetic() const { return ckpt_ == nullptr; }
  uint64_t seed() const { return seed_; }
  DType synth_dtype() const { return dtype_; }
  const Checkpoint* ckpt() const { return ckpt_.get(); }
  std::string describe() const;  // "checkpoint:DIR" or "synthetic:NAME:seed=S:bf16"

  // The stored dtype of a tensor (checkpoint dtype, or the synthetic dtype).
  DType dtype_of(const TensorSpec& s) const;
  // The format the experts are stored in (bf16 also stands for f32/f16 checkpoints).
  QuantFormat expert_format() const { return expert_fmt_; }
  // How one tensor is stored: its format and, for a checkpoint, the views of its parts
  // (quant_parts order; shapes and dtypes checked). Throws Error naming the tensor, also
  // when parts are asked of a GPTQ or AWQ tensor (int4 in another layout: no such parts).
  QuantFormat stored_format(const TensorSpec& s, std::vector<const TensorView*>* parts = nullptr) const;
  // Reads a tensor (shape checked against the spec) converted to f32 / bf16; quantised
  // tensors are dequantised (quant.h).
  void read_f32(const TensorSpec& s, float* dst) const;
  void read_bf16(const TensorSpec& s, uint16_t* dst) const;
  // The checkpoint's own bytes of a tensor stored as bf16 under its name in its shape (a
  // loader may copy them as they are), else null: synthetic weights, other dtypes, and
  // layouts stored under other names (GPTQ's qweight, ...), which read_bf16 converts.
  const TensorView* stored_bf16(const TensorSpec& s) const;
  // A 2-D tensor in format f: its stored bytes when stored in f, else quantised from its
  // values (a quantised tensor is never quantised again into another format: Error).
  QuantMatrix read_quant(const TensorSpec& s, QuantFormat f) const;
  // A matrix as the CPU reference computes with it in format f (an expert in its
  // expert_dtype, an attention projection in its weight_dtype): dequantised
  // read_quant(s, f), or read_f32 for bf16.
  void read_f32_as(const TensorSpec& s, QuantFormat f, float* dst) const;
  // The format the attention projections are stored in (layer 0's q_proj: bf16 for
  // synthetic models and unquantised checkpoints).
  QuantFormat attention_format() const;
  // Whether the int4 experts read_quant gives carry zero points (a checkpoint that stores
  // them: moebench's layout with weight_zero_point, GPTQ with sym false, AWQ). False for
  // every other format and for synthetic models (symmetric).
  bool expert_zero_points() const;
  // The published layout the quantised tensors are stored in, for people: "GPTQ", "AWQ",
  // "compressed-tensors pack-quantized", "AutoFP8"; empty for moebench's own layouts
  // (and transformers' fp8 blocks) and for synthetic models.
  std::string stored_layout() const;
  // Checks every tensor of the model is present with the right shape and dtype.
  void check_all() const;

  // A compressed-tensors checkpoint (quantization_config.quant_method "compressed-tensors":
  // llm-compressor's pack-quantized, float-quantized, int-quantized and naive-quantized
  // formats) or AutoFP8's (quant_method "fp8" without weight_block_size: one scale a
  // tensor); docs/QUANT.md, "compressed-tensors and AutoFP8 checkpoints".
  struct Compressed {
    enum class Strategy { tensor, channel, group, block };
    int bits = 8;            // 4 or 8
    bool is_float = false;   // fp8 e4m3 codes (else integers)
    bool sym = true;         // no zero points
    bool packed = false;     // pack-quantized: codes in weight_packed (I32), 32 / bits a word
    Strategy strategy = Strategy::tensor;
    int64_t group = 0;                      // strategy group: inputs a group
    int64_t block_rows = 0, block_cols = 0; // strategy block
    std::string name;                       // for messages: "compressed-tensors pack-quantized", "AutoFP8"
    QuantFormat format() const { return is_float ? QuantFormat::fp8 : bits == 4 ? QuantFormat::int4 : QuantFormat::int8; }
  };
  struct CompressedViews {
    const TensorView* q = nullptr;      // weight (F8_E4M3 | I8) or weight_packed (I32)
    const TensorView* scale = nullptr;  // weight_scale (F32 | BF16 | F16)
    const TensorView* zero = nullptr;   // weight_zero_point, or null
    const TensorView* g_idx = nullptr;  // weight_g_idx (I32), or null
    int64_t scale_rows = 1, scale_cols = 1;
  };
 private:
  // check_all(), returning the format the experts are stored in.
  QuantFormat check_tensors() const;
  // A published 4-bit checkpoint (quantization_config.quant_method "gptq" or "awq"): how
  // its qweight / qzeros / scales (/ g_idx) tensors read (docs/QUANT.md, "GPTQ and AWQ
  // checkpoints").
  struct Packed4 {
    bool awq = false;     // AWQ: qweight (in, out/8), nibbles in AWQ's order; else GPTQ: (in/8, out)
    int64_t group = 128;  // group_size; -1 in the file (one group a row) is held as 0
    bool v1 = true;       // GPTQ checkpoint_format "gptq": qzeros hold each zero point minus 1
    bool sym = true;      // every zero point is 8: read as moebench's symmetric int4 (AWQ: false)
    const char* name() const { return awq ? "AWQ" : "GPTQ"; }
  };
  struct Packed4Views {
    const TensorView* qweight = nullptr;  // I32: GPTQ (in/8, out), AWQ (in, out/8)
    const TensorView* qzeros = nullptr;   // I32 (groups, out/8)
    const TensorView* scales = nullptr;   // F16 | BF16 | F32 (groups, out)
    const TensorView* g_idx = nullptr;    // GPTQ: I32 (in) or absent
    int64_t groups = 0;
  };
  // config.json's quantization_config when it names GPTQ or AWQ (checked: 4 bits, a group
  // size, GPTQ's checkpoint_format, AWQ's version and zero points), else nullopt.
  static std::optional<Packed4> read_packed4_config(const std::string& config_path);
  // The tensor's base name when it is stored in GPTQ's or AWQ's layout, else nullopt.
  std::optional<std::string> packed4_base(const TensorSpec& s) const;
  Packed4Views packed4_views(const TensorSpec& s, const std::string& base) const;
  void packed4_dequantize(const TensorSpec& s, const std::string& base, float* dst) const;
  QuantMatrix packed4_int4(const TensorSpec& s, const std::string& base) const;
  std::optional<Packed4> packed4_;
  static std::optional<Compressed> read_compressed_config(const std::string& config_path);
  // The tensor's base name when the checkpoint is compressed-tensors or AutoFP8 and the
  // tensor is stored quantised, else nullopt.
  std::optional<std::string> compressed_base(const TensorSpec& s) const;
  CompressedViews compressed_views(const TensorSpec& s, const std::string& base) const;
  void compressed_dequantize(const TensorSpec& s, const std::string& base, float* dst) const;
  // The tensor in moebench's layout of its own format (fp8, int8, int4), value for value,
  // or an Error saying to run it dequantised where moebench's format cannot hold it.
  QuantMatrix compressed_quant(const TensorSpec& s, const std::string& base) const;
  std::optional<Compressed> compressed_;
  ModelConfig cfg_;
  std::shared_ptr<Checkpoint> ckpt_;
  uint64_t seed_ = 0;
  DType dtype_ = DType::bf16;
  QuantFormat expert_fmt_ = QuantFormat::bf16;
};

// The format the experts run in for the knob expert_dtype (bf16|fp8|int8|int4): the
// knob's, quantising on load when the model stores them unquantised. A model that
// stores quantised experts runs them in that format, or dequantised with bf16; any
// other format would quantise twice: Error naming the model and the knob.
QuantFormat resolve_expert_format(const std::string& expert_dtype, const WeightSource& w);
// True for the weights of an expert (w1, w2, w3 of block_sparse_moe.experts).
bool is_expert_tensor(const std::string& name);
// The format the attention projections (q/k/v/o_proj weights) run in for the knob
// weight_dtype (bf16|fp8|int8), with expert_dtype's rules: quantised on load when the
// model stores them unquantised, a model that stores them quantised runs them in that
// format or dequantised with bf16, anything else is an Error naming the knob.
QuantFormat resolve_weight_format(const std::string& weight_dtype, const WeightSource& w);
// True for the weight of an attention projection (self_attn.{q,k,v,o}_proj.weight).
bool is_attention_projection(const std::string& name);

// Fills dst with the synthetic values of a tensor, rounded to `dtype` (stored as dtype).
void synth_fill(const TensorSpec& s, uint64_t seed, DType dtype, void* dst, int64_t begin, int64_t count);

// The config of a model as WeightSource::open reads it, without opening its weights: a
// synthetic spec's preset (with its layers), or a checkpoint folder's (or ORG/NAME's in
// the Hugging Face cache) config.json with its generation_config.json. Throws Error
// naming the spec, folder or field.
ModelConfig read_model_config(const std::string& model);

// Parses "synthetic:PRESET[:layers=N][:dtype=F]" or "PRESET[...]" into a config (and the
// experts' format, bf16 when not given); returns false if `model` names no preset (then
// it is a checkpoint directory).
bool parse_synthetic_model(const std::string& model, ModelConfig* out, QuantFormat* experts = nullptr);

}  // namespace moebench
