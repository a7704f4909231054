#!/usr/bin/env bash
# Checks native/checkpoint/checkpoint_reader.{h,cc} (with zip_archive and state_dict_pickle)
# against PyTorch itself, under AddressSanitizer + UndefinedBehaviorSanitizer:
#
#   1. builds scripts/checks/checkpoint_reader_check.cc with g++ -O1 -g -fsanitize=address,undefined;
#   2. runs its built-in hostile-pickle cases (deep nesting, floods, bad lengths);
#   3. writes checkpoints with torch.save (float32/float16/bfloat16 state dicts, plain
#      dicts, Parameters, views, pickle protocols 2-5, an in-memory "archive/" save, a
#      synthetic ZIP64 rewrite, a zip comment) and compares the reader's index with what
#      Python reports: names, dtypes, shapes, strides, storage offsets, storage keys,
#      data offsets, and the bytes found there;
#   4. checks that broken and malicious files fail with the right CheckpointError;
#   5. feeds a few thousand random corruptions of real checkpoints through the reader.
#
# Needs g++ and the project's Python with torch (scripts/dev/python.js: run npm run build first). Set CHECKPOINT_CHECK_BIG=1 to also save and read a
# real >4 GiB checkpoint (needs ~10 GB of RAM and disk; slow).
set -euo pipefail
cd "$(dirname "$0")/../.."
python=$(node scripts/dev/python.js --which)

work=$(mktemp -d "${TMPDIR:-/tmp}/checkpoint_reader_check.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== building the check driver with ASan + UBSan"
"${CXX:-g++}" -std=c++17 -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
  -fno-sanitize-recover=all -Wall -Wextra -Wshadow -Werror \
  -Inative native/checkpoint/checkpoint_reader.cc native/checkpoint/zip_archive.cc native/checkpoint/state_dict_pickle.cc \
  scripts/checks/checkpoint_reader_check.cc -o "$work/check"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

echo "== hostile pickles"
"$work/check" stress

echo "== checkpoints written by torch.save"
QWEN3_SCRIPTS="$PWD/scripts/python" "$python" - "$work" <<'PY'
import collections, io, json, os, pickle, struct, subprocess, sys, warnings, zipfile
import torch

warnings.filterwarnings("ignore", message="Detected pickle protocol")

work = sys.argv[1]
check = os.path.join(work, "check")
torch.manual_seed(0)
INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def path_of(name):
    return os.path.join(work, name)


def save(obj, name, **kw):
    torch.save(obj, path_of(name), **kw)
    return path_of(name)


def dump(path):
    r = subprocess.run([check, "dump", path], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL dump {os.path.basename(path)} (rc {r.returncode}):\n{r.stdout}{r.stderr}")
    return [json.loads(line) for line in r.stdout.splitlines()]


def top_folder(zf):
    return [n for n in zf.namelist() if n.endswith("/data.pkl")][0].rsplit("/", 1)[0]


class StorageKeys(pickle.Unpickler):
    """Python's own reading of data.pkl, keeping just name -> storage key."""

    def find_class(self, module, name):
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter")):
            return lambda first, *rest: first
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid):
        return pid[2]


def verify(path, label, torch_written=True, mmap=False, weights_only=True):
    """The reader's index must match torch.load, zipfile and the raw bytes."""
    index = dump(path)
    loaded = torch.load(path, weights_only=weights_only, mmap=mmap)
    zf = zipfile.ZipFile(path)
    prefix = top_folder(zf)
    keys = StorageKeys(io.BytesIO(zf.read(f"{prefix}/data.pkl"))).load()
    assert [r["name"] for r in index] == list(loaded.keys()), (label, [r["name"] for r in index], list(loaded))
    with open(path, "rb") as f:
        for r in index:
            t, where = loaded[r["name"]], f"{label}: {r['name']}"
            assert r["dtype"] == str(t.dtype).replace("torch.", ""), where
            assert r["shape"] == list(t.shape) and r["stride"] == list(t.stride()), where
            assert r["storage_offset"] == t.storage_offset(), where
            assert r["storage_key"] == keys[r["name"]], where
            info = zf.getinfo(f"{prefix}/data/{r['storage_key']}")
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            assert r["data_offset"] == info.header_offset + 30 + name_len + extra_len, where
            assert r["storage_bytes"] == info.file_size == t.untyped_storage().nbytes(), where
            if torch_written:
                assert r["data_offset"] % 64 == 0, f"{where}: torch no longer aligns data to 64 bytes?"
            if r["storage_bytes"] == 0:
                assert t.numel() == 0, where
                continue
            if r["storage_bytes"] > (64 << 20):  # huge: compare the storage's two ends only
                s, n = t.untyped_storage(), r["storage_bytes"]
                raw = bytes(s[:4096].tolist()) + bytes(s[n - 4096:n].tolist())
                f.seek(r["data_offset"])
                head = f.read(4096)
                f.seek(r["data_offset"] + r["storage_bytes"] - 4096)
                assert head + f.read(4096) == raw, where
                continue
            # Rebuild the tensor from the file alone, using only the reader's numbers.
            f.seek(r["data_offset"])
            storage = torch.frombuffer(bytearray(f.read(r["storage_bytes"])), dtype=t.dtype)
            view = torch.as_strided(storage, r["shape"], r["stride"], r["storage_offset"])
            assert torch.equal(view.view(INT_VIEW[t.dtype]), t.detach().view(INT_VIEW[t.dtype])), where
    print(f"ok   {label}: {len(index)} tensors")
    return index


def expect_error(path, needle, label):
    r = subprocess.run([check, "expect-error", path, needle], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL {label}:\n{r.stdout}{r.stderr}")
    print(f"ok   {label} -> ...{needle}...")


# --- a small model shaped like the ones this package loads -------------------
class Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.W_query = torch.nn.Linear(8, 8, bias=False)
        self.W_key = torch.nn.Linear(8, 4, bias=False)
        self.q_norm = torch.nn.RMSNorm(2)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.att = Attention()
        self.norm1 = torch.nn.RMSNorm(8)
        self.ff = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.SiLU(), torch.nn.Linear(16, 8))


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tok_emb = torch.nn.Embedding(10, 8)
        self.trf_blocks = torch.nn.ModuleList([Block(), Block()])
        self.out_head = torch.nn.Linear(8, 10, bias=False)
        self.out_head.weight = self.tok_emb.weight  # tied: two keys, one storage


model = Model()
sd32 = model.state_dict()
assert hasattr(sd32, "_metadata") and isinstance(sd32, collections.OrderedDict)

# --- what torch.save writes ---------------------------------------------------
f32 = save(sd32, "model_f32.pth")
raw = open(f32, "rb").read()
zf = zipfile.ZipFile(f32)
print("note: records:", [n.split("/", 1)[1] for n in zf.namelist()])
print("note: ZIP64 end records present:", raw[-42:-38] == b"PK\x06\x07",
      "| zip64 extras in central headers:", any(i.extra for i in zf.infolist()))
print("note: data.pkl opcodes:", zf.read("model_f32/data.pkl")[:2].hex(), "(PROTO 2)")

index = verify(f32, "float32 state_dict (OrderedDict + _metadata, tied weights)")
by_name = {r["name"]: r for r in index}
assert by_name["tok_emb.weight"]["storage_key"] == by_name["out_head.weight"]["storage_key"]
verify(save(model.half().state_dict(), "model_f16.pth"), "float16 state_dict")
verify(save(Model().to(torch.bfloat16).state_dict(), "model_bf16.pth"), "bfloat16 state_dict")
for protocol in (3, 4, 5):
    # torch.load(weights_only=True) itself rejects protocols 4-5 (no FRAME support), so
    # the reference load of those files (which we just wrote) uses the full unpickler.
    verify(save(sd32, f"model_p{protocol}.pth", pickle_protocol=protocol), f"pickle protocol {protocol}",
           weights_only=protocol < 4)

shared = torch.randn(3, 3)
verify(save({
    "f32": torch.randn(3, 4),
    "f16": torch.randn(5).half(),
    "bf16": torch.randn(2, 3).bfloat16(),
    "scalar": torch.tensor(3.5),
    "empty": torch.zeros(0, 4),
    "empty_bf16": torch.zeros(2, 0, 3, dtype=torch.bfloat16),
    "specials": torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-45]),
    "same_object_a": shared,
    "same_object_b": shared,  # pickled once, then fetched from the memo
    "blöck.权重.weight": torch.randn(2),
}, "plain_dict.pth"), "plain dict, mixed dtypes, 0-d / empty / shared / unicode")

verify(save({
    "w": torch.nn.Parameter(torch.randn(3, 4)),
    "frozen": torch.nn.Parameter(torch.randn(2), requires_grad=False),
    "bf16": torch.nn.Parameter(torch.randn(4).bfloat16()),
}, "parameters.pth"), "nn.Parameter values")

base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
long_base = torch.arange(70000, dtype=torch.float16)
verify(save({
    "rows_from_1": base[1:],
    "transposed": base.t(),
    "column": base[:, 2],
    "every_other": base[::2, 1::3],
    "expanded": torch.ones(3).expand(4, 3),
    "bf16_narrow": torch.arange(20).bfloat16()[5:9],
    "f16_transposed": torch.randn(3, 5).half().t(),
    "offset_needs_binint": long_base[66000:66010],  # offset > 65535, size > 255
}, "views.pth"), "views saved directly (offsets, transposes, stride 0)")

many = {f"model.layers.{i // 7}.mlp.experts.{i % 7}.weight": torch.full((2,), float(i)) for i in range(1500)}
verify(save(many, "many.pth"), "1500 tensors (two SETITEMS batches, LONG_BINPUT/LONG_BINGET)")

buf = io.BytesIO()
torch.save({"x": torch.randn(4)}, buf)
open(path_of("in_memory.pth"), "wb").write(buf.getvalue())
assert zipfile.ZipFile(path_of("in_memory.pth")).namelist()[0].startswith("archive/")
verify(path_of("in_memory.pth"), "in-memory save (top folder 'archive')")


# --- ZIP64 rewrite: every size and offset moved into zip64 extra fields ------
sys.path.insert(0, os.environ["QWEN3_SCRIPTS"])
from zip64 import zip64ify  # noqa: E402


for src in ("model_f32.pth", "views.pth"):
    z64 = zip64ify(path_of(src), path_of("zip64_" + src))
    assert all(i.file_size < 2**32 for i in zipfile.ZipFile(z64).infolist())
    index64 = verify(z64, f"ZIP64 rewrite of {src} (torch.load reads it too)")
    assert index64 == dump(path_of(src))

# A zip comment holding a fake end record: the reader must find the real one.
raw = bytearray(open(f32, "rb").read())
comment = b"comment with a decoy PK\x05\x06" + bytes(18) + b" and more"
raw[-2:] = struct.pack("<H", len(comment))
open(path_of("commented.pth"), "wb").write(raw + comment)
assert dump(path_of("commented.pth")) == dump(f32)
print("ok   zip comment containing a decoy end-of-central-directory signature")


# --- checkpoints crafted through a pickler that mimics torch.save -------------
from torch_like_pickle import FakeStorage, FakeTensor, TorchLikePickler  # noqa: E402


def write_zip(name, pickle_bytes, records, prefix="archive", compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path_of(name), "w", compression) as z:
        z.writestr(f"{prefix}/data.pkl", pickle_bytes)
        z.writestr(f"{prefix}/byteorder", "little")
        z.writestr(f"{prefix}/version", "3\n")
        for key, data in records.items():
            z.writestr(f"{prefix}/data/{key}", data)
    return path_of(name)


def crafted(name, tensors, records=None, protocol=2):
    buf = io.BytesIO()
    TorchLikePickler(buf, protocol=protocol).dump(tensors)
    return write_zip(name, buf.getvalue(), {"0": bytes(range(24))} if records is None else records)


def f32_storage(numel=6, key="0"):
    return FakeStorage("FloatStorage", key, numel)


verify(crafted("exact_fit.pth", {"tail": FakeTensor(f32_storage(), 2, (4,), (1,))}),
       "crafted: view ending on the storage's last element", torch_written=False)
verify(crafted("huge_empty.pth", {"e": FakeTensor(f32_storage(), 5, (0, 2**40), (2**40, 1))}),
       "crafted: empty tensor with a 2^40 dim (LONG1)", torch_written=False)

bad_geometry = [
    ("extent", FakeTensor(f32_storage(), 0, (3, 4), (4, 1)), "needs 12 float32 elements but its storage 'data/0' has only 24 bytes"),
    ("offset", FakeTensor(f32_storage(), 3, (4,), (1,)), "needs 7 float32 elements"),
    ("negative stride", FakeTensor(f32_storage(), 5, (2,), (-1,)), "negative size or stride"),
    ("negative size", FakeTensor(f32_storage(), 0, (-2,), (1,)), "negative size or stride"),
    ("negative offset", FakeTensor(f32_storage(), -1, (1,), (1,)), "negative storage offset"),
    ("empty tensor past the storage", FakeTensor(f32_storage(), 7, (0,), (1,)), "starts past the end of its storage 'data/0'"),
    ("numel overflow", FakeTensor(f32_storage(), 0, (2**62, 4), (4, 1)), "has too many elements"),
    ("span overflow", FakeTensor(f32_storage(), 0, (2, 2), (2**62, 2**62)), "addresses elements beyond 2^63"),
    ("rank mismatch", FakeTensor(f32_storage(), 0, (2, 3), (1,)), "size and stride differ in length"),
    ("storage size", FakeTensor(f32_storage(7), 0, (2,), (1,)), "should hold 7 float32 elements but its record has 24 bytes"),
    ("missing storage", FakeTensor(f32_storage(6, "9"), 0, (2,), (1,)), "uses storage 'data/9', which is not in the checkpoint"),
]
for label, tensor, needle in bad_geometry:
    expect_error(crafted(f"bad_{label.replace(' ', '_')}.pth", {"t": tensor}), needle, f"crafted: {label}")
expect_error(crafted("two_dtypes.pth", {"a": FakeTensor(f32_storage(), 0, (6,), (1,)),
                                        "b": FakeTensor(FakeStorage("HalfStorage", "0", 12), 0, (12,), (1,))}),
             "is used with different dtypes or sizes", "crafted: one storage read as two dtypes")

# --- files torch.save writes that this reader must refuse ----------------------
expect_error(save({"d": torch.zeros(2, dtype=torch.float64)}, "double.pth"), "unsupported dtype (torch.DoubleStorage)", "float64 tensor")
expect_error(save({"i": torch.zeros(2, dtype=torch.int64)}, "long.pth"), "unsupported dtype (torch.LongStorage)", "int64 tensor")
expect_error(save({"model": sd32}, "nested.pth"), "entry 'model' holds a value of type dict, not a tensor", "nested dict")
expect_error(save([torch.ones(1)], "list.pth"), "holds a value of type list, not a state dict", "top-level list")
expect_error(save({1: torch.ones(1)}, "int_key.pth"), "keys must be of type str, not int", "int key")
expect_error(save({"step": 3}, "int_value.pth"), "entry 'step' holds a value of type int, not a tensor", "int value")


# --- malicious pickles in an otherwise valid archive ----------------------------
from torch_like_pickle import Call  # noqa: E402

import builtins
for fn, args, protocol, global_name in [
    (os.system, ("echo pwned",), 2, "posix.system"),
    (os.system, ("echo pwned",), 4, "posix.system"),  # STACK_GLOBAL
    (builtins.eval, ("1+1",), 3, "builtins.eval"),
    (builtins.eval, ("1+1",), 2, "__builtin__.eval"),  # protocol 2 writes Python 2 module names
    (subprocess.Popen, (["true"],), 3, "subprocess.Popen"),
    (torch._utils._rebuild_tensor, (None, 0, (1,), (1,)), 2, "torch._utils._rebuild_tensor"),
]:
    payload = pickle.dumps({"w": Call(fn, *args)}, protocol=protocol)
    expect_error(write_zip(f"evil_{global_name}_{protocol}.pth", payload, {}),
                 f"checkpoint references disallowed global '{global_name}'; only tensors and state-dict containers are allowed",
                 f"malicious {global_name} (protocol {protocol})")
expect_error(write_zip("bad_opcode.pth", b"\x80\x02}\xff.", {}), "data.pkl: unknown or unsupported pickle opcode 0xff at byte 3", "unknown opcode")

# --- broken archives -------------------------------------------------------------
open(path_of("random.pth"), "wb").write(os.urandom(5000))
expect_error(path_of("random.pth"), "random.pth is not a PyTorch checkpoint (no zip end-of-central-directory record)", "random bytes")
open(path_of("empty.pth"), "wb").close()
expect_error(path_of("empty.pth"), "is not a PyTorch checkpoint (no zip end-of-central-directory record)", "empty file")
open(path_of("half.pth"), "wb").write(open(f32, "rb").read()[:900])
expect_error(path_of("half.pth"), "no zip end-of-central-directory record", "file cut in half")

with zipfile.ZipFile(f32) as src, zipfile.ZipFile(path_of("deflated.pth"), "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        dst.writestr(item.filename, src.read(item.filename))
expect_error(path_of("deflated.pth"), "is compressed (method 8); only stored entries are supported", "deflated zip")

with zipfile.ZipFile(f32) as src, zipfile.ZipFile(path_of("no_storage0.pth"), "w") as dst:
    for item in src.infolist():
        if not item.filename.endswith("/data/0"):
            dst.writestr(item.filename, src.read(item.filename))
expect_error(path_of("no_storage0.pth"), "uses storage 'data/0', which is not in the checkpoint", "storage record removed")


def patch_central_size(src, dst, record, new_size):
    raw = bytearray(open(src, "rb").read())
    zf = zipfile.ZipFile(src)
    at = zf.start_dir
    while True:
        name_len, extra_len, comment_len = struct.unpack("<HHH", raw[at + 28:at + 34])
        if raw[at + 46:at + 46 + name_len].decode().endswith(record):
            raw[at + 20:at + 28] = struct.pack("<II", new_size, new_size)
            break
        at += 46 + name_len + extra_len + comment_len
    open(dst, "wb").write(raw)
    return dst


patch_central_size(f32, path_of("truncated.pth"), "/data/0", 0x7FFFFFF0)
expect_error(path_of("truncated.pth"), "truncated.pth: checkpoint is truncated (record data/0 ends at byte ", "record larger than the file")

raw = bytearray(open(f32, "rb").read())
raw[-22 - 20 - 56 + 48:-22 - 20 - 56 + 56] = struct.pack("<Q", 2**63 + 5)  # zip64 end record's directory offset
open(path_of("bad_cd_offset.pth"), "wb").write(raw)
expect_error(path_of("bad_cd_offset.pth"), "zip central directory at byte 9223372036854775813", "directory offset past the end")

with zipfile.ZipFile(path_of("big_endian.pth"), "w") as z:
    z.writestr("archive/data.pkl", b"\x80\x02}.")
    z.writestr("archive/byteorder", "big")
expect_error(path_of("big_endian.pth"), "only little-endian checkpoints are supported", "big-endian byteorder record")
with zipfile.ZipFile(path_of("two_pickles.pth"), "w") as z:
    z.writestr("a/data.pkl", b"\x80\x02}.")
    z.writestr("b/data.pkl", b"\x80\x02}.")
expect_error(path_of("two_pickles.pth"), "more than one top-level data.pkl", "two top-level data.pkl")
with zipfile.ZipFile(path_of("no_pickle.pth"), "w") as z:
    z.writestr("archive/notes.txt", "hi")
expect_error(path_of("no_pickle.pth"), "is not a PyTorch checkpoint (no <folder>/data.pkl record in the zip)", "zip without data.pkl")
write_zip("huge_pickle.pth", b"\x80\x02" + bytes(64 << 20), {})
expect_error(path_of("huge_pickle.pth"), "data.pkl has 67108866 bytes; at most 67108864 are accepted", "data.pkl over 64 MiB")

# --- optional: a real checkpoint past 4 GiB ---------------------------------------
if os.environ.get("CHECKPOINT_CHECK_BIG") == "1":
    big = save({"big": torch.zeros(1_100_000_000), "after": torch.arange(10.0)}, "big.pth")
    zf = zipfile.ZipFile(big)
    print("note: >4 GiB file: zip64 extras on", [i.filename for i in zf.infolist() if i.extra])
    verify(big, "real checkpoint past 4 GiB", mmap=True)
    os.remove(big)

print("all torch.save comparisons and error cases passed")
PY

echo "== random corruptions (must end in an index or a CheckpointError)"
"$python" - "$work" <<'PY'
import sys, torch
work = sys.argv[1]
m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
torch.save(m.state_dict(), f"{work}/fuzz_f32.pth")
base = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
torch.save({"a": base[1:], "b": base.t(), "p": torch.nn.Parameter(torch.ones(2).half())}, f"{work}/fuzz_views.pth")
torch.save(m.half().state_dict(), f"{work}/fuzz_p5.pth", pickle_protocol=5)
PY
for f in fuzz_f32 fuzz_views fuzz_p5; do
  "$work/check" mutate-file "$work/$f.pth" 2000 1
  "$work/check" mutate-pickle "$work/$f.pth" 30000 2
done
"$work/check" mutate-file "$work/zip64_model_f32.pth" 2000 3  # zip64 extra fields under corruption
echo "checkpoint_reader: all checks passed"
