#!/usr/bin/env python3
"""The quantized weights of qwen3-torch, done in PyTorch.

Every nn.Linear of the book-style reference model (the blocks' projections and the vocabulary
head; not the embedding table) is quantized per output row, as the addon does at load:
- int8 (native/cpu/int8_weights.h): s = max|w| / 127 (an all-zero row gets 1), q = round(w / s)
  clamped to [-127, 127]. The layer's input is quantized the same way per block of 64 values
  (scale t per block), and the layer computes s * sum over blocks of t * (x_q . q), in float32,
  rounded once to the model's dtype.
- fp8 (native/model/fp8_weights.h): s = max|w| / 448 (an all-zero row gets 1), q = w / s rounded
  to float8_e4m3fn. The input stays as it is, and the layer computes s * (x . q) in float32,
  rounded once to the model's dtype.
Prints JSON with the logits of a whole sequence (uncached, every position) and the greedy
tokens after a prompt, so the tests can hold the addon's quantized model against it.

Usage: quantized_reference.py --quantize int8|fp8 --model model.pth --config config.json
                              --dtype float32|bfloat16 --prompt 1,2,3 --steps N [--sequence 1,2,3,...]
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qwen3_reference import generate_text_basic_cache, load_reference_model  # noqa: E402


BLOCK = 64


def quantize_last_dim(t):
    scale = t.abs().amax(dim=-1, keepdim=True) / 127
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return scale, torch.round(t / scale).clamp(-127, 127)


class Int8Linear(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.scale, self.q = quantize_last_dim(weight.detach().float())  # (n, 1), (n, k)

    def forward(self, x):
        n, k = self.q.shape
        blocks = k // BLOCK
        rows = x.numel() // k
        t, xq = quantize_last_dim(x.float().reshape(rows, blocks, BLOCK))
        q = self.q.view(n, blocks, BLOCK).permute(1, 2, 0)  # (blocks, 64, n)
        dots = torch.bmm(xq.permute(1, 0, 2), q)  # (blocks, rows, n): integer sums, exact in float32
        y = (dots * t.permute(1, 0, 2)).sum(0) * self.scale.view(n)
        return y.to(x.dtype).view(*x.shape[:-1], n)


class Fp8Linear(nn.Module):
    def __init__(self, weight):
        super().__init__()
        w = weight.detach().float()
        scale = w.abs().amax(dim=-1, keepdim=True) / 448
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        self.q = (w / scale).to(torch.float8_e4m3fn)  # (n, k), rounded to the nearest E4M3 value
        self.scale = scale.view(-1)  # (n,)

    def forward(self, x):
        y = (x.float() @ self.q.float().T) * self.scale
        return y.to(x.dtype)


LINEARS = {"int8": Int8Linear, "fp8": Fp8Linear}


def quantize(model, kind):
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, LINEARS[kind](child.weight))
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quantize", choices=sorted(LINEARS), required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--sequence", help="ids whose every position's logits to report (default: the prompt)")
    args = ap.parse_args()

    dtype = getattr(torch, args.dtype)
    cfg = json.loads(Path(args.config).read_text())
    cfg["dtype"] = dtype
    sd = torch.load(args.model, map_location="cpu", weights_only=True)
    model = quantize(load_reference_model(cfg, sd), args.quantize)  # load_state_dict casts into each parameter's dtype
    prompt = [int(t) for t in args.prompt.split(",")]
    sequence = [int(t) for t in (args.sequence or args.prompt).split(",")]
    with torch.inference_mode():
        logits = model(torch.tensor([sequence]))[0].float()  # (positions, vocab)
        out = generate_text_basic_cache(model, torch.tensor([prompt]), args.steps)
    json.dump({"greedy": out[0].tolist(), "logits": logits.flatten().tolist(), "shape": list(logits.shape)}, sys.stdout)


if __name__ == "__main__":
    main()
