#!/usr/bin/env python3
"""Write malformed variants of a good checkpoint for the loader's error tests.

Usage: make_bad_checkpoints.py GOOD.pth OUT_DIR
Writes wrong-shape.pth (one tensor's rows cut), missing-key.pth (one tensor
dropped), extra-key.pth (an unknown tensor added) and double.pth (float64,
which the loader does not take). Byte-level damage (truncation, not a zip)
is done by the tests themselves.
"""
import sys
from pathlib import Path

import torch


def main():
    good, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    sd = torch.load(good, weights_only=True)

    wrong = dict(sd)
    wrong["trf_blocks.1.att.W_key.weight"] = wrong["trf_blocks.1.att.W_key.weight"][:-1].clone()
    torch.save(wrong, out / "wrong-shape.pth")

    missing = dict(sd)
    del missing["trf_blocks.0.ff.fc2.weight"]
    torch.save(missing, out / "missing-key.pth")

    extra = dict(sd)
    extra["trf_blocks.0.att.bias"] = torch.zeros(4)
    torch.save(extra, out / "extra-key.pth")

    torch.save({k: v.double() for k, v in sd.items()}, out / "double.pth")


if __name__ == "__main__":
    main()
