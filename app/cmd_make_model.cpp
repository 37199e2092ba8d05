// cmd_make_model.cpp: `moebench make-model` writes a synthetic HF checkpoint.
#include <memory>

#include "cli/command.h"
#include "common/error.h"
#include "engine/synth_checkpoint.h"
#include "engine/weight_source.h"
#include "model/config.h"

namespace cmd_make_model {

namespace {
struct Args {
  std::string preset;
  int layers = 0;
  uint64_t seed = 0;
  std::string dtype = "bf16";
  std::string out;
  double shard_gib = 4.0;
};

int run(const Args& a) {
  using namespace moebench;
  ModelConfig c = preset_config(a.preset);
  if (a.layers > 0) c.num_hidden_layers = a.layers;
  // fp8|int8|int4: bf16 weights with the experts quantised (engine/quant.h).
  DType dt = DType::bf16;
  QuantFormat experts = QuantFormat::bf16;
  if (a.dtype == "fp8" || a.dtype == "int8" || a.dtype == "int4")
    experts = parse_quant_format(a.dtype, "--dtype");
  else if (!parse_dtype(a.dtype, &dt))
    fail("--dtype '{}' is not one of bf16|f16|f32|fp8|int8|int4", a.dtype);
  auto info = write_synthetic_checkpoint(c, a.seed, dt, a.out, static_cast<uint64_t>(a.shard_gib * (1ULL << 30)), experts);
  fmt::print("wrote {} ({} layers, {}, seed {}): {} shard(s), {:.1f} MiB\n", a.out, c.num_hidden_layers, a.dtype,
             a.seed, info.shards, info.bytes / 1048576.0);
  return 0;
}
}  // namespace

MOEBENCH_COMMAND(make_model, "Write a synthetic Mixtral checkpoint (config.json + safetensors) in the HF layout",
                 [](CLI::App& sub) {
                   auto a = std::make_shared<Args>();
                   sub.name("make-model");
                   sub.add_option("--preset", a->preset, "Model shape: " + moebench::preset_list())->required();
                   sub.add_option("--layers", a->layers, "Override the number of layers")->check(moebench::app::kPositiveNumber);
                   sub.add_option("--seed", a->seed, "Seed of the counter-based generator")->required();
                   sub.add_option("--dtype", a->dtype, "bf16|f16|f32, or fp8|int8|int4: bf16 with quantised experts")
                       ->check(CLI::IsMember({"bf16", "f16", "f32", "fp8", "int8", "int4"}));
                   sub.add_option("--out", a->out, "Output folder")->required();
                   sub.add_option("--shard-gib", a->shard_gib, "Shard size limit in GiB")->check(moebench::app::kPositiveNumber);
                   return [a] { return run(*a); };
                 });

}  // namespace cmd_make_model
