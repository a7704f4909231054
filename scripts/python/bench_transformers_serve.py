#!/usr/bin/env python3
"""Hugging Face transformers' own continuous batching, as the side-by-side baseline for the
OpenAI server benchmark.

N greedy requests of --prompt-tokens ids each are submitted at once to
`model.generate_batch(inputs=..., generation_config=..., continuous_batching_config=...)`,
the ContinuousBatchingManager underneath (transformers 5.17 and later). Generation never stops
early: the GenerationConfig carries eos_token_id=-1, which the manager reads as "no end token",
so every request yields exactly --max-new-tokens tokens; min_new_tokens is avoided because it
works by masking the end token's logit, which would change the greedy choice.

The manager is built once by a small warm-up batch and kept (persistent_manager=True), so the
timed call measures generation, not cache allocation. It is sized for the timed workload up
front, because the manager would otherwise size itself from the warm-up batch's hints.

If continuous batching fails (or --mode static), the script times padded static batching with
`model.generate` instead and reports "mode": "static-batch".
"""
import argparse
import json
import math
import random
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, ContinuousBatchingConfig, GenerationConfig

PROMPT_ID_LIMIT = 500  # ids stay below this so that tiny test vocabularies work


def int_in(name, low, high):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"Expected integer between {low} and {high} for {name} but received {text!r}")
        return value
    return parse


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="Hugging Face model folder")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--requests", type=int_in("--requests", 1, 4096), default=32)
    ap.add_argument("--prompt-tokens", type=int_in("--prompt-tokens", 1, 32768), default=10)
    ap.add_argument("--max-new-tokens", type=int_in("--max-new-tokens", 1, 40960), default=200)
    ap.add_argument("--seed", type=int_in("--seed", 0, 2**31 - 1), default=0,
                    help="seed of the prompt ids")
    ap.add_argument("--mode", choices=["auto", "continuous", "static"], default="auto",
                    help="auto: continuous batching, static batching if that fails")
    ap.add_argument("--attn", default=None,
                    help="attn_implementation to load with (default: transformers' own; the "
                         "manager switches it to one continuous batching supports)")
    ap.add_argument("--num-blocks", type=int_in("--num-blocks", 1, 2**24), default=None,
                    help="KV cache blocks (default: sized from free memory on cuda, from the "
                         "workload on cpu)")
    ap.add_argument("--max-batch-tokens", type=int_in("--max-batch-tokens", 1, 2**20), default=None)
    ap.add_argument("--check-prompts", type=int_in("--check-prompts", 0, 4096), default=3,
                    help="prompts whose tokens are compared with model.generate (0: none)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return ap.parse_args()


def make_prompts(count, length, vocab_size, seed):
    rng = random.Random(seed)
    high = min(PROMPT_ID_LIMIT, vocab_size)
    return [[rng.randrange(high) for _ in range(length)] for _ in range(count)]


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def cb_config_for(args, device):
    """Sizes the manager as transformers' own workload hints would for the timed batch."""
    cfg = ContinuousBatchingConfig()
    page = getattr(cfg, "page_size", None) or cfg.block_size  # page_size replaced block_size
    blocks = math.ceil((args.prompt_tokens + args.max_new_tokens) / page) + 1
    cfg.max_blocks_per_request = blocks + blocks % 2
    cfg.max_requests_per_batch = args.requests
    # On the CPU the default cache takes 90% of free RAM; the workload needs far less.
    if args.num_blocks is not None:
        cfg.num_blocks = args.num_blocks
    elif device == "cpu":
        cfg.num_blocks = args.requests * cfg.max_blocks_per_request
    if args.max_batch_tokens is not None:
        cfg.max_batch_tokens = args.max_batch_tokens
    return cfg


def run_continuous(model, prompts, args, gen_config):
    cb_config = cb_config_for(args, args.device)
    original_attn = model.config._attn_implementation
    seen_attn = set()
    hook = model.register_forward_pre_hook(
        lambda module, _inputs: seen_attn.add(module.config._attn_implementation))
    try:
        warm = prompts[: min(4, len(prompts))]
        check_results(model.generate_batch(
            inputs=warm, generation_config=gen_config, continuous_batching_config=cb_config,
            persistent_manager=True, max_new_tokens=min(8, args.max_new_tokens)), len(warm))
        seen_attn.clear()
        sync(args.device)
        t0 = time.perf_counter()
        results = model.generate_batch(inputs=prompts, generation_config=gen_config,
                                       continuous_batching_config=cb_config, persistent_manager=True)
        sync(args.device)
        seconds = time.perf_counter() - t0
    finally:
        hook.remove()
        model.destroy_cached_continuous_batching_manager()
        # A manager that fails while starting leaves its paged attention set, which plain
        # generate() refuses; put back what the model was loaded with.
        if model.config._attn_implementation != original_attn:
            model.set_attn_implementation(original_attn)
    tokens = check_results(results, len(prompts))
    return tokens, seconds, ",".join(sorted(seen_attn)) or None


def check_results(results, expected):
    """generate_batch logs failures rather than raising them; turn them into an exception."""
    outputs = list(results.values())  # in the order of the inputs
    failed = [o.request_id for o in outputs if o.error is not None]
    if len(outputs) != expected or failed:
        first_error = next((o.error for o in outputs if o.error is not None), "none")
        raise RuntimeError(f"{len(outputs) - len(failed)} of {expected} requests succeeded; "
                           f"first error: {str(first_error).splitlines()[0] if first_error else ''}")
    return [list(o.generated_tokens) for o in outputs]


def generate_padded(model, prompts, args, max_new_tokens):
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):  # left padding, as decoder-only generation needs
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    out = model.generate(ids.to(args.device), attention_mask=mask.to(args.device), do_sample=False,
                         max_new_tokens=max_new_tokens, eos_token_id=-1, pad_token_id=0)
    return [row[width:].tolist() for row in out]


def run_static(model, prompts, args):
    generate_padded(model, prompts[: min(4, len(prompts))], args, min(8, args.max_new_tokens))
    sync(args.device)
    t0 = time.perf_counter()
    tokens = generate_padded(model, prompts, args, args.max_new_tokens)
    sync(args.device)
    return tokens, time.perf_counter() - t0, model.config._attn_implementation


def check_greedy(model, prompts, tokens, args):
    """Counts the checked prompts whose batched tokens differ from model.generate on it alone."""
    mismatches = 0
    for i in range(min(args.check_prompts, len(prompts))):
        expected = generate_padded(model, [prompts[i]], args, args.max_new_tokens)[0]
        if expected != tokens[i]:
            mismatches += 1
            first = next((k for k, (a, b) in enumerate(zip(expected, tokens[i])) if a != b),
                         min(len(expected), len(tokens[i])))
            print(f"warning: request {i}: batched tokens differ from model.generate from token {first} "
                  f"(batched {tokens[i][first:first + 5]}, generate {expected[first:first + 5]})",
                  file=sys.stderr)
    return mismatches


def main():
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("Expected a CUDA device for --device cuda but torch.cuda.is_available() is False")
    load = {"dtype": getattr(torch, args.dtype)}
    if args.attn:
        load["attn_implementation"] = args.attn
    model = AutoModelForCausalLM.from_pretrained(args.model, **load).to(args.device).eval()
    prompts = make_prompts(args.requests, args.prompt_tokens, model.config.get_text_config().vocab_size,
                           args.seed)
    gen_config = GenerationConfig(do_sample=False, max_new_tokens=args.max_new_tokens, eos_token_id=-1,
                                  pad_token_id=0)

    fallback_reason = None
    # no_grad, not inference_mode: the manager's thread updates in place tensors that this
    # thread creates, which inference tensors forbid outside inference mode.
    with torch.no_grad():
        if args.mode != "static":
            try:
                tokens, seconds, attn = run_continuous(model, prompts, args, gen_config)
                mode = "continuous-batching"
            except Exception as e:  # noqa: BLE001 - any failure means this version cannot batch here
                if args.mode == "continuous":
                    raise
                fallback_reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                print(f"warning: continuous batching failed ({fallback_reason}); timing static batching",
                      file=sys.stderr)
        if args.mode == "static" or fallback_reason is not None:
            tokens, seconds, attn = run_static(model, prompts, args)
            mode = "static-batch"
        mismatches = check_greedy(model, prompts, tokens, args)

    generated = sum(len(t) for t in tokens)
    result = {
        "mode": mode,
        "requests": args.requests,
        "promptTokens": args.prompt_tokens,
        "maxNewTokens": args.max_new_tokens,
        "generatedTokens": generated,
        "seconds": round(seconds, 4),
        "tokensPerSecond": round(generated / seconds, 2),
        "device": args.device,
        "dtype": args.dtype,
        "transformersVersion": transformers.__version__,
        "torchVersion": torch.__version__,
        "attnImplementation": attn,
        "greedyChecked": min(args.check_prompts, len(prompts)),
        "greedyMismatches": mismatches,
    }
    if fallback_reason:
        result["fallbackReason"] = fallback_reason
    if generated != args.requests * args.max_new_tokens:
        print(f"warning: expected {args.requests * args.max_new_tokens} generated tokens, counted {generated}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
