// fuzz_chat_template.cpp: fuzz target for chat templates (a checkpoint's tokenizer_config.json
// chat_template, Jinja): the input is the template's text, rendered over a conversation with
// every role, tools and tool calls. A template may be refused (Error) but must not crash,
// overflow or run away (the renderer bounds its steps and its text); a template that renders
// must render the same text twice.
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/chat_template.h"
#include "tests/fuzz/fuzz_util.h"

using namespace moebench;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::ordered_json ctx = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u <think>x</think> y"},
                 {"role": "assistant", "content": "<think>\nr\n</think>\n\na", "reasoning_content": "r",
                  "tool_calls": [{"function": {"name": "f", "arguments": {"k": [1, 2.5, null, true]}}}]},
                 {"role": "tool", "content": "{\"t\": 1}"}, {"role": "user", "content": "東京"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "enable_thinking": false, "bos_token": "<s>", "eos_token": "</s>",
    "n": 3, "f": 0.5, "none": null})");
  const std::string src(reinterpret_cast<const char*>(data), size);
  try {
    const std::string a = render_jinja(src, ctx, "fuzz");
    const std::string b = render_jinja(src, ctx, "fuzz");
    fuzz::check(a == b, "two renders of one template differ");
  } catch (const Error&) {
  }
  return 0;
}
