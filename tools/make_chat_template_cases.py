#!/usr/bin/env python3
"""make_chat_template_cases.py: writes tests/fixtures/chat_templates/cases.json, chat templates
rendered the way transformers' apply_chat_template renders them. That is Jinja2's
ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks on and the loopcontrols
extension, transformers' tojson filter (json.dumps, ensure_ascii off), and its
raise_exception. moebench's renderer (engine/chat_template.cpp) must match these texts.

The cases cover:
- two real templates, from Qwen3's and Qwen2.5's tokenizer_config.json (kept beside the
  fixture), over conversations with a system prompt, several turns, thinking, tools, tool
  calls and tool responses;
- two templates written here, in the style of Mixtral-Instruct's and Tulu's (OLMoE-Instruct's);
- small templates that each exercise one part of the language.
A case whose template raises records the error's message instead of the text.

    python3 tools/make_chat_template_cases.py      (needs the jinja2 package, 3.x)
"""
import json
import os

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(HERE, "..", "tests", "fixtures", "chat_templates")


class TemplateError(Exception):
    pass


def environment():
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


ENV = environment()


def render(src, context):
    try:
        return {"expected": ENV.from_string(src).render(**context)}
    except TemplateError as e:
        return {"error": str(e)}


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather at a place",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city"]},
    },
}
CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "Hello"}], "add_generation_prompt": True},
    {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
     "add_generation_prompt": True},
    {"messages": [{"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\nThe answer is 4."},
                  {"role": "user", "content": "Why?"}], "add_generation_prompt": True},
    {"messages": [{"role": "user", "content": "Say hi"}], "add_generation_prompt": True, "enable_thinking": False},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}],
     "add_generation_prompt": False},
    {"messages": [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": "",
                   "tool_calls": [{"type": "function",
                                   "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
                  {"role": "tool", "content": "{\"temp\": 21}"},
                  {"role": "tool", "content": "{\"temp\": 19}"}],
     "tools": [TOOL], "add_generation_prompt": True},
    {"messages": [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": "Checking.",
                   "tool_calls": [{"function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                  {"role": "tool", "content": "cold"},
                  {"role": "assistant", "content": "<think>\nIt is cold.\n</think>\n\nIt is cold in Oslo."}],
     "tools": [TOOL], "add_generation_prompt": False},
    {"messages": [{"role": "user", "content": "First"},
                  {"role": "assistant", "content": "Answer one", "reasoning_content": "kept apart"},
                  {"role": "user", "content": "東京 😀 naïve\n\ttabs  and  spaces "}], "add_generation_prompt": True},
]

WRITTEN = {
    "mixtral-instruct-style":
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    "tulu-style":
        "{{ bos_token }}{% for message in messages %}\n{% if message['role'] == 'system' %}\n"
        "{{ '<|system|>\\n' + message['content'] + '\\n' }}\n{% elif message['role'] == 'user' %}\n"
        "{{ '<|user|>\\n' + message['content'] + '\\n' }}\n{% elif message['role'] == 'assistant' %}\n"
        "{% if not loop.last %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}\n{% else %}\n"
        "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n{% endif %}\n"
        "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>\\n' }}\n{% endif %}\n{% endfor %}",
}
MIXTRAL_CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "Hello"}], "add_generation_prompt": True},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                  {"role": "user", "content": "Bye"}], "add_generation_prompt": True},
    {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi"}], "add_generation_prompt": True},
    {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "add_generation_prompt": True},
]

CTX = {"xs": [1, 2, 3], "s": " a b  c z ", "t": "x,y,,z", "d": {"k": "v", "n": 2, "l": [1, "two"]}, "n": None,
       "b": False, "x": "str", "e": [], "f": 2.0}
FEATURES = [
    ("white space", "A\n  {% if xs %}\n    yes\n  {% endif %}\nB {{- ' c ' -}} D\n{# a comment #}\n"
                    "E  {%- if true %} F {% endif -%}  G\n  {{ x }}\n{%+ if true %}k{% endif %}\n  {# c2 #}\nH", CTX),
    ("loop variables", "{% for m in xs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/"
                       "{{ loop.first }}/{{ loop.last }}/{{ loop.length }}/{{ loop.previtem }}/{{ loop.nextitem }};"
                       "{% endfor %}", CTX),
    ("loop filter and else", "{% for v in xs if v > 1 %}{{ v }}{{ loop.index }}{% else %}none{% endfor %}|"
                             "{% for v in e %}{{ v }}{% else %}empty{% endfor %}|"
                             "{% for a, c in [[1, 2], [3, 4]] %}{{ a + c }}{% endfor %}", CTX),
    ("loop controls", "{% for v in [1, 2, 3, 4, 5] %}{% if v == 2 %}{% continue %}{% endif %}{% if v == 4 %}{% break %}"
                      "{% endif %}{{ v }}{% endfor %}", CTX),
    ("nested loops", "{% for a in xs %}{% for c in xs %}{{ loop.index * a }}{% endfor %}{{ loop.index }};{% endfor %}", CTX),
    ("slicing", "{{ xs[::-1] }} {{ xs[1:] }} {{ xs[:-1] }} {{ s[1:3] }} {{ xs[-1] }} {{ s[::-1] }} {{ xs[::2] }} "
                "{{ xs[5:] }} {{ xs[-2:] }} {{ xs[-1:0:-1] }}", CTX),
    ("string methods", "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s.split() }}|{{ t.split(',') }}|"
                       "{{ t.split(',')[-1] }}|{{ s.upper() }}|{{ s.startswith(' a') }}|{{ s.endswith('z ') }}|"
                       "{{ t.replace(',', ';') }}|{{ '\\n\\nx\\n'.strip('\\n') }}|{{ 'Hello World'.lower() }}|"
                       "{{ 'hello world'.title() }}|{{ 'hello'.capitalize() }}|{{ t.split(',', 1) }}|"
                       "{{ 'a<think>b</think>c'.split('</think>')[0].split('<think>')[-1] }}|{{ '-'.join(['a', 'b']) }}|"
                       "{{ 'abc'.find('c') }}|{{ s.startswith(('q', ' ')) }}", CTX),
    ("filters", "{{ xs|length }} {{ s|length }} {{ s|trim }} {{ xs|join(', ') }} {{ xs|first }} {{ xs|last }} "
                "{{ u|default('dflt') }} {{ xs|reverse|list }} {{ s|upper }} {{ x|lower }} {{ 'abc'|list }} "
                "{{ d|length }} {{ -3|abs }} {{ 'a-b'|replace('-', '+') }} {{ n|default('z', true) }} {{ xs|string }} "
               "{{ '12'|int + 1 }} {{ [{'a': 1}, {'a': 2}]|map(attribute='a')|list }} "
                "{{ [{'a': 1}, {'b': 2}]|selectattr('a', 'defined')|list }} {{ 'x'|safe }}", CTX),
    ("tojson", "{{ d|tojson }} {{ xs|tojson }} {{ s|tojson }} {{ n|tojson }} {{ b|tojson }} {{ e|tojson }} "
               "{{ 'é\"\\\\'|tojson }} {{ f|tojson }} {{ 1.5|tojson }}\n{{ d|tojson(indent=2) }}", CTX),
    ("tests", "{{ u is defined }} {{ x is defined }} {{ n is none }} {{ n is not none }} {{ x is string }} "
              "{{ d is mapping }} {{ 3 is odd }} {{ 4 is even }} {{ b is false }} {{ b is true }} {{ xs is iterable }} "
              "{{ 2.5 is number }} {{ u is undefined }} {{ 9 is divisibleby(3) }} {{ 2 is integer }} {{ f is float }} "
              "{{ 'A' is upper }} {{ 3 is eq(3) }}", CTX),
    ("namespace and set", "{% set ns = namespace(c=0, s='') %}{% for v in xs %}{% set ns.c = ns.c + v %}"
                          "{% set ns.s = ns.s ~ v %}{% set y = v %}{% endfor %}{{ ns.c }} {{ ns.s }} {{ y is defined }}"
                          "{% set z %}block {{ ns.c }}{% endset %}[{{ z }}]{% set w = 5 %}{% if true %}{% set w = 6 %}"
                          "{% endif %}{{ w }}", CTX),
    ("arithmetic", "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} "
                   "{{ (1 + 2) * 3 }} {{ 10 - 2 - 3 }} {{ 1.5 + 1 }} {{ xs|length - 1 }} {{ 7.5 // 2 }} {{ -2 ** 2 }} "
                   "{{ 2 * -3 }}", CTX),
    ("operators", "{{ 'a' ~ 1 ~ n }} {{ 'ab' * 3 }} {{ [1] + [2] }} {{ 1 if false else 2 }} {{ 'y' if true }}"
                  "{{ 'n' if false }} {{ 'b' in 'abc' }} {{ 3 not in xs }} {{ 'k' in d }} {{ 1 == 1.0 }} {{ 'a' < 'b' }} "
                  "{{ n or 'x' }} {{ 0 and 1 }} {{ not 0 }} {{ not x == 'str' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} "
                  "{{ 'ab' ~ 'c' == 'abc' }}", CTX),
    ("printing values", "{{ xs }} {{ d }} {{ n }} {{ true }} {{ 1.5 }} {{ 2.0 }} {{ [\"it's\"] }} [{{ u }}] {{ e }} "
                        "{{ 10 / 4 }} {{ 'q' }} {{ ['a\"b', \"c'd\", 'e\\\\f'] }} {{ 1e3 }} {{ 0.1 + 0.2 }}", CTX),
    ("dicts", "{{ d['k'] }} {{ d.k }} {{ d.get('k') }} {{ d.get('missing', 'fallback') }} {{ d.missing is defined }} "
              "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %} "
              "{{ d.keys()|list }} {{ d.values()|list }} {{ {'a': 1, 'b': [2]} }} {{ d.l[1] }} {{ d.get('missing') }}", CTX),
    ("elif chains", "{% for v in [0, 1, 2, 3] %}{% if v == 0 %}zero{% elif v == 1 %}one{% elif v == 2 %}two"
                    "{% else %}many{% endif %},{% endfor %}", CTX),
    ("lstrip and trim blocks", "<ul>\n  {% for v in xs %}\n    <li>{{ v }}</li>\n  {% endfor %}\n</ul>\n  {#- c -#}  \n"
                               "{% if true -%}\n   x\n{%- endif %}\n\t{% if true %}\r\ny{% endif %}\n", CTX),
    ("raise", "{% if x != 'ok' %}{{ raise_exception('bad value: ' + x) }}{% endif %}", CTX),
    ("messages by index", "{{ messages[0]['role'] }} {{ messages[-1].content }} {{ messages|length }} "
                          "{% for m in messages[1:] %}{{ m.role }}{% endfor %} {{ messages[5] is defined }}",
     {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                   {"role": "assistant", "content": "A"}]}),
]


def main():
    cases = []
    for name in ("qwen3", "qwen2_5"):
        with open(os.path.join(DIR, name + "_tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        for c in CONVERSATIONS:
            context = {"bos_token": cfg.get("bos_token") or "", "eos_token": cfg.get("eos_token") or "", **c}
            cases.append({"template": name, "context": context, **render(cfg["chat_template"], context)})
    for name, src in WRITTEN.items():
        for c in (CONVERSATIONS[:5] if name == "tulu-style" else MIXTRAL_CONVERSATIONS):
            context = {"bos_token": "<s>", "eos_token": "</s>", **c}
            cases.append({"template": name, "source": src, "context": context, **render(src, context)})
    for name, src, context in FEATURES:
        cases.append({"template": name, "source": src, "context": context, **render(src, context)})
    with open(os.path.join(DIR, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": "Jinja2 %s as transformers configures it (tools/make_chat_template_cases.py)"
                   % jinja2.__version__, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %d cases, %d raising" % (len(cases), sum("error" in c for c in cases)))


if __name__ == "__main__":
    main()
