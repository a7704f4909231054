#!/usr/bin/env python3
"""Hugging Face transformers baseline for `qwen3 bench --baseline transformers`.

Loads the same reference-layout checkpoint into Qwen3ForCausalLM (bfloat16, SDPA
attention) on the same device and measures what the bench measures, printing JSON:
  rows:    tokens/s for "KV cache" (generate, eager) and "KV cache compiled"
           (static cache + torch.compile: on CUDA generate() compiles its decoding step
           itself with CUDA graphs, as transformers documents; on the CPU the forward is
           wrapped in torch.compile, since generate() compiles only on accelerators)
  batched: total tokens/s at each batch size (static cache + torch.compile)
  prefill: tokens/s of one eager forward over N prompt tokens
Each number is the median of --runs timed runs after one warm-up.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import CompileConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qwen3_reference import QWEN_CONFIG_06_B, hf_model_from_config  # noqa: E402


def timed(device, runs, fn):
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    fn()  # warm-up (and, for compiled models, compilation)
    sync()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--prefill", default="512,2048")
    a = ap.parse_args()
    dev = a.device
    cfg = {k: v for k, v in QWEN_CONFIG_06_B.items() if k != "dtype"}
    sd = torch.load(a.model, weights_only=True, mmap=True)
    model = hf_model_from_config(cfg, sd, torch.bfloat16).to(dev)
    model.config._attn_implementation = "sdpa"  # transformers' default, faster than eager
    del sd
    prompt = torch.tensor([[int(x) for x in a.prompt_ids.split(",")]], device=dev)
    n = a.new_tokens
    gen = dict(do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
    res = {"rows": {}, "batched": {}, "prefill": {}}

    with torch.inference_mode():
        ids = prompt
        mask = torch.ones_like(ids)
        res["rows"]["KV cache"] = n / timed(dev, a.runs, lambda: model.generate(ids, attention_mask=mask, **gen))
        print(f"transformers KV cache: {res['rows']['KV cache']:.1f} tokens/s", file=sys.stderr)
        for tokens in [int(x) for x in a.prefill.split(",") if x]:
            long_ids = prompt.repeat(1, tokens // prompt.shape[1] + 1)[:, :tokens]
            res["prefill"][str(tokens)] = tokens / timed(dev, a.runs, lambda: model(long_ids, logits_to_keep=1))
            print(f"transformers prefill {tokens}: {res['prefill'][str(tokens)]:.0f} tokens/s", file=sys.stderr)

        # Static cache + torch.compile, as transformers documents for fast generation. Wrapping
        # model.forward in a reduce-overhead compile by hand breaks on CUDA (the static cache's
        # in-place updates overwrite CUDA-graph outputs), so there generate() does it.
        model.generation_config.cache_implementation = "static"
        if dev.startswith("cuda"):
            model.generation_config.compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead")
        else:
            model.forward = torch.compile(model.forward, fullgraph=True)
        try:
            res["rows"]["KV cache compiled"] = n / timed(dev, a.runs, lambda: model.generate(ids, attention_mask=mask, **gen))
            print(f"transformers KV cache compiled: {res['rows']['KV cache compiled']:.1f} tokens/s", file=sys.stderr)
            for b in [int(x) for x in a.batches.split(",") if x]:
                ids_b = prompt.repeat(b, 1)
                res["batched"][str(b)] = b * n / timed(dev, a.runs, lambda: model.generate(ids_b, attention_mask=torch.ones_like(ids_b), **gen))
                print(f"transformers batch {b}: {res['batched'][str(b)]:.0f} tokens/s", file=sys.stderr)
        except Exception as e:  # keep the eager numbers; say why the compiled ones are missing
            res["error"] = f"static cache + torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"transformers {res['error']}", file=sys.stderr)
    json.dump(res, sys.stdout)


if __name__ == "__main__":
    main()
