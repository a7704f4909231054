"""Pickle pieces that write checkpoints the way torch.save lays them out, with fields of our
choosing: storages by persistent id, tensor records rebuilt by _rebuild_tensor_v2, and calls a
malicious file would smuggle in. The checkpoint-reader check and the hostile-checkpoint
generator craft their files with these."""
import collections
import pickle

import torch


class FakeStorage:
    def __init__(self, type_name, key, numel):
        self.type_name, self.key, self.numel = type_name, key, numel


class FakeTensor:
    """A tensor record as torch.save writes it; `hooks` is the backward-hooks slot."""

    def __init__(self, storage, offset, size, stride, hooks=None):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict() if hooks is None else hooks)

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class Call:
    """Pickles as a call of fn(*args): what a malicious checkpoint smuggles in."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


class TorchLikePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", getattr(torch, obj.type_name), obj.key, "cpu", obj.numel)
        return None
