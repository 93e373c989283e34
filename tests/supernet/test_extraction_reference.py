"""The supernet and its extracted models against an independent plain-torch reference.

test_extraction.py compares `net(tokens, arch)` with `net.extract(arch)(tokens)`, but both
slice through `ElasticParams.tensors()` and both run `network.run_block`: a wrong prefix
(a shifted slice, swapped q/k/v parts, a chunk joined out of order) gives the same wrong
answer on both sides and passes there. Here the expected logits use neither. They are
built from the supernet's state_dict by name, with every prefix slice written out below
(`weight[:out, :in]`, packed parts as `w[part, :E, :d]`, the width-chunked embedding and
exit heads joined by hand), each mixer as the textbook math of tests/kernels' naive
references (explicit T x T masks, loops over t), in float64, and wired as the docs' pre-norm
residual block: x + mixer(LN(x)), then x + FFN(LN(x)); a skip adds no mixer branch and an
FFN width of 0 no FFN branch; the logits are LN then a linear head at the arch's exit.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_space
from nas import Arch, LayerArch, SearchSpace, Supernet
from nas.search_space import MIXERS

# The supernet runs in float32, the reference in float64 from the same (float32) weights:
# what is left is float32 rounding through at most 3 layers (4e-7 at worst here, on logits
# of order 1). A wrong slice moves logits by orders of magnitude more (weights ~0.05 apart).
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
LN_EPS = 1e-5  # the layer norms' epsilon (docs: pre-norm LayerNorm, eps 1e-5)
LINEAR_ATTENTION_EPS = 1e-6  # keeps linear attention's normaliser away from 0
SEQ_LEN = 13  # tokens per sequence: with chunk_size 8, one full chunk and a ragged one

Weights = dict[str, torch.Tensor]


# ----------------------------------------------------------------------- the named weights
def _width_chunked(sd: Weights, key: str, d: int) -> torch.Tensor:
    """Weight `key` of the embedding or an exit head at model width `d`.

    These parts are stored as one tensor per step between the space's widths, named
    `<key>_<start>` with the model-width axis last (see ElasticParams): the chunks that
    start below `d` are joined in order of their start, and the first `d` entries kept.
    """
    starts = sorted(int(name[len(key) + 1 :]) for name in sd if name.startswith(key + "_"))
    assert starts and starts[0] == 0, f"no width chunks named {key}_<start>"
    joined = torch.cat([sd[f"{key}_{s}"] for s in starts if s < d], dim=-1)
    assert joined.shape[-1] >= d
    return joined[..., :d]


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as LayerNorm
    return (x - mean) / torch.sqrt(var + LN_EPS) * weight + bias


def _gelu(u: torch.Tensor) -> torch.Tensor:
    return 0.5 * u * (1.0 + torch.erf(u / math.sqrt(2.0)))  # the erf GELU


# ------------------------------------------------------------------- mixers, textbook math
def _allowed(seq_len: int, causal: bool, window: int | None = None) -> torch.Tensor:
    """(T, T) bool: may query t see key s."""
    t = torch.arange(seq_len).view(-1, 1)
    s = torch.arange(seq_len).view(1, -1)
    ok = torch.ones(seq_len, seq_len, dtype=torch.bool)
    if causal:
        ok &= s <= t
    if window is not None:
        ok &= (t - s).abs() < window
    return ok


def _attention(x, p, layer, space, kind):
    """Multi-head softmax (full or banded) or linear attention, one head at a time.

    w_qkv is stored (3, E_max, d_max): q, k and v each nest by prefix on their own."""
    d, hd, heads = x.shape[-1], space.head_dim, layer.heads
    inner = heads * hd
    q, k, v = (x @ p["w_qkv"][j, :inner, :d].T + p["b_qkv"][j, :inner] for j in range(3))
    window = layer.window if kind == "sliding_window" else None
    allowed = _allowed(x.shape[1], space.causal, window)
    outs = []
    for h in range(heads):
        cols = slice(h * hd, (h + 1) * hd)
        qh, kh, vh = q[..., cols], k[..., cols], v[..., cols]  # (B, T, hd)
        if kind == "linear_attention":
            a = (F.elu(qh) + 1) @ (F.elu(kh) + 1).transpose(-1, -2) * allowed  # (B, T, T)
            outs.append((a @ vh) / (a.sum(-1, keepdim=True) + LINEAR_ATTENTION_EPS))
        else:
            scores = (qh @ kh.transpose(-1, -2)) / math.sqrt(hd)  # (B, T, T)
            scores = scores.masked_fill(~allowed, float("-inf"))
            outs.append(torch.softmax(scores, dim=-1) @ vh)
    return torch.cat(outs, dim=-1) @ p["w_out"][:d, :inner].T + p["b_out"][:d]


def _pool(x, p, layer, space):
    """Mean over the pooling window minus the token itself."""
    size, seq_len = space.pool_size, x.shape[1]
    left = size - 1 if space.causal else size // 2
    right = 0 if space.causal else size - 1 - size // 2
    out = torch.empty_like(x)
    for t in range(seq_len):
        lo, hi = max(0, t - left), min(seq_len - 1, t + right)
        out[:, t] = x[:, lo : hi + 1].mean(dim=1) - x[:, t]
    return out


def _conv(x, p, layer, space):
    """Depthwise cross-correlation over conv_kernel taps, zero beyond the ends."""
    d, taps, seq_len = x.shape[-1], space.conv_kernel, x.shape[1]
    weight, bias = p["weight"][:d, :taps], p["bias"][:d]
    left = taps - 1 if space.causal else (taps - 1) // 2
    out = torch.zeros_like(x)
    for t in range(seq_len):
        for j in range(taps):
            s = t - left + j
            if 0 <= s < seq_len:
                out[:, t] += weight[:, j] * x[:, s]
    return out + bias


def _glu(x, p, layer, space):
    """(u * silu(g)) W_out^T + b_out; the gate reads the previous token (causal) or the
    mean of both neighbours (bidirectional). w_in is stored (2, E_max, d_max): [W_u; W_g]."""
    d, inner, seq_len = x.shape[-1], layer.heads * space.head_dim, x.shape[1]
    w_u, w_g = p["w_in"][0, :inner, :d], p["w_in"][1, :inner, :d]
    b_u, b_g = p["b_in"][0, :inner], p["b_in"][1, :inner]
    zero = torch.zeros_like(x[:, 0])
    outs = []
    for t in range(seq_len):
        prev = x[:, t - 1] if t > 0 else zero
        nxt = x[:, t + 1] if t + 1 < seq_len else zero
        shifted = prev if space.causal else (prev + nxt) / 2
        u = x[:, t] @ w_u.T + b_u
        g = shifted @ w_g.T + b_g
        outs.append((u * F.silu(g)) @ p["w_out"][:d, :inner].T + p["b_out"][:d])
    return torch.stack(outs, dim=1)


def _scan(xs, dt, decay_rate, b_in, c_out):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t (outer) B_t;  y_t = h_t C_t, one t at a time."""
    batch, seq_len, heads, hd = xs.shape
    h = torch.zeros(batch, heads, hd, b_in.shape[-1], dtype=xs.dtype)
    ys = []
    for t in range(seq_len):
        decay = torch.exp(dt[:, t] * decay_rate)  # (B, H)
        inject = dt[:, t, :, None, None] * xs[:, t, :, :, None] * b_in[:, t, None, None, :]
        h = decay[:, :, None, None] * h + inject  # (B, H, P, N)
        ys.append((h * c_out[:, t, None, None, :]).sum(-1))  # (B, H, P)
    return torch.stack(ys, dim=1)  # (B, T, H, P)


def _ssm(x, p, layer, space):
    """Mamba-2 style: x and gate z from w_xz (2, E_max, d_max), B and C from w_bc
    (2, N, d_max), per-head dt, decay and skip; bidirectional adds a reversed scan."""
    batch, seq_len, d = x.shape
    heads, hd, state = layer.heads, space.head_dim, space.ssm_state
    inner = heads * hd
    xs = (x @ p["w_xz"][0, :inner, :d].T).reshape(batch, seq_len, heads, hd)
    z = x @ p["w_xz"][1, :inner, :d].T
    b_in, c_out = x @ p["w_bc"][0, :state, :d].T, x @ p["w_bc"][1, :state, :d].T
    dt = F.softplus(x @ p["w_dt"][:heads, :d].T + p["dt_bias"][:heads])
    decay_rate = -torch.exp(p["a_log"][:heads])
    y = _scan(xs, dt, decay_rate, b_in, c_out)
    if not space.causal:
        back = _scan(xs.flip(1), dt.flip(1), decay_rate, b_in.flip(1), c_out.flip(1))
        y = y + back.flip(1)
    y = y + p["d_skip"][:heads, None] * xs
    y = y.reshape(batch, seq_len, inner) * (z * torch.sigmoid(z))
    return y @ p["w_out"][:d, :inner].T


MIXER_REFERENCES = {
    "attention": lambda x, p, layer, space: _attention(x, p, layer, space, "attention"),
    "sliding_window": lambda x, p, layer, space: _attention(x, p, layer, space, "sliding_window"),
    "linear_attention": lambda x, p, layer, space: _attention(
        x, p, layer, space, "linear_attention"
    ),
    "pool": _pool,
    "conv": _conv,
    "glu": _glu,
    "ssm": _ssm,
}


# ---------------------------------------------------------------------------- the network
def reference_logits(
    sd: Weights, space: SearchSpace, arch: Arch, tokens: torch.Tensor, ffn_per_mixer: bool
) -> torch.Tensor:
    """(B, T, V) logits of `arch` from the supernet's named max-size tensors `sd`."""
    d, seq_len = arch.d_model, tokens.shape[1]
    tok = _width_chunked(sd, "embedding.tok", d)  # (V, d)
    pos = _width_chunked(sd, "embedding.pos", d)  # (T_max, d)
    x = tok[tokens] + pos[:seq_len]  # (B, T, d)
    for i, layer in enumerate(arch.layers):
        block = f"blocks.{i}."
        if layer.mixer != "skip":
            h = _layer_norm(x, sd[block + "norm_mix.weight"][:d], sd[block + "norm_mix.bias"][:d])
            prefix = f"{block}mixers.{layer.mixer}."
            mixer = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            x = x + MIXER_REFERENCES[layer.mixer](h, mixer, layer, space)
        if layer.ffn:
            f = layer.ffn
            norm, ffn = (
                (f"norm_ffns.{layer.mixer}.", f"ffns.{layer.mixer}.")
                if ffn_per_mixer
                else ("norm_ffn.", "ffn.")
            )
            h = _layer_norm(x, sd[block + norm + "weight"][:d], sd[block + norm + "bias"][:d])
            hidden = _gelu(h @ sd[block + ffn + "w1"][:f, :d].T + sd[block + ffn + "b1"][:f])
            x = x + hidden @ sd[block + ffn + "w2"][:d, :f].T + sd[block + ffn + "b2"][:d]
    head = f"exits.{arch.depth}."
    h = _layer_norm(
        x, _width_chunked(sd, head + "norm_weight", d), _width_chunked(sd, head + "norm_bias", d)
    )
    return h @ _width_chunked(sd, head + "w_out", d).T + sd[head + "b_out"]


# --------------------------------------------------------------------------------- archs
def _layer(space: SearchSpace, mixer: str, heads: int, ffn: int, window: int) -> LayerArch:
    spec = MIXERS[mixer]
    return LayerArch(
        mixer, heads if spec.uses_heads else None, window if spec.uses_window else None, ffn
    )


def _archs(space: SearchSpace) -> list[Arch]:
    """Random archs of the space plus, for every mixer, one arch that has it as its first
    layer; widths, heads, FFN widths, windows and depths rotate so that each takes every
    value of the space somewhere."""
    gen = torch.Generator().manual_seed(5)
    options = space.layer_options()
    archs = [space.largest(), space.smallest(), *space.sample_many(6, seed=11)]
    for i, mixer in enumerate(space.mixers):
        first = _layer(
            space,
            mixer,
            space.heads[i % len(space.heads)],
            space.ffn[(i + 1) % len(space.ffn)],
            space.windows[i % len(space.windows)],
        )
        depth = space.exits[i % len(space.exits)]
        rest = [
            options[int(torch.randint(len(options), (1,), generator=gen))] for _ in range(depth)
        ]
        d_model = space.d_model[(i // 2) % len(space.d_model)]
        archs.append(space.validate(Arch(d_model, (first, *rest[: depth - 1]))))
    return archs


def _perturbed(space: SearchSpace, ffn_per_mixer: bool) -> Supernet:
    """A supernet whose every weight is distinct: zero biases and unit norms would hide a
    wrong slice of them."""
    net = Supernet(space, seed=3, ffn_per_mixer=ffn_per_mixer).eval()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return net


@pytest.mark.parametrize("ffn_per_mixer", [False, True], ids=["shared_ffn", "ffn_per_mixer"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_supernet_and_extracted_model_match_a_plain_torch_reference(
    one_thread, causal: bool, ffn_per_mixer: bool
) -> None:
    space = make_tiny_space(causal=causal)
    archs = _archs(space)
    layers = [layer for arch in archs for layer in arch.layers]
    # The archs cover what a slice could get wrong: every mixer, every width, head count,
    # FFN width (0 too) and depth of the space.
    assert {layer.mixer for layer in layers} == set(space.mixers)
    assert {a.d_model for a in archs} == set(space.d_model)
    assert {layer.heads for layer in layers if layer.heads} == set(space.heads)
    assert {layer.ffn for layer in layers} == set(space.ffn)
    assert {a.depth for a in archs} == set(space.exits)

    net = _perturbed(space, ffn_per_mixer)
    sd = {name: t.detach().double() for name, t in net.state_dict().items()}
    gen = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, space.vocab_size, (2, SEQ_LEN), generator=gen)
    for arch in archs:
        want = reference_logits(sd, space, arch, tokens, ffn_per_mixer)
        with torch.no_grad():
            got_supernet = net(tokens, arch).double()
            got_extracted = net.extract(arch)(tokens).double()
        torch.testing.assert_close(
            got_supernet, want, **TOLERANCE, msg=lambda m, a=arch: f"{a.to_json()}: {m}"
        )
        torch.testing.assert_close(
            got_extracted, want, **TOLERANCE, msg=lambda m, a=arch: f"{a.to_json()}: {m}"
        )
