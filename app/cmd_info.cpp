// cmd_info.cpp: `moebench info` prints the build, the backends, the devices, the
// model presets and every setting with its values and default; `info --model M` also
// what the model is and how its experts can run: in each expert_dtype, whether they run
// as stored, quantised on load, dequantised, or not (the reason), and their bytes.
#include <cstdlib>
#include <thread>

#include "app/model_options.h"
#include "cli/command.h"
#include "common/error.h"
#include "common/units.h"
#include "engine/quant.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "engine/build_info.h"
#include "model/config.h"
#include "engine/device_info.h"
#include "engine/host_memory.h"
#include "engine/env_switches.h"
#include "model/settings.h"
#include "variants/cache_policy.h"
#include "variants/routing.h"
#include "variants/stages.h"

namespace cmd_info {

namespace {
// How `w`'s experts can run in format f: one line.
// `layout`: " (its published layout)" or empty.
std::string expert_dtype_line(const moebench::WeightSource& w, moebench::QuantFormat f, const std::string& layout) {
  using namespace moebench;
  const ModelConfig& c = w.config();
  const QuantFormat stored = w.expert_format();
  try {
    resolve_expert_format(quant_format_name(f), w);
    w.read_quant(tensor_spec(c, names::expert(0, 0, "w1")), f);  // a conversion a layout cannot make throws
  } catch (const Error& e) {
    return fmt::format("no: {}", e.what());
  }
  const double one = static_cast<double>(expert_bytes(c, f));
  const char* how = f == stored ? "as stored" : f == QuantFormat::bf16 ? "dequantised" : "quantised on load";
  return fmt::format("{}{}: {} an expert, {} all {} x {}", how, f == stored ? layout : "", format_bytes(one),
                     format_bytes(one * c.num_hidden_layers * c.num_local_experts), c.num_hidden_layers,
                     c.num_local_experts);
}

void print_model(const moebench::app::ModelOptions& o) {
  using namespace moebench;
  const WeightSource w = app::open_weights(o);
  const ModelConfig& c = w.config();
  fmt::print("model: {} ({}, {} layers, {} experts top-{}, hidden {}, intermediate {}, vocab {})\n", w.describe(),
             c.model_type, c.num_hidden_layers, c.num_local_experts, c.num_experts_per_tok, c.hidden_size,
             c.intermediate_size, c.vocab_size);
  const std::string layout = w.stored_layout().empty() ? "" : " (" + w.stored_layout() + ")";
  fmt::print("stored: experts {}{}, attention projections {}\n", quant_format_name(w.expert_format()),
             w.expert_format() != QuantFormat::bf16 ? layout : "", quant_format_name(w.attention_format()));
  fmt::print("expert_dtype:\n");
  for (QuantFormat f : {QuantFormat::bf16, QuantFormat::fp8, QuantFormat::int8, QuantFormat::int4})
    fmt::print("  {:<5} {}\n", quant_format_name(f), expert_dtype_line(w, f, layout));
}

int run(const moebench::app::ModelOptions& o) {
  using namespace moebench;
  if (!o.model.empty() || !o.preset.empty()) {
    print_model(o);
    return 0;
  }
  fmt::print("moebench commit {} ({} build)\n", moebench::build_commit(), MOEBENCH_BUILD_TYPE);
  const HostMemory mem = host_memory();
  fmt::print("host: {} hardware threads, {} of memory ({}), {} available\n", std::thread::hardware_concurrency(),
             mem.total ? format_bytes(static_cast<double>(mem.total)) : "unknown", mem.limit.empty() ? "-" : mem.limit,
             mem.available ? format_bytes(static_cast<double>(mem.available)) : "unknown");
  auto devs = cuda_devices();
  fmt::print("backends: cpu{}\n", cuda_compiled() ? ", cuda (compiled in; device code " + cuda_device_code() + ")"
                                                : " (cuda not compiled in)");
  if (cuda_compiled() && devs.empty()) fmt::print("cuda devices: none ({})\n", cuda_unavailable_reason());
  for (auto& d : devs)
    fmt::print("cuda device {}: {}, cc {}.{}, {} SMs, {:.1f} GiB, driver {}; runs {}\n", d.index, d.name, d.cc_major,
               d.cc_minor, d.sms, d.memory_bytes / 1073741824.0, d.driver, cuda_device_runs(d));
  fmt::print("presets: {}\n", preset_list(", "));
  fmt::print("\nstage presets (--stage NAME; each sets several settings at once):\n");
  for (const StagePreset& s : stage_presets()) fmt::print("  {:<24} {}\n", s.name, s.description);
  fmt::print("\nsettings (--set key=value; stage presets set several at once):\n");
  for (const SettingDoc& d : setting_docs())
    fmt::print("  {:<24} default {:<10} {}\n", d.key, d.default_value.empty() ? "(empty)" : d.default_value, d.values);
  fmt::print("\ncache policies:\n");
  for (const CachePolicyInfo& c : cache_policies()) fmt::print("  {:<24} {}\n", c.name, c.description);
  fmt::print("\nrouting sources:\n");
  for (const RoutingSourceInfo& r : routing_sources())
    fmt::print("  {:<24} {}\n", r.kind == RoutingKind::trace ? "trace:FILE" : r.name, r.description);
  fmt::print("\nenvironment switches (read where they act; the values list the default first; a value outside them is\n"
             "an error naming the variable; most measure one build several ways, tools/device_run.sh PARTS=ab):\n");
  for (const EnvSwitchDoc& e : env_switch_docs()) {
    const char* v = std::getenv(e.name);
    fmt::print("  {:<30} {}{}\n      {} ({})\n", e.name, e.values, v && *v ? fmt::format("  [set here: {}]", v) : "",
               e.what, e.doc);
  }
  return 0;
}
}  // namespace

MOEBENCH_COMMAND(info, "Print the build, backends and devices; with --model, how that model's experts can run", [](CLI::App& sub) {
  auto o = std::make_shared<moebench::app::ModelOptions>();
  sub.add_option("--model", o->model, "DIR, ORG/NAME or synthetic:PRESET[:layers=N][:dtype=F]: print what it stores and how "
                                       "its experts run in each expert_dtype (instead of the build and settings)");
  sub.add_option("--preset", o->preset, "shorthand for --model synthetic:PRESET, PRESET one of " + moebench::preset_list());
  return [o] { return run(*o); };
});

}  // namespace cmd_info
