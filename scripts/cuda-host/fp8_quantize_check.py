#!/usr/bin/env python3
"""Does FP8 quantization (native/model/fp8_weights.cc, the same ATen operations) give the same
bytes on CUDA as on the CPU? For random float32 rows: the per-row scales and the E4M3 values,
each way the addon has written them (a contiguous conversion; a converting copy into strided
rows), against the CPU's, and the CPU's against the nearest E4M3 value. Prints the counts of
differing elements; exits 1 if CUDA and the CPU disagree the addon's way. (Dividing by a host
scalar, shown for comparison, gives other scales on CUDA.)

Usage: fp8_quantize_check.py [--rows 4096] [--cols 1024]
"""

import argparse
import sys

import torch


def quantize(w, strided, host_scalar=False):
    # The addon divides by a tensor (a true division on both devices); CUDA divides by a host
    # scalar as a product with its reciprocal, the cause of the mismatch this check found.
    amax = w.abs().amax(1, keepdim=True)
    scale = amax.div_(448.0) if host_scalar else amax.div_(torch.tensor(448.0, device=w.device))
    scale.masked_fill_(scale == 0, 1.0)
    n, k = w.shape
    packed = torch.zeros(n, k + 16, dtype=torch.float8_e4m3fn, device=w.device)
    if strided:
        packed[:, :k].copy_(w / scale)
    else:
        packed[:, :k].copy_((w / scale).to(torch.float8_e4m3fn))
    return scale.view(n), packed[:, :k].float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=1024)
    args = ap.parse_args()
    torch.manual_seed(0)
    w = torch.randn(args.rows, args.cols) * 0.02
    cpu_scale, cpu_q = quantize(w, strided=False)
    values = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    values = values[~values.isnan()].unique()
    x = (w / cpu_scale[:, None])[:256]
    nearest = values[(x.unsqueeze(-1) - values).abs().argmin(-1)]
    print(f"cpu against the nearest E4M3 value (first 256 rows): {(cpu_q[:256] != nearest).sum().item()} differ")
    ok = True
    for strided, host_scalar in ((False, False), (True, False), (False, True)):
        scale, q = quantize(w.cuda(), strided, host_scalar)
        scales = (scale.cpu() != cpu_scale).sum().item()
        elems = (q.cpu() != cpu_q).sum().item()
        how = "divided by a host scalar (not the addon's way)" if host_scalar else "converting copy into strided rows" if strided else "contiguous conversion"
        print(f"cuda ({how}): {scales} scales and {elems} of {q.numel()} values differ from the cpu")
        if not host_scalar:
            ok &= scales == 0 and elems == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
