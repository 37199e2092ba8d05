// chat_template_test.cpp: the chat-template renderer (engine/chat_template.h) against
// Jinja2 as transformers configures it (tests/fixtures/chat_templates/cases.json, written by
// tools/make_chat_template_cases.py): Qwen3's and Qwen2.5's real templates over conversations
// with system prompts, turns, thinking, tools, tool calls and responses; templates in the
// style of Mixtral-Instruct's and Tulu's; one small template per part of the language. Then
// what the subset refuses, each as one line naming the template's line, and the CLI.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "engine/chat_template.h"
#include "engine/tokenizer.h"
#include "tests/test_util.h"

namespace chat_template_test {

using namespace moebench;
using nlohmann::ordered_json;

namespace {

std::string dir() { return test::fixture("chat_templates"); }

ordered_json cases() { return ordered_json::parse(test::read_file(dir() + "/cases.json")); }

std::string render_error(const std::string& src, const ordered_json& ctx = ordered_json::object()) {
  try {
    render_jinja(src, ctx, "t");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ChatTemplate, RendersAsJinja2) {
  const ordered_json all = cases();
  ASSERT_GE(all.at("cases").size(), 40u);
  int real = 0, raising = 0;
  for (const ordered_json& c : all.at("cases")) {
    const std::string name = c.at("template").get<std::string>();
    SCOPED_TRACE(name + " " + c.at("context").dump().substr(0, 200));
    std::string got, error;
    try {
      if (c.contains("source")) {
        got = render_jinja(c.at("source").get<std::string>(), c.at("context"), name);
      } else {  // a real tokenizer_config.json: through ChatTemplate, as generate --chat takes it
        const ChatTemplate t = ChatTemplate::load(dir() + "/" + name + "_tokenizer_config.json");
        ordered_json extra = c.at("context");
        const ordered_json messages = extra.at("messages");
        const bool gen = extra.at("add_generation_prompt").get<bool>();
        for (const char* k : {"messages", "add_generation_prompt", "bos_token", "eos_token"}) extra.erase(k);
        got = t.apply(messages, gen, extra);
        ++real;
      }
    } catch (const Error& e) {
      error = e.what();
    }
    if (c.contains("error")) {
      ++raising;
      EXPECT_NE(error.find("the template raised: " + c.at("error").get<std::string>()), std::string::npos) << error;
    } else {
      EXPECT_EQ(error, "");
      EXPECT_EQ(got, c.at("expected").get<std::string>());
    }
  }
  EXPECT_EQ(real, 16);
  EXPECT_GE(raising, 3);
}

// What the subset does not have, and broken templates: one line naming the template's line.
TEST(ChatTemplate, RefusesWhatItDoesNotKnowNamingTheLine) {
  EXPECT_EQ(render_error("a\n{% macro m() %}x{% endmacro %}"),
            "t: line 2: '{% macro %}' is not supported (the chat-template subset: if, for, set, generation)");
  EXPECT_EQ(render_error("{{ x|wordwrap }}"), "t: line 1: filter 'wordwrap' is not in the chat-template subset");
  EXPECT_EQ(render_error("\n\n{{ x is prime }}"), "t: line 3: test 'prime' is not in the chat-template subset");
  EXPECT_EQ(render_error("{{ 'a'.zfill(3) }}"), "t: line 1: 'str' has no method 'zfill' in the chat-template subset");
  EXPECT_EQ(render_error("{{ strftime_now('%d') }}"),
            "t: line 1: 'strftime_now' is not a function the chat-template subset has (raise_exception, namespace, "
            "dict, range)");
  EXPECT_EQ(render_error("{% if x %}a"), "t: line 1: '{% if %}' is never closed");
  EXPECT_EQ(render_error("{% endfor %}"), "t: line 1: unexpected '{% endfor %}'");
  EXPECT_EQ(render_error("x {{ 1 +"), "t: line 1: '{{' is never closed by '}}'");
  EXPECT_EQ(render_error("{{ 1 + }}"), "t: line 1: expected a value, found the end of the tag");
  EXPECT_EQ(render_error("{% break %}"), "t: line 1: '{% break %}' outside a loop");
  EXPECT_EQ(render_error("{{ 1 / 0 }}"), "t: line 1: division by zero");
  EXPECT_EQ(render_error("{{ 'a' + 1 }}"), "t: line 1: unsupported operand types for +: 'str' and 'int'");
  EXPECT_EQ(render_error("{% for x in 3 %}{% endfor %}"), "t: line 1: for: int is not iterable");
  EXPECT_EQ(render_error("{% set ns.a = 1 %}"), "t: line 1: set ns.a: 'ns' is no namespace");
  EXPECT_EQ(render_error("{{ raise_exception('no system role') }}"), "t: line 1: the template raised: no system role");
}

TEST(ChatTemplate, LoadNamesTheFileAndField) {
  const test::TempDir d;
  const std::string p = d.str("tokenizer_config.json");
  auto error_of = [&](const std::string& text, const std::string& name = "default") -> std::string {
    test::write_file(p, text);
    try {
      ChatTemplate::load(p, name);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of(R"({"bos_token": "<s>"})"), p + ": no field 'chat_template' (the checkpoint has no chat template)");
  EXPECT_EQ(error_of(R"({"chat_template": 3})"),
            p + ": field 'chat_template' is int, expected a string or a list of named templates");
  EXPECT_EQ(error_of(R"({"chat_template": [{"name": "tool_use", "template": "t"}]})"),
            p + ": field 'chat_template' has no template named 'default'");
  EXPECT_EQ(error_of(R"({"chat_template": [{"name": 1}]})"),
            p + ": field 'chat_template[0]' expected an object with string fields 'name' and 'template'");
  EXPECT_EQ(error_of(R"({"chat_template": "x", "eos_token": 5})"),
            p + ": field 'eos_token' is 5, expected a string, null or an added token's object");
  EXPECT_EQ(error_of(R"({"chat_template": "{% if %}"})"), p + ": chat_template: line 1: expected a value, found the end of the tag");
  std::string parse_error;  // nlohmann's own message for the same text
  try {
    const nlohmann::json unused = nlohmann::json::parse("{");
  } catch (const nlohmann::json::exception& e) {
    parse_error = e.what();
  }
  ASSERT_FALSE(parse_error.empty());
  EXPECT_EQ(error_of("{"), p + ": not valid JSON: " + parse_error);
  // Named templates, and the special tokens as added-token objects.
  test::write_file(p, R"({"chat_template": [{"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}"},
                                           {"name": "rag", "template": "R"}],
                          "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": null})");
  const ChatTemplate t = ChatTemplate::load(p);
  EXPECT_EQ(t.bos_token, "<s>");
  EXPECT_EQ(t.eos_token, "");
  EXPECT_EQ(t.apply(ordered_json::parse(R"([{"role": "user", "content": "hi"}])"), true), "<s>hi");
  EXPECT_EQ(ChatTemplate::load(p, "rag").apply(ordered_json::array(), false), "R");
}

// generate --chat: the prompt as a user's turn after --system's, through Qwen3's template
// (the fixture's tokenizer_config.json) and tokenizer: the prompt is the encoding of the
// text Jinja2 renders for that conversation, without a BOS of moebench's own.
TEST(ChatTemplate, GenerateAppliesTheTemplate) {
  std::string expected;
  const ordered_json all = cases();  // kept: a loop over a temporary's member would read freed memory
  for (const ordered_json& c : all.at("cases"))
    if (c.at("template") == "qwen3" && c.at("context").at("messages").size() == 2 &&
        c.at("context").at("messages")[0].at("role") == "system")
      expected = c.at("expected").get<std::string>();
  ASSERT_NE(expected.find("<|im_start|>system\nYou are terse.<|im_end|>"), std::string::npos) << expected;
  const std::string file = test::fixture("qwen3/tokenizer.json");
  const test::TempDir d;
  const test::CliRun r = test::run_moebench(
      {"generate", "--model", "synthetic:tiny-qwen3", "--tokenizer", file, "--backend", "cpu", "--prompt",
       "What is 2+2?", "--chat", "--system", "You are terse.", "--chat-template",
       dir() + "/qwen3_tokenizer_config.json", "--max-new-tokens", "2"},
      d);
  ASSERT_EQ(r.code, 0) << r.err;
  const Tokenizer tok = Tokenizer::load(file);
  const std::vector<int32_t> ids = tok.encode(expected, false);
  ASSERT_EQ(ids.front(), tok.token_id("<|im_start|>"));
  EXPECT_EQ(r.out.substr(0, tok.decode(ids).size()), tok.decode(ids));
  EXPECT_NE(r.out.find(fmt::format("prompt {} tok", ids.size())), std::string::npos) << r.out;
  // Without a checkpoint folder there is no template to find; the chat options need --chat.
  const test::CliRun none = test::run_moebench(
      {"generate", "--model", "synthetic:tiny-qwen3", "--backend", "cpu", "--prompt", "hi", "--chat"}, d);
  EXPECT_EQ(none.code, 1);
  EXPECT_NE(none.err.find("--chat: synthetic:tiny-qwen3 is no checkpoint folder"), std::string::npos) << none.err;
  const test::CliRun preset =  // --preset names the model too (the line once left its name empty)
      test::run_moebench({"generate", "--preset", "tiny-qwen3", "--backend", "cpu", "--prompt", "hi", "--chat"}, d);
  EXPECT_EQ(preset.code, 1);
  EXPECT_NE(preset.err.find("--chat: synthetic:tiny-qwen3 is no checkpoint folder"), std::string::npos) << preset.err;
  const test::CliRun lone = test::run_moebench(
      {"generate", "--model", "synthetic:tiny-qwen3", "--backend", "cpu", "--prompt", "hi", "--chat-var", "a=1"}, d);
  EXPECT_EQ(lone.code, 1);
  EXPECT_NE(lone.err.find("need --chat"), std::string::npos) << lone.err;
}

}  // namespace chat_template_test
