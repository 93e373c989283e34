"""The forward pass in a form torch.export can trace with a dynamic sequence length.

torch.export runs the forward once on a symbolic sequence length T and refuses code whose
control flow, or whose view-or-copy decisions, depend on T. Five mixers of the registry
(attention, pool, conv, glu, skip) and the FFN trace as they are. Three kernels do not,
and this module gives each a form with the same arithmetic that does:

- ssm (`kernels.ssm.selective_scan`): the carry across chunks is a Python loop over the
  T / L chunks (`for c in range(n_chunks - 1)`), and `min(chunk_size, T)` and `if pad:`
  branch on T. Here the carry is one (n x n) matrix of chunk-to-chunk decays (built with a
  masked cumsum, as in Mamba-2's `segsum`), and T is always padded to whole chunks of L.
  The mixer also splits its packed x/z projection by slicing, a view whose reshape the
  exporter guards on T != 1; here x and z are two matmuls on the row blocks of `w_xz`.
- linear_attention, causal (`kernels.linear_attention.linear_attention_core`):
  `min(chunk_size, T)` and `if pad:`. Here: always whole chunks of L.
- sliding_window (`kernels.sliding_window.sliding_window_core`): `if T <= window:` takes
  plain SDPA, else the banded path, whose key bands are `unfold` views. Here: always the
  banded path, bands gathered by index, attention written out (SDPA's kernel choice also
  makes the exporter guard on the batch size).

Everywhere the padded result is cut back to T by a gather (`index_select` on arange(T))
instead of a slice, whose size min(T, n * L) the exporter cannot simplify. The forms are
only for export: the model itself keeps running the kernels, and every export is checked
against the kernels' outputs at two shapes (export.py), so a form that drifted from its
kernel fails the export instead of shipping.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim, ExportedProgram

from nas.kernels import feature_map, output_projection, qkv_projection
from nas.kernels.linear_attention import EPS as LINEAR_ATTENTION_EPS
from nas.kernels.numerics import floored_exp
from nas.kernels.sliding_window import _band_mask

from .config import NetConstants
from .mixers import RunFn
from .network import embed, layer_norm, read_exit, run_block
from .static import StaticBlock, StaticModel

Tensor = torch.Tensor


def _keep_first(u: Tensor, dim: int, length) -> Tensor:
    """The first `length` entries of `u` along `dim`, as a gather (see the module doc)."""
    return u.index_select(dim, torch.arange(length, device=u.device))


def _dense(u: Tensor) -> Tensor:
    """A contiguous copy: a matmul of strided or expanded operands makes the exporter guard."""
    return u.clone(memory_format=torch.contiguous_format)


def _pad_to_chunks(seq_len, chunk: int):
    """(chunks n, padding) with n * chunk = seq_len + padding; n >= 1 for seq_len >= 1."""
    n_chunks = (seq_len + chunk - 1) // chunk
    return n_chunks, n_chunks * chunk - seq_len


# ------------------------------------------------------------------ linear attention
def _linear_attention_core(q: Tensor, k: Tensor, v: Tensor, causal: bool, chunk: int) -> Tensor:
    """`kernels.linear_attention_core` with whole chunks of `chunk` tokens. (B, H, T, d)."""
    batch, heads, seq_len, _ = q.shape
    v_dim = v.shape[-1]
    fq, fk = _dense(feature_map(q)), _dense(feature_map(k))  # (B, H, T, d)
    ones = torch.ones(batch, heads, seq_len, 1, dtype=v.dtype, device=v.device)
    va = torch.cat([v, ones], dim=-1)  # (B, H, T, dv + 1)
    if not causal:
        out = fq @ (_dense(fk.transpose(-1, -2)) @ va)  # (B, H, T, dv + 1): global sums
        return _normalise(out, seq_len, v_dim)
    n_chunks, pad = _pad_to_chunks(seq_len, chunk)
    fq, fk, va = (F.pad(u, (0, 0, 0, pad)) for u in (fq, fk, va))  # (B, H, n * L, .)
    fq = fq.reshape(batch, heads, n_chunks, chunk, -1)  # (B, H, n, L, d)
    fk = fk.reshape(batch, heads, n_chunks, chunk, -1)  # (B, H, n, L, d)
    va = va.reshape(batch, heads, n_chunks, chunk, v_dim + 1)  # (B, H, n, L, dv + 1)
    lower = torch.ones(chunk, chunk, dtype=fq.dtype, device=fq.device).tril()  # (L, L)
    out = ((fq @ fk.transpose(-1, -2)) * lower) @ va  # (B, H, n, L, dv + 1)
    states = fk.transpose(-1, -2) @ va  # (B, H, n, d, dv + 1), every chunk's
    carried = torch.cumsum(states, dim=2) - states  # exclusive prefix sum: chunks before
    out = out + fq @ carried  # (B, H, n, L, dv + 1)
    return _normalise(out.reshape(batch, heads, n_chunks * chunk, v_dim + 1), seq_len, v_dim)


def _normalise(out: Tensor, seq_len, v_dim: int) -> Tensor:
    """(B, H, >= T, dv + 1) [numerator | normaliser] -> (B, H, T, dv) outputs.

    Cut back to T in (B, T, H, .) memory order, the order SDPA leaves its output in, so
    that output_projection's transpose-then-reshape is a view.
    """
    out = _keep_first(out.transpose(1, 2), 1, seq_len)  # (B, T, H, dv + 1), contiguous
    y = out[..., :v_dim] / (out[..., v_dim:] + LINEAR_ATTENTION_EPS)  # (B, T, H, dv)
    return y.transpose(1, 2)  # (B, H, T, dv)


def _run_linear_attention(x: Tensor, p, layer, cfg: NetConstants) -> Tensor:
    q, k, v = qkv_projection(x, p["w_qkv"], p["b_qkv"], cfg.head_dim)  # each (B, H, T, hd)
    y = _linear_attention_core(q, k, v, cfg.causal, cfg.chunk_size)  # (B, H, T, hd)
    return output_projection(y, p["w_out"], p["b_out"])  # (B, T, C)


# ------------------------------------------------------------------ sliding window
def _sliding_window_core(q: Tensor, k: Tensor, v: Tensor, window: int, causal: bool) -> Tensor:
    """`kernels.sliding_window_core`, always banded. q, k, v: (B, H, T, hd)."""
    batch, heads, seq_len, head_dim = q.shape
    block = window
    n_blocks, pad = _pad_to_chunks(seq_len, block)
    after = 0 if causal else block  # the bidirectional band also reaches into block b+1
    key_blocks = 2 if causal else 3
    band = key_blocks * block
    qb = F.pad(q, (0, 0, 0, pad)).reshape(batch * heads, n_blocks, block, head_dim)
    # Rows of the padded keys that block b's band covers: b * L + j, j < kb * L.
    arange = torch.arange(band, device=q.device)
    rows = (torch.arange(n_blocks, device=q.device).unsqueeze(1) * block + arange).reshape(-1)

    def key_band(u: Tensor) -> Tensor:
        up = F.pad(u, (0, 0, block, pad + after))  # (B, H, (nb + kb - 1) * L, hd)
        up = up.reshape(batch * heads, (n_blocks + key_blocks - 1) * block, head_dim)
        return up.index_select(1, rows).reshape(batch * heads, n_blocks, band, head_dim)

    mask = _band_mask(n_blocks, block, key_blocks, seq_len, window, causal, q.dtype, q.device)
    scores = qb @ key_band(k).transpose(-1, -2) * head_dim**-0.5 + mask  # (B*H, nb, L, kb*L)
    y = torch.softmax(scores, dim=-1) @ key_band(v)  # (B*H, nb, L, hd)
    y = y.reshape(batch, heads, n_blocks * block, head_dim).transpose(1, 2)  # (B, nb*L, H, hd)
    return _keep_first(y, 1, seq_len).transpose(1, 2)  # (B, H, T, hd), (B, T, H, hd) in memory


def _run_sliding_window(x: Tensor, p, layer, cfg: NetConstants) -> Tensor:
    q, k, v = qkv_projection(x, p["w_qkv"], p["b_qkv"], cfg.head_dim)  # each (B, H, T, hd)
    y = _sliding_window_core(q, k, v, layer.window, cfg.causal)  # (B, H, T, hd)
    return output_projection(y, p["w_out"], p["b_out"])  # (B, T, C)


# ------------------------------------------------------------------ selective scan
def _selective_scan(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, chunk: int):
    """`kernels.selective_scan` without the loop over chunks. x: (B, T, H, P) -> same."""
    batch, seq_len, heads, p_dim = x.shape
    n_dim = Bm.shape[-1]
    n_chunks, pad = _pad_to_chunks(seq_len, chunk)
    x = F.pad(x, (0, 0, 0, 0, 0, pad))  # (B, Tp, H, P); dt = 0 on padding: no effect
    dt, Bm, Cm = (F.pad(u, (0, 0, 0, pad)) for u in (dt, Bm, Cm))
    Bm = Bm.reshape(batch, n_chunks, chunk, n_dim)  # (B, n, L, N)
    Cm = Cm.reshape(batch, n_chunks, chunk, n_dim)  # (B, n, L, N)
    log_decay = (dt * A).reshape(batch, n_chunks, chunk, heads).permute(0, 3, 1, 2)
    cum = torch.cumsum(log_decay, dim=-1)  # (B, H, n, L)
    xdt = (x * dt.unsqueeze(-1)).reshape(batch, n_chunks, chunk, heads, p_dim)
    xdt = xdt.permute(0, 3, 1, 2, 4)  # (B, H, n, L, P)

    # Intra-chunk, as the kernel.
    lower = torch.ones(chunk, chunk, dtype=x.dtype, device=x.device).tril()  # (L, L)
    decay = floored_exp(cum.unsqueeze(-1) - cum.unsqueeze(-2), ceiling=0.0) * lower
    cb = Cm @ Bm.transpose(-1, -2)  # (B, n, L, L)
    y = (decay * cb.unsqueeze(1)) @ xdt  # (B, H, n, L, P)

    # Each chunk's state at its last token (the last chunk's too; it gets zero weight).
    to_end = floored_exp(cum[..., -1:] - cum)  # (B, H, n, L)
    weighted = (xdt * to_end.unsqueeze(-1)).transpose(-1, -2)  # (B, H, n, P, L)
    b_heads = Bm.unsqueeze(1).expand(batch, heads, n_chunks, chunk, n_dim)  # (B, H, n, L, N)
    states = _dense(weighted) @ _dense(b_heads)  # (B, H, n, P, N)

    # The carry: start[c] = sum_{c' < c} exp(a_{c'+1} + ... + a_{c-1}) states[c'], with
    # a_j = cum[..., j, -1] the log decay across chunk j. within[i, j] = a_{j+1} + ... + a_i
    # (i >= j) is a cumsum of a masked matrix, so no difference of large sums loses bits.
    a = cum[..., -1]  # (B, H, n)
    steps = a.unsqueeze(-1).expand(batch, heads, n_chunks, n_chunks)  # [i, j] = a_i
    ones = torch.ones_like(steps[0, 0])  # (n, n)
    within = torch.cumsum(steps * ones.tril(-1), dim=-2)  # (B, H, n, n)
    reach = floored_exp(within, ceiling=0.0) * ones.tril()  # (B, H, n, n), 0 above diagonal
    carry = F.pad(reach, (0, 0, 1, 0))[:, :, :n_chunks]  # [c, c'] = reach[c - 1, c']
    flat_states = states.reshape(batch, heads, n_chunks, p_dim * n_dim)
    start = (_dense(carry) @ flat_states).reshape(batch, heads, n_chunks, p_dim, n_dim)

    # Inter-chunk, as the kernel.
    c_heads = _dense(Cm.unsqueeze(1).expand(batch, heads, n_chunks, chunk, n_dim))
    y_inter = start @ c_heads.transpose(-1, -2)  # (B, H, n, P, L)
    y = y + y_inter.transpose(-1, -2) * floored_exp(cum).unsqueeze(-1)  # (B, H, n, L, P)
    y = y.permute(0, 2, 3, 1, 4).reshape(batch, n_chunks * chunk, heads, p_dim)
    return _keep_first(y, 1, seq_len)  # (B, T, H, P)


def _run_ssm(x: Tensor, p, layer, cfg: NetConstants) -> Tensor:
    """`kernels.selective_scan_mixer` with `_selective_scan`. x: (B, T, C) -> (B, T, C)."""
    batch, seq_len, _ = x.shape
    w_xz, w_bc, w_dt = p["w_xz"], p["w_bc"], p["w_dt"]
    inner, state, heads = w_xz.shape[0] // 2, w_bc.shape[0] // 2, w_dt.shape[0]
    xs = F.linear(x, w_xz[:inner]).reshape(batch, seq_len, heads, cfg.head_dim)  # (B, T, H, P)
    z = F.linear(x, w_xz[inner:])  # (B, T, E)
    bc = F.linear(x, w_bc)  # (B, T, 2N)
    Bm, Cm = bc[..., :state], bc[..., state:]  # (B, T, N) each
    dt = F.softplus(F.linear(x, w_dt, p["dt_bias"]))  # (B, T, H)
    A = -torch.exp(p["a_log"])  # (H,)
    if cfg.causal:
        y = _selective_scan(xs, dt, A, Bm, Cm, cfg.chunk_size)  # (B, T, H, P)
    else:

        def both(u: Tensor) -> Tensor:
            return torch.cat([u, u.flip(1)], dim=0)  # (2B, T, ...)

        y2 = _selective_scan(both(xs), both(dt), A, both(Bm), both(Cm), cfg.chunk_size)
        y = y2[:batch] + y2[batch:].flip(1)  # (B, T, H, P)
    y = y + xs * p["d_skip"].unsqueeze(-1)  # (B, T, H, P)
    y = y.reshape(batch, seq_len, inner) * F.silu(z)  # (B, T, E)
    return F.linear(y, p["w_out"])  # (B, T, C)


# Mixer name -> its export form; a mixer not listed exports through its own kernel.
EXPORT_FORMS: dict[str, RunFn] = {
    "linear_attention": _run_linear_attention,
    "sliding_window": _run_sliding_window,
    "ssm": _run_ssm,
}


class ExportableModel(nn.Module):
    """`model`'s forward with the export forms in place of the kernels that need them.

    (B, T) int64 tokens -> (B, T, vocab) logits, the same function as `model` (which it
    holds, weights and all; nothing is copied).
    """

    def __init__(self, model: StaticModel):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        m = self.model
        x = embed(tokens, m.embedding.tensors())  # (B, T, d)
        for block in m.blocks:
            x = _run_block(block, x, m.consts)  # (B, T, d)
        return read_exit(x, m.exit_head.tensors())  # (B, T, V)


def _run_block(block: StaticBlock, x: Tensor, consts: NetConstants) -> Tensor:
    form = EXPORT_FORMS.get(block.layer.mixer)
    if form is None:
        return block(x, consts)  # the block itself: its kernel traces as it is
    norm = block.norm_mix.tensors()
    h = layer_norm(x, norm["weight"], norm["bias"])  # (B, T, d)
    x = x + form(h, block.mixer.tensors(), block.layer, consts)  # (B, T, d)
    # The FFN branch, through network.run_block itself ("skip" adds no mixer branch).
    norm_ffn = block.norm_ffn.tensors() if block.norm_ffn is not None else None
    ffn = block.ffn.tensors() if block.ffn is not None else None
    return run_block(x, "skip", block.layer, None, {}, norm_ffn, ffn, consts)


@contextmanager
def _size_oblivious() -> Iterator[None]:
    # Lets the exporter assume a dynamic size is not 1 where that only decides between a
    # view and a copy (the result is the same either way), instead of refusing a range
    # that includes 1. A private torch setting (torch 2.13 has it): without it, the export
    # forms above still trip guards on the chunk count, and their export fails with a
    # constraint violation on the sequence range (an ExportError, not a wrong file).
    try:
        from torch.fx.experimental import _config
    except ImportError:  # pragma: no cover - older torch
        yield
        return
    if not hasattr(_config, "backed_size_oblivious"):  # pragma: no cover - older torch
        yield
        return
    with _config.patch(backed_size_oblivious=True):
        yield


def export_program(model: StaticModel, max_seq_len: int) -> ExportedProgram:
    """torch.export of `model` with a dynamic batch (>= 1) and sequence (1..max_seq_len).

    Raises whatever torch.export raises (export.py turns it into one line).
    """
    wrapper = ExportableModel(model)
    # An example of no special size (not 1, not a chunk or window multiple): the shapes
    # are traced symbolically, the example only has to be valid.
    example_len = max(2, min(max_seq_len, max_seq_len // 2 + 1))
    example = torch.zeros(2, example_len, dtype=torch.int64)
    dims = {"tokens": {0: Dim("batch", min=1), 1: Dim("seq", min=1, max=max_seq_len)}}
    with _size_oblivious(), torch.no_grad():
        return torch.export.export(wrapper, (example,), dynamic_shapes=dims, strict=False)


__all__ = ["EXPORT_FORMS", "ExportableModel", "export_program"]
