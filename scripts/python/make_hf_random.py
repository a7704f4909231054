#!/usr/bin/env python3
"""Write a random-weight Hugging Face Qwen3 folder of a real size (0.6B ... 32B) without building
the model in memory: each tensor is drawn and written shard by shard with safetensors, with a
config.json in the form the Qwen repos carry (top-level rope_theta and torch_dtype). Then, with
--reference N, transformers loads the folder (float32, on --device) and writes its first N greedy
tokens for a fixed prompt to reference.json and the prompt's last logits to last_logits_float32.f32.

Usage: make_hf_random.py --size 8B --out DIR [--dtype bfloat16] [--shard-gb 4] [--reference 20 --device cuda]
"""

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

SIZES = {  # hidden, intermediate, layers, heads (all: 8 KV heads, head_dim 128, vocab 151936)
    "0.6B": (1024, 3072, 28, 16), "1.7B": (2048, 6144, 28, 16), "4B": (2560, 9728, 36, 32),
    "8B": (4096, 12288, 36, 32), "14B": (5120, 17408, 40, 40), "32B": (5120, 25600, 64, 64),
}
PROMPT = [151644, 9707, 11, 1879, 7, 42, 1000, 2000]


def tensors(size):
    hidden, inter, layers, heads = SIZES[size]
    kv, hd, vocab = 8, 128, 151936
    yield "model.embed_tokens.weight", (vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "self_attn.q_proj.weight", (heads * hd, hidden)
        yield p + "self_attn.k_proj.weight", (kv * hd, hidden)
        yield p + "self_attn.v_proj.weight", (kv * hd, hidden)
        yield p + "self_attn.o_proj.weight", (hidden, heads * hd)
        yield p + "self_attn.q_norm.weight", (hd,)
        yield p + "self_attn.k_norm.weight", (hd,)
        yield p + "mlp.gate_proj.weight", (inter, hidden)
        yield p + "mlp.up_proj.weight", (inter, hidden)
        yield p + "mlp.down_proj.weight", (hidden, inter)
        yield p + "input_layernorm.weight", (hidden,)
        yield p + "post_attention_layernorm.weight", (hidden,)
    yield "model.norm.weight", (hidden,)
    if size not in ("0.6B", "1.7B", "4B"):
        yield "lm_head.weight", (vocab, hidden)


def write(size, out, dtype, shard_gb, seed):
    hidden, inter, layers, heads = SIZES[size]
    tied = size in ("0.6B", "1.7B", "4B")
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "attention_bias": False, "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000, "rope_scaling": None, "tie_word_embeddings": tied, "torch_dtype": dtype,
        "vocab_size": 151936, "use_sliding_window": False, "bos_token_id": 151643, "eos_token_id": 151645,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 151643, "eos_token_id": [151645, 151643]}) + "\n")
    gen = torch.Generator().manual_seed(seed)
    shard, shard_bytes, weight_map, shards = {}, 0, {}, []

    def flush():
        nonlocal shard, shard_bytes
        if not shard:
            return
        name = f"model-{len(shards) + 1:05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        shards.append(name)
        for key in shard:
            weight_map[key] = name
        shard, shard_bytes = {}, 0

    for key, shape in tensors(size):
        if len(shape) == 1:
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            t = 0.02 * torch.randn(shape, generator=gen)
        shard[key] = t.to(getattr(torch, dtype))
        shard_bytes += shard[key].numel() * shard[key].element_size()
        if shard_bytes >= shard_gb * 1e9:
            flush()
    flush()
    total = len(shards)
    index = {"metadata": {}, "weight_map": {}}
    for i, name in enumerate(shards):  # the Hub's naming: model-0000i-of-0000n.safetensors
        final = f"model-{i + 1:05d}-of-{total:05d}.safetensors"
        (out / name).rename(out / final)
        for key, file in weight_map.items():
            if file == name:
                index["weight_map"][key] = final
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n")


def reference(out, steps, device):
    from transformers import Qwen3ForCausalLM
    t0 = time.time()
    try:  # straight onto the device where accelerate is installed
        model = Qwen3ForCausalLM.from_pretrained(out, dtype=torch.float32, device_map=device).eval()
    except ValueError:
        model = Qwen3ForCausalLM.from_pretrained(out, dtype=torch.float32).to(device).eval()
    load = time.time() - t0
    ids = torch.tensor([PROMPT], device=device)
    with torch.no_grad():
        # An explicit mask: without one, generate takes pad_token_id for padding wherever it occurs.
        tokens = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, do_sample=False, eos_token_id=None,
                                pad_token_id=151643)[0, len(PROMPT):].tolist()
        last = model(ids).logits[0, -1].float().cpu().contiguous()
    (out / "last_logits_float32.f32").write_bytes(last.numpy().tobytes())
    (out / "reference.json").write_text(json.dumps({"prompt": PROMPT, "greedy_float32": tokens, "transformers_load_seconds": load}) + "\n")
    print(f"transformers float32 greedy {steps} tokens (load {load:.1f} s): {tokens}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=SIZES, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--shard-gb", type=float, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", type=int, default=0, help="greedy tokens transformers writes to reference.json")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    t0 = time.time()
    if not (args.out / "model.safetensors.index.json").exists():
        write(args.size, args.out, args.dtype, args.shard_gb, args.seed)
        print(f"wrote {args.out} in {time.time() - t0:.1f} s")
    if args.reference:
        reference(args.out, args.reference, args.device)


if __name__ == "__main__":
    main()
