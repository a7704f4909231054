#!/usr/bin/env python3
"""Checkpoints that attack or stress the loader, for test/hostile.test.ts and the fuzzer.

  make_hostile_checkpoints.py hostile GOOD.pth OUT_DIR
      Writes .pth files whose pickle calls something when Python unpickles it (os.system,
      builtins.eval/exec, subprocess.Popen, getattr chains, a nested torch.load, ...), hidden in
      the places a state dict offers: as a value, after every real tensor, in the OrderedDict's
      _metadata, in a tensor's arguments. Each payload creates the file named by the environment
      variable QWEN3_HOSTILE_MARKER, so "no code ran" is something a test can check.
      OUT_DIR/manifest.json lists {file, needle}: the text the loader's error must contain.

  make_hostile_checkpoints.py control OUT_DIR
      The positive control: unpickles every file of the manifest the way a careless loader would
      (torch.load(weights_only=False), else plain pickle), each with its own marker path, and
      prints {file: true/false} for "the payload ran". Proves the files are armed.

  make_hostile_checkpoints.py fuzz-bases GOOD.pth OUT_DIR
      Writes valid checkpoints holding the same weights as GOOD in other layouts, so that the
      fuzzer (scripts/checks/fuzz_checkpoints.mjs) mutates more of the reader's paths:
        strided.pth  every tensor a non-contiguous view (transposed, offset, shared storages);
        p4-f32.pth   float32 storages, pickle protocol 4 (STACK_GLOBAL, MEMOIZE, FRAME);
        zip64.pth    p4-f32.pth with every size and offset moved into zip64 extra fields.
      All three must load to exactly the same float32 weights as GOOD.
"""
import builtins
import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_like_pickle import Call, FakeStorage, FakeTensor, TorchLikePickler  # noqa: E402
from zip64 import zip64ify  # noqa: E402

COMMAND = 'touch "$QWEN3_HOSTILE_MARKER"'



def write_zip(path, pickle_bytes, records=None):
    """The layout torch.save writes, around a pickle of our own."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for key, data in (records or {}).items():
            z.writestr(f"archive/data/{key}", data)


def getattr_chain():
    """getattr(__import__('os'), 'system')(COMMAND), hand-assembled with protocol-2 opcodes."""
    def text(s):
        b = s.encode()
        return b"X" + struct.pack("<I", len(b)) + b
    return (b"\x80\x02" + b"cbuiltins\ngetattr\n" + b"cbuiltins\n__import__\n" + text("os") + b"\x85R"
            + text("system") + b"\x86R" + text(COMMAND) + b"\x85R" + b".")


def hostile(good, out):
    out.mkdir(parents=True, exist_ok=True)
    sd = torch.load(good, weights_only=True)
    system, evil_eval = Call(os.system, COMMAND), Call(builtins.eval, f"__import__('os').system({COMMAND!r})")
    entries = []

    def add(name, needle, write):
        write(out / name)
        entries.append({"file": name, "needle": needle})

    disallowed = "checkpoint references disallowed global '{}'; only tensors and state-dict containers are allowed"
    add("system-p2.pth", disallowed.format("posix.system"), lambda p: torch.save({"w": system}, p))
    add("system-p4.pth", disallowed.format("posix.system"), lambda p: torch.save({"w": system}, p, pickle_protocol=4))
    add("eval-p2.pth", disallowed.format("__builtin__.eval"), lambda p: torch.save({"w": evil_eval}, p))
    add("eval-p3.pth", disallowed.format("builtins.eval"), lambda p: torch.save({"w": evil_eval}, p, pickle_protocol=3))
    add("exec-p3.pth", disallowed.format("builtins.exec"),
        lambda p: torch.save({"w": Call(builtins.exec, "import os; open(os.environ['QWEN3_HOSTILE_MARKER'], 'w').close()")}, p,
                             pickle_protocol=3))
    add("popen-p3.pth", disallowed.format("subprocess.Popen"),
        lambda p: torch.save({"w": Call(subprocess.Popen, ["sh", "-c", COMMAND])}, p, pickle_protocol=3))
    # Every real tensor first, so a reader that acted on entries as it went would have started.
    add("after-weights.pth", disallowed.format("posix.system"), lambda p: torch.save({**sd, "zz.payload": system}, p))

    def in_metadata(p):
        with_meta = collections.OrderedDict(sd)
        with_meta._metadata = {"": system}  # pickled as the OrderedDict's BUILD state, after the items
        torch.save(with_meta, p)
    add("in-metadata.pth", disallowed.format("posix.system"), in_metadata)

    def in_tensor_args(p):
        buf = io.BytesIO()
        TorchLikePickler(buf, protocol=2).dump({"w": FakeTensor(FakeStorage("FloatStorage", "0", 4), 0, (4,), (1,), system)})
        write_zip(p, buf.getvalue(), {"0": bytes(16)})
    add("in-tensor-args.pth", disallowed.format("posix.system"), in_tensor_args)
    add("raw-pickle.pth", disallowed.format("posix.system"),
        lambda p: write_zip(p, pickle.dumps({"w": system}, protocol=2)))
    add("getattr-chain.pth", disallowed.format("builtins.getattr"), lambda p: write_zip(p, getattr_chain()))

    # A nested checkpoint, unpickled by torch itself: the payload sits one level down.
    nested = io.BytesIO()
    torch.save({"w": system}, nested)
    add("nested-load.pth", disallowed.format("torch.storage._load_from_bytes"),
        lambda p: torch.save({"w": Call(torch.storage._load_from_bytes, nested.getvalue())}, p))
    # Protocol 0 spells containers with opcodes the reader does not take; it stops there, before the global.
    add("protocol-0.pth", "unknown or unsupported pickle opcode", lambda p: write_zip(p, pickle.dumps({"w": system}, protocol=0)))

    (out / "manifest.json").write_text(json.dumps(entries, indent=1) + "\n")


class AnyPersistent(pickle.Unpickler):
    def persistent_load(self, pid):
        return None


def control(out):
    """Runs each payload the way an unsafe loader would; reports which created their marker."""
    entries = json.loads((out / "manifest.json").read_text())
    markers = out / "control-markers"
    markers.mkdir(exist_ok=True)
    ran = {}
    for entry in entries:
        marker = markers / (entry["file"] + ".marker")
        os.environ["QWEN3_HOSTILE_MARKER"] = str(marker)
        path = out / entry["file"]
        try:
            torch.load(path, weights_only=False)
        except Exception:
            if not marker.exists():  # torch gave up before the payload: unpickle data.pkl by hand
                with zipfile.ZipFile(path) as z:
                    name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
                    try:
                        AnyPersistent(io.BytesIO(z.read(name))).load()
                    except Exception:
                        pass
        for _ in range(50):  # Popen returns before its child has run
            if marker.exists():
                break
            time.sleep(0.02)
        ran[entry["file"]] = marker.exists()
    print(json.dumps(ran))


def strided_view(t):
    """The same values as a non-contiguous view into a larger storage, at a non-zero offset."""
    if t.dim() == 2:
        rows, cols = t.shape
        big = torch.zeros(cols + 1, rows + 2, dtype=t.dtype)
        big[1:, 2:] = t.t()
        return big[1:, 2:].t()  # strides (1, rows + 2), storage offset rows + 4
    big = torch.zeros(2 * t.numel() + 3, dtype=t.dtype)
    big[3::2] = t
    return big[3::2]


def fuzz_bases(good, out):
    out.mkdir(parents=True, exist_ok=True)
    sd = torch.load(good, weights_only=True)
    strided = collections.OrderedDict((k, strided_view(v)) for k, v in sd.items())
    # Two tensors in one storage: each layer's norm1 and norm2 scales.
    for key in [k for k in sd if k.endswith(".norm1.scale")]:
        other = key.replace("norm1", "norm2")
        n = sd[key].numel()
        shared = torch.cat([sd[key], sd[other]])
        strided[key], strided[other] = shared[:n], shared[n:]
    for k, v in strided.items():
        assert torch.equal(v, sd[k]), k
    torch.save(strided, out / "strided.pth")
    torch.save({k: v.float() for k, v in sd.items()}, out / "p4-f32.pth", pickle_protocol=4)
    zip64ify(out / "p4-f32.pth", out / "zip64.pth")
    for name in ("strided.pth", "p4-f32.pth", "zip64.pth"):
        back = torch.load(out / name, weights_only=name != "p4-f32.pth" and name != "zip64.pth")
        assert all(torch.equal(back[k].float(), v.float()) for k, v in sd.items()), name


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("hostile", "control", "fuzz-bases"):
        sys.exit(__doc__)
    mode = sys.argv[1]
    if mode == "control":
        control(Path(sys.argv[2]))
    elif mode == "hostile":
        hostile(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        fuzz_bases(Path(sys.argv[2]), Path(sys.argv[3]))


if __name__ == "__main__":
    main()
