"""Reference Qwen3 in plain PyTorch, the yardstick for the libtorch addon.

This follows the model from "Build a Reasoning Model (From Scratch)"
(rasbt/reasoning-from-scratch, reasoning_from_scratch/qwen3.py), rewritten
here but kept identical in module names, parameter names, op order and
dtypes: the C++ side mirrors it op for op and loads the same .pth files, so
any "improvement" here would break bit-level parity.

Besides the model it has helpers for the fixture builder: a Hugging Face
twin of a state dict (an independent implementation to check against) and
deterministic random weights.
"""

import math

import torch
import torch.nn as nn


def settle_vml_kernels():
    """One-element cos and sin on this thread, before any larger call.

    ATen's float cos and sin are oneMKL's VML functions, and oneMKL 2024.2 picks each
    function's kernel on its first call; when that call is split between threads, one
    thread's part can run a low-accuracy kernel (pytorch/pytorch#188792). The C++ side
    does the same (native/model/layers.cc).
    """
    one = torch.zeros(1)
    one.cos()
    one.sin()


settle_vml_kernels()

# Shape of Qwen3-0.6B, as the book spells it.
QWEN_CONFIG_06_B = dict(
    vocab_size=151_936,
    context_length=40_960,
    emb_dim=1024,
    n_heads=16,
    n_layers=28,
    hidden_dim=3072,
    head_dim=128,
    qk_norm=True,
    n_kv_groups=8,
    rope_base=1_000_000.0,
    dtype=torch.bfloat16,
)


class RMSNorm(nn.Module):
    # `scale` is created float32 whatever the model dtype; loading a bf16
    # checkpoint copies the values into it, so it stays float32 at run time.
    def __init__(self, emb_dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))

    def forward(self, x):
        input_dtype = x.dtype
        # Qwen3 normalises in float32 and multiplies by the scale before
        # casting back (Hugging Face casts first; bf16 results differ a bit).
        x = x.to(torch.float32)
        var = x.pow(2).mean(dim=-1, keepdim=True)
        n = x * torch.rsqrt(var + self.eps)
        n = n * self.scale
        return n.to(input_dtype)


def compute_rope_params(head_dim, theta_base=10_000, context_length=4096, dtype=torch.float32):
    assert head_dim % 2 == 0, "head_dim must be even"
    inv_freq = 1.0 / (theta_base ** (
        torch.arange(0, head_dim, 2, dtype=dtype)[: head_dim // 2].float() / head_dim))
    positions = torch.arange(context_length, dtype=dtype)
    angles = positions[:, None] * inv_freq[None, :]   # (ctx, hd/2)
    angles = torch.cat([angles, angles], dim=1)       # (ctx, hd): halves repeat
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x, cos, sin, offset=0):
    # x: (batch, heads, seq, head_dim). Rotate-half form, not interleaved pairs.
    _, _, seq_len, head_dim = x.shape
    x1 = x[..., : head_dim // 2]
    x2 = x[..., head_dim // 2:]
    cos = cos[offset:offset + seq_len, :].unsqueeze(0).unsqueeze(0)
    sin = sin[offset:offset + seq_len, :].unsqueeze(0).unsqueeze(0)
    rotated = torch.cat((-x2, x1), dim=-1)
    # cos/sin are float32, so this promotes; cast back to the input dtype.
    return ((x * cos) + (rotated * sin)).to(dtype=x.dtype)


class GroupedQueryAttention(nn.Module):
    def __init__(self, d_in, num_heads, num_kv_groups, head_dim=None, qk_norm=False, dtype=None):
        super().__init__()
        assert num_heads % num_kv_groups == 0, "num_heads must be divisible by num_kv_groups"
        if head_dim is None:
            assert d_in % num_heads == 0
            head_dim = d_in // num_heads
        self.num_heads = num_heads
        self.num_kv_groups = num_kv_groups
        self.group_size = num_heads // num_kv_groups
        self.head_dim = head_dim
        self.d_out = num_heads * head_dim

        self.W_query = nn.Linear(d_in, self.d_out, bias=False, dtype=dtype)
        self.W_key = nn.Linear(d_in, num_kv_groups * head_dim, bias=False, dtype=dtype)
        self.W_value = nn.Linear(d_in, num_kv_groups * head_dim, bias=False, dtype=dtype)
        self.out_proj = nn.Linear(self.d_out, d_in, bias=False, dtype=dtype)
        if qk_norm:
            self.q_norm = RMSNorm(head_dim, eps=1e-6)
            self.k_norm = RMSNorm(head_dim, eps=1e-6)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, mask, cos, sin, start_pos=0, cache=None):
        b, T, _ = x.shape
        queries = self.W_query(x).view(b, T, self.num_heads, self.head_dim).transpose(1, 2)
        keys_new = self.W_key(x).view(b, T, self.num_kv_groups, self.head_dim).transpose(1, 2)
        values_new = self.W_value(x).view(b, T, self.num_kv_groups, self.head_dim).transpose(1, 2)

        # QK-norm is per head, over head_dim, before RoPE.
        if self.q_norm is not None:
            queries = self.q_norm(queries)
        if self.k_norm is not None:
            keys_new = self.k_norm(keys_new)

        queries = apply_rope(queries, cos, sin, offset=start_pos)
        keys_new = apply_rope(keys_new, cos, sin, offset=start_pos)

        # The cache holds keys already rotated, per KV group (not repeated).
        if cache is not None:
            prev_k, prev_v = cache
            keys = torch.cat([prev_k, keys_new], dim=2)
            values = torch.cat([prev_v, values_new], dim=2)
        else:
            keys, values = keys_new, values_new
        next_cache = (keys, values)

        keys = keys.repeat_interleave(self.group_size, dim=1)
        values = values.repeat_interleave(self.group_size, dim=1)

        # Mask first, then scale: -inf stays -inf, and this is the book's order.
        scores = queries @ keys.transpose(2, 3)
        scores = scores.masked_fill(mask, -torch.inf)
        weights = torch.softmax(scores / self.head_dim ** 0.5, dim=-1)
        context = (weights @ values).transpose(1, 2).reshape(b, T, self.d_out)
        return self.out_proj(context), next_cache


class FeedForward(nn.Module):
    # SwiGLU: fc1 is the gate, fc2 the up projection, fc3 the down projection.
    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg["emb_dim"], cfg["hidden_dim"], dtype=cfg["dtype"], bias=False)
        self.fc2 = nn.Linear(cfg["emb_dim"], cfg["hidden_dim"], dtype=cfg["dtype"], bias=False)
        self.fc3 = nn.Linear(cfg["hidden_dim"], cfg["emb_dim"], dtype=cfg["dtype"], bias=False)

    def forward(self, x):
        return self.fc3(nn.functional.silu(self.fc1(x)) * self.fc2(x))


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.att = GroupedQueryAttention(
            d_in=cfg["emb_dim"], num_heads=cfg["n_heads"], num_kv_groups=cfg["n_kv_groups"],
            head_dim=cfg["head_dim"], qk_norm=cfg["qk_norm"], dtype=cfg["dtype"])
        self.ff = FeedForward(cfg)
        self.norm1 = RMSNorm(cfg["emb_dim"], eps=1e-6)
        self.norm2 = RMSNorm(cfg["emb_dim"], eps=1e-6)

    def forward(self, x, mask, cos, sin, start_pos=0, cache=None):
        h, next_cache = self.att(self.norm1(x), mask, cos, sin, start_pos=start_pos, cache=cache)
        x = x + h
        x = x + self.ff(self.norm2(x))
        return x, next_cache


class Qwen3Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"], dtype=cfg["dtype"])
        self.trf_blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = RMSNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False, dtype=cfg["dtype"])
        self.cfg = cfg
        self.init_rope()
        self.current_pos = 0  # next position to write in the KV cache

    def init_rope(self):
        head_dim = self.cfg["head_dim"] or self.cfg["emb_dim"] // self.cfg["n_heads"]
        device = self.tok_emb.weight.device
        if device.type == "meta":
            device = None
        cos, sin = compute_rope_params(head_dim, self.cfg["rope_base"], self.cfg["context_length"])
        # Not persistent: tables are derived from the config, never saved.
        self.register_buffer("cos", cos.to(device), persistent=False)
        self.register_buffer("sin", sin.to(device), persistent=False)

    def forward(self, in_idx, cache=None):
        x = self.tok_emb(in_idx)
        T = x.shape[1]
        if cache is not None:
            pos_start = self.current_pos
            pos_end = pos_start + T
            self.current_pos = pos_end
            mask = torch.triu(torch.ones(pos_end, pos_end, device=x.device, dtype=torch.bool),
                              diagonal=1)[pos_start:pos_end, :pos_end]
        else:
            pos_start = 0
            mask = torch.triu(torch.ones(T, T, device=x.device, dtype=torch.bool), diagonal=1)
        mask = mask[None, None, :, :]  # broadcast over batch and heads

        for i, block in enumerate(self.trf_blocks):
            blk_cache = cache.get(i) if cache else None
            x, new_cache = block(x, mask, self.cos, self.sin, start_pos=pos_start, cache=blk_cache)
            if cache is not None:
                cache.update(i, new_cache)

        x = self.final_norm(x)
        return self.out_head(x.to(self.cfg["dtype"]))

    def reset_kv_cache(self):
        self.current_pos = 0


class KVCache:
    def __init__(self, n_layers):
        self.cache = [None] * n_layers

    def get(self, layer_idx):
        return self.cache[layer_idx]

    def update(self, layer_idx, value):
        self.cache[layer_idx] = value

    def get_all(self):
        return self.cache

    def reset(self):
        self.cache = [None] * len(self.cache)


@torch.inference_mode()
def generate_text_basic(model, token_ids, max_new_tokens, eos_token_id=None):
    """Greedy, no cache: the whole sequence is re-fed every step."""
    input_length = token_ids.shape[1]
    model.eval()
    for _ in range(max_new_tokens):
        out = model(token_ids)[:, -1]
        next_token = torch.argmax(out, dim=-1, keepdim=True)
        if eos_token_id is not None and next_token.item() == eos_token_id:
            break
        token_ids = torch.cat([token_ids, next_token], dim=1)
    return token_ids[:, input_length:]


@torch.inference_mode()
def generate_text_basic_cache(model, token_ids, max_new_tokens, eos_token_id=None):
    """Greedy with a KV cache: prefill the prompt, then one token per step."""
    input_length = token_ids.shape[1]
    model.eval()
    cache = KVCache(n_layers=model.cfg["n_layers"])
    model.reset_kv_cache()
    out = model(token_ids, cache=cache)[:, -1]
    for step in range(max_new_tokens):
        next_token = torch.argmax(out, dim=-1, keepdim=True)
        if eos_token_id is not None and next_token.item() == eos_token_id:
            break
        token_ids = torch.cat([token_ids, next_token], dim=1)
        # The book also runs one forward after the last token; its output is
        # never read, so skip it.
        if step + 1 < max_new_tokens:
            out = model(next_token, cache=cache)[:, -1]
    return token_ids[:, input_length:]


def load_reference_model(cfg, sd, device="cpu"):
    """Qwen3Model with `sd` loaded, without paying for a random init first.

    Built on the meta device then materialised; load_state_dict copies into
    the existing parameters, so norm scales stay float32 as in the book.
    """
    with torch.device("meta"):
        model = Qwen3Model(cfg)
    model.to_empty(device=device)
    model.init_rope()  # buffers were meta; recompute them on the device
    missing, unexpected = model.load_state_dict(sd, strict=True)
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def expected_keys(cfg):
    keys = ["tok_emb.weight"]
    for i in range(cfg["n_layers"]):
        p = f"trf_blocks.{i}"
        keys += [f"{p}.att.W_query.weight", f"{p}.att.W_key.weight",
                 f"{p}.att.W_value.weight", f"{p}.att.out_proj.weight"]
        if cfg["qk_norm"]:
            keys += [f"{p}.att.q_norm.scale", f"{p}.att.k_norm.scale"]
        keys += [f"{p}.ff.fc1.weight", f"{p}.ff.fc2.weight", f"{p}.ff.fc3.weight",
                 f"{p}.norm1.scale", f"{p}.norm2.scale"]
    return keys + ["final_norm.scale", "out_head.weight"]


def param_shapes(cfg):
    """Shape of every tensor in the reference state dict, in key order."""
    E, H, V = cfg["emb_dim"], cfg["hidden_dim"], cfg["vocab_size"]
    hd = cfg["head_dim"]
    q, kv = cfg["n_heads"] * hd, cfg["n_kv_groups"] * hd
    by_suffix = {
        "att.W_query.weight": (q, E), "att.W_key.weight": (kv, E),
        "att.W_value.weight": (kv, E), "att.out_proj.weight": (E, q),
        "att.q_norm.scale": (hd,), "att.k_norm.scale": (hd,),
        "ff.fc1.weight": (H, E), "ff.fc2.weight": (H, E), "ff.fc3.weight": (E, H),
        "norm1.scale": (E,), "norm2.scale": (E,),
    }
    shapes = {}
    for k in expected_keys(cfg):
        if k == "tok_emb.weight" or k == "out_head.weight":
            shapes[k] = (V, E)
        elif k == "final_norm.scale":
            shapes[k] = (E,)
        else:
            shapes[k] = by_suffix[k.split(".", 2)[2]]
    return shapes


def make_random_state_dict(cfg, seed, dtype=None):
    """Deterministic random weights, in the reference layout.

    Scaled so that greedy decoding is well conditioned: activations stay
    around unit RMS through the blocks (Linear std 1/sqrt(fan_in)), norm
    scales are 1 + 0.1*N(0,1) so a norm that is skipped or misapplied shows
    up, and the output head gives logits with a std of a few units, so the
    top-1 / top-2 gap is rarely within rounding noise.

    Sampled in float32 on the CPU from one generator, in key order, so the
    values are the same on every host; then cast to `dtype`.
    """
    dtype = dtype or cfg["dtype"]
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in param_shapes(cfg).items():
        if key == "tok_emb.weight":
            std, mean = 1.0, 0.0
        elif key == "out_head.weight":
            std, mean = 4.0 / math.sqrt(shape[1]), 0.0
        elif key.endswith(".scale"):
            std, mean = 0.1, 1.0
        else:
            std, mean = 1.0 / math.sqrt(shape[1]), 0.0
        t = torch.randn(shape, generator=g, dtype=torch.float32)
        sd[key] = t.mul_(std).add_(mean).to(dtype)
    return sd


_HF_NAMES = {
    "att.W_query.weight": "self_attn.q_proj.weight",
    "att.W_key.weight": "self_attn.k_proj.weight",
    "att.W_value.weight": "self_attn.v_proj.weight",
    "att.out_proj.weight": "self_attn.o_proj.weight",
    "att.q_norm.scale": "self_attn.q_norm.weight",
    "att.k_norm.scale": "self_attn.k_norm.weight",
    "ff.fc1.weight": "mlp.gate_proj.weight",
    "ff.fc2.weight": "mlp.up_proj.weight",
    "ff.fc3.weight": "mlp.down_proj.weight",
    "norm1.scale": "input_layernorm.weight",
    "norm2.scale": "post_attention_layernorm.weight",
}


def to_hf_state_dict(sd):
    """Rename a reference state dict to Hugging Face Qwen3ForCausalLM keys."""
    out = {}
    for k, v in sd.items():
        if k == "tok_emb.weight":
            out["model.embed_tokens.weight"] = v
        elif k == "final_norm.scale":
            out["model.norm.weight"] = v
        elif k == "out_head.weight":
            out["lm_head.weight"] = v
        else:
            _, i, rest = k.split(".", 2)
            out[f"model.layers.{i}.{_HF_NAMES[rest]}"] = v
    return out


def hf_model_from_config(cfg, sd, dtype):
    """Hugging Face Qwen3ForCausalLM with the same weights, cast to `dtype`."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["emb_dim"],
        intermediate_size=cfg["hidden_dim"],
        num_hidden_layers=cfg["n_layers"],
        num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg["n_kv_groups"],
        head_dim=cfg["head_dim"],
        max_position_embeddings=cfg["context_length"],
        # transformers 5 takes theta only through rope_parameters.
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg["rope_base"])},
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        attention_bias=False,
        use_sliding_window=False,
        attn_implementation="eager",
    )
    model = Qwen3ForCausalLM(config)
    # assign=True swaps in our tensors (dtype and all) while leaving the
    # float32 inv_freq buffer alone, as from_pretrained(dtype=...) would.
    hf_sd = {k: v.to(dtype) for k, v in to_hf_state_dict(sd).items()}
    missing, unexpected = model.load_state_dict(hf_sd, strict=True, assign=True)
    assert not missing and not unexpected, (missing, unexpected)
    assert model.config.rope_parameters["rope_theta"] == float(cfg["rope_base"])
    return model.eval()
