// cmd_generate.cpp: `moebench generate` prints the generated text and a one-line
// timing summary (the summary line starts with "# ").
#include <chrono>
#include <cstdio>
#include <memory>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "engine/chat_template.h"
#include "app/model_options.h"
#include "engine/embedded_tokenizer.h"
#include "engine/tokenizer.h"
#include "common/error.h"
#include "engine/cpu_model.h"
#include "engine/generate.h"
#include "engine/routing_recorder.h"
#include "common/atomic_file.h"

namespace cmd_generate {

namespace {
struct Args {
  moebench::app::ModelOptions model;
  std::string prompt;
  int max_new_tokens = 32;
  float temperature = 0.0f;
  float top_p = 1.0f;
  bool ignore_eos = false;
  bool ids = false;
  std::string record_routing;
  bool chat = false;
  std::string system;
  std::string chat_template;
  std::vector<std::string> chat_vars;
};

// --chat: the prompt as the user's turn (after --system's), through the checkpoint's chat
// template (--chat-template FILE, else the tokenizer_config.json beside the checkpoint), with
// the generation prompt added; the text is encoded without a BOS of our own, as
// apply_chat_template(tokenize=True) encodes it (the template writes its special tokens).
std::vector<int32_t> chat_prompt(const Args& a, const moebench::WeightSource& w, const moebench::Tokenizer& tok) {
  using namespace moebench;
  std::string file = a.chat_template;
  if (file.empty()) {
    if (!w.ckpt())
      fail("--chat: {} is no checkpoint folder with a tokenizer_config.json: pass --chat-template FILE",
           a.model.preset.empty() ? a.model.model : "synthetic:" + a.model.preset);  // --model or --preset
    file = (std::filesystem::path(w.ckpt()->dir()) / "tokenizer_config.json").string();
    if (!std::filesystem::exists(file))
      fail("--chat: {} has no tokenizer_config.json (its chat template): pass --chat-template FILE", w.ckpt()->dir());
  }
  const ChatTemplate t = ChatTemplate::load(file);
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!a.system.empty()) messages.push_back({{"role", "system"}, {"content", a.system}});
  messages.push_back({{"role", "user"}, {"content", a.prompt}});
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  for (const std::string& kv : a.chat_vars) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) fail("--chat-var {}: expected NAME=VALUE (VALUE as JSON, else a string)", kv);
    const std::string v = kv.substr(eq + 1);
    nlohmann::ordered_json parsed = nlohmann::ordered_json::parse(v, nullptr, false);
    extra[kv.substr(0, eq)] = parsed.is_discarded() ? nlohmann::ordered_json(v) : parsed;
  }
  return tok.encode(t.apply(messages, true, extra), false);
}

int run(const Args& a) {
  using namespace moebench;
  check_paths({{"--tokenizer", a.model.tokenizer}, {"--chat-template", a.chat_template}},
              {{"--record-routing", a.record_routing}});
  auto t0 = std::chrono::steady_clock::now();
  WeightSource w = app::open_weights(a.model);
  Tokenizer tok = tokenizer_for_model(w, a.model.tokenizer);
  auto model = app::make_model(a.model, w);
  std::unique_ptr<RoutingRecorder> rec;
  if (!a.record_routing.empty()) {
    auto* cpu = dynamic_cast<CpuModel*>(model.get());
    if (!cpu) fail("--record-routing is supported on the cpu backend only in this build");
    const ModelConfig& c = w.config();
    rec = std::make_unique<RoutingRecorder>(c.num_hidden_layers, c.num_local_experts, c.num_experts_per_tok,
                                            "moebench generate, routing " + cpu->routing_name());
    cpu->set_routing_observer(std::ref(*rec));
  }
  double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!a.chat && (!a.system.empty() || !a.chat_template.empty() || !a.chat_vars.empty()))
    fail("--system, --chat-template and --chat-var need --chat");
  const std::vector<int32_t> prompt = a.chat ? chat_prompt(a, w, tok) : tok.encode(a.prompt, true);
  GenerateOptions opt;
  opt.max_new_tokens = a.max_new_tokens;
  opt.sampling = {a.temperature, a.top_p, a.model.seed};
  opt.stop_at_eos = !a.ignore_eos;
  // Stream: print the text decoded so far each time it grows.
  // Decoding prompt + output keeps the word boundary between them.
  std::vector<int32_t> all = prompt;
  check_sequence_fits(*model, prompt.size(), opt.max_new_tokens);  // before the prompt is echoed
  std::string printed = tok.decode(prompt);
  std::fputs(printed.c_str(), stdout);
  auto r = generate(*model, prompt, opt, [&](int32_t id, int) {
    all.push_back(id);
    std::string text = tok.decode(all);
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::fputs(text.c_str() + printed.size(), stdout);
      std::fflush(stdout);
      printed = text;
    }
  });
  std::fputs("\n", stdout);
  if (rec) save_trace(rec->trace(), a.record_routing);
  {
    std::string kv;
    for (auto& [k, v] : app::settings_from(a.model).to_list()) kv += " " + k + "=" + v;
    fmt::print("# settings:{}\n", kv);
  }
  if (a.ids) {
    std::string s;
    for (auto id : r.output) s += (s.empty() ? "" : ",") + std::to_string(id);
    fmt::print("# ids [{}]\n", s);
  }
  fmt::print("# {} backend, model {} ({}): load {:.2f} s, prompt {} tok, prefill {:.1f} ms ({:.1f} tok/s), "
             "{} new tok, decode {:.1f} tok/s, TTFT {:.1f} ms\n",
             model->backend(), w.config().name, w.describe(), load_s, r.prompt_tokens, r.prefill_ns / 1e6,
             r.prefill_tokens_per_s(), r.output.size(), r.decode_tokens_per_s(),
             r.token_latency_ns.empty() ? 0.0 : r.token_latency_ns[0] / 1e6);
  return 0;
}
}  // namespace

MOEBENCH_COMMAND(generate, "Generate text from a prompt and print a timing summary", [](CLI::App& sub) {
  auto a = std::make_shared<Args>();
  moebench::app::add_model_options(sub, a->model);
  sub.add_option("--prompt", a->prompt, "Prompt text")->required();
  sub.add_option("--max-new-tokens", a->max_new_tokens, "Tokens to generate")->check(moebench::app::kNonNegativeNumber);
  sub.add_option("--temperature", a->temperature, "0 = greedy")->check(moebench::app::kNonNegativeNumber);
  sub.add_option("--top-p", a->top_p, "Nucleus sampling mass in (0, 1]")->check(CLI::Range(0.0, 1.0));
  sub.add_flag("--ignore-eos", a->ignore_eos, "Keep generating after EOS");
  sub.add_flag("--print-ids", a->ids, "Also print the generated token ids");
  sub.add_flag("--chat", a->chat,
               "The prompt is a user's turn: apply the checkpoint's chat template (tokenizer_config.json), "
               "with the generation prompt");
  sub.add_option("--system", a->system, "With --chat: a system message before the user's");
  sub.add_option("--chat-template", a->chat_template,
                 "With --chat: the tokenizer_config.json whose chat_template to apply (default: the checkpoint's)");
  sub.add_option("--chat-var", a->chat_vars,
                 "With --chat: NAME=VALUE passed to the template (VALUE as JSON, else a string), e.g. "
                 "enable_thinking=false");
  sub.add_option("--record-routing", a->record_routing, "Write the run's expert choices as a routing trace (replay with --routing trace:FILE)");
  return [a] { return run(*a); };
});

}  // namespace cmd_generate
