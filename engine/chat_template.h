// chat_template.h: a checkpoint's chat template (tokenizer_config.json's `chat_template`,
// Jinja) rendered as transformers' apply_chat_template renders it: the Jinja subset chat
// templates use, with trim_blocks and lstrip_blocks on, `raise_exception`, `namespace`,
// Python's string and dict methods and the `tojson` filter. The text it gives is then
// encoded without adding a BOS (the template writes its own special tokens), as
// apply_chat_template(tokenize=True) does. What the subset lacks (macros, call blocks,
// unknown filters, tests or methods) is refused with one line naming the template's line.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace moebench {

// Renders Jinja `source` with the variables of `context` (an object; key order kept).
// `origin` names the template in errors ("DIR/tokenizer_config.json: chat_template").
// Throws Error on a template outside the subset or on raise_exception().
std::string render_jinja(const std::string& source, const nlohmann::ordered_json& context, const std::string& origin);

struct ChatTemplateTree;  // a parsed template (engine/chat_template.cpp)

struct ChatTemplate {
  std::string source;           // the Jinja text
  std::shared_ptr<const ChatTemplateTree> tree;  // source parsed, once, by load()
  std::string bos_token;        // the special tokens' text the template may write ("" when none)
  std::string eos_token;
  std::string origin;           // for errors
  // A tokenizer_config.json's template: `chat_template` as a string, or a list of
  // {name, template} whose entry `name` is taken ("default" unless asked otherwise).
  // Errors name the file, the field and what was expected.
  static ChatTemplate load(const std::string& tokenizer_config, const std::string& name = "default");
  // messages: a list of {"role", "content", ...}; the variables apply_chat_template passes
  // (messages, add_generation_prompt, bos_token, eos_token) plus `extra`'s (tools,
  // enable_thinking, ...).
  std::string apply(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                    const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;
};

}  // namespace moebench
