#!/usr/bin/env python3
"""Reference ids for long whitespace runs, for test/tokenizer-limits.test.ts.

The Node tokenizer replaces the backtracking alternative of Qwen's pre-tokenizer pattern with
an equivalent one (lib/tokenizer/limits.ts), because the original makes Oniguruma give up on a
whitespace run of about ten million characters, which aborts the process. This script records,
for each case, Python's ids with the original tokenizer.json (null where Python raises, as it
does for ten million spaces) and with the rewritten pattern, and fails unless the two agree
wherever the original succeeds, on these cases and on the 1,200-string parity corpus.

Cases are given as lists of [string, repeat] parts, so the test can rebuild the same text.

usage: python3 scripts/python/tokenizer_whitespace_parity.py OUT.json --old PATTERN --new PATTERN [--tokenizer tokenizer.json]
"""
import argparse
import hashlib
import json
import os
import random
import sys

from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_parity import DEFAULT_TOKENIZER, make_corpus  # noqa: E402

# Bump when the cases or the record layout change, so stale fixtures get regenerated.
FORMAT_VERSION = 1

K = 1000
CASES = {
    "100k spaces": [[" ", 100 * K]],
    "100k tabs": [["\t", 100 * K]],
    "100k newlines": [["\n", 100 * K]],
    "50k CRLF": [["\r\n", 50 * K]],
    "mixed blanks and breaks": [[" \t \n", 25 * K], ["  \t", 10 * K], ["\r\n\n ", 5 * K]],
    "blanks then a break": [[" ", 100 * K], ["\n", 1]],
    "a break then blanks": [["\n", 1], [" ", 100 * K]],
    "between words": [["word", 1], [" ", 100 * K], ["word", 1]],
    "between words, ending in a break": [["x", 1], [" \t", 50 * K], ["\n", 1], ["y", 1]],
    "after punctuation, newlines": [["!!", 1], ["\n", 100 * K], [" ?", 1]],
    "between digits": [["123", 1], [" ", 100 * K], ["456", 1]],
    "CJK around": [["你好", 1], [" ", 100 * K], ["世界", 1]],
    "emoji and ideographic spaces": [["👍🏽", 1], ["\u3000", 50 * K], ["🚀", 1]],
    "no-break spaces before a letter": [["\u00a0", 100 * K], ["x", 1]],
    "special tokens around": [["<|im_start|>", 1], [" ", 100 * K], ["<|im_end|>", 1]],
    "many medium runs": [["a" + " " * 999, 300], ["\n" * 7 + "b", 300]],
    "1M spaces": [[" ", 1000 * K]],
    "3M blanks and breaks": [[" \n", 1500 * K], [" x", 1]],
    "10M spaces": [[" ", 10_000 * K]],
    "x, 10M spaces, x": [["x", 1], [" ", 10_000 * K], ["x", 1]],
}


def build(parts):
    return "".join(s * n for s, n in parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    ap.add_argument("--old", required=True, help="the backtracking alternative, as in the pattern")
    ap.add_argument("--new", required=True, help="its replacement")
    args = ap.parse_args()

    with open(args.tokenizer, "rb") as f:
        raw = f.read()
    original = Tokenizer.from_str(raw.decode("utf-8"))
    spec = json.loads(raw)
    split = spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]
    if split["Regex"].count(args.old) != 1:
        sys.exit(f"the pattern does not contain {args.old!r} exactly once: {split['Regex']!r}")
    split["Regex"] = split["Regex"].replace(args.old, args.new)
    linear = Tokenizer.from_str(json.dumps(spec))

    def ids_of(tok, text):
        return tok.encode(text, add_special_tokens=False).ids

    corpus = make_corpus(random.Random(3407), 1200)
    for s in corpus:
        if ids_of(original, s) != ids_of(linear, s):
            sys.exit(f"the rewritten pattern changes the ids of corpus string {s!r}")

    cases = []
    for name, parts in CASES.items():
        text = build(parts)
        try:
            ids = ids_of(original, text)
        except BaseException as e:  # a PanicException derives from BaseException
            print(f"{name}: Python's tokenizers raised {type(e).__name__}: {e}", file=sys.stderr)
            ids = None
        linear_ids = ids_of(linear, text)
        if ids is not None and ids != linear_ids:
            sys.exit(f"the rewritten pattern changes the ids of case {name!r}")
        cases.append({"name": name, "parts": parts, "ids": ids, "linear_ids": linear_ids})

    out = {
        "meta": {
            "format_version": FORMAT_VERSION,
            "tokenizer_sha256": hashlib.sha256(raw).hexdigest(),
            "new_pattern": args.new,
            "corpus_checked": len(corpus),
        },
        "cases": cases,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    os.replace(tmp, args.out)
    print(f"wrote {len(cases)} whitespace cases to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
