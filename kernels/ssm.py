"""Selective state-space mixer in the style of Mamba-2 (scalar decay per head).

Per head h, with state h_t of shape (P, N):

    h_t = exp(dt_t * A_h) h_{t-1} + dt_t * x_t (outer) B_t,     y_t = h_t C_t

`selective_scan` evaluates this with the chunked state-space-duality algorithm (SSD,
Dao & Gu 2024): inside a chunk of L tokens the recurrence is an (L x L) lower-triangular
matrix of decays times C B^T; each chunk also summarises its inputs into one (P, N)
state; a loop over the T / L chunks carries that state forward; the carried state then
reaches every token of the next chunk through C. Time and memory are O(T * L).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .numerics import floored_exp


def selective_scan(
    x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, chunk_size: int = 64
) -> Tensor:
    """Causal selective scan, chunked.

    Args:
        x: inputs, (B, T, H, P).
        dt: step sizes, (B, T, H), >= 0.
        A: per-head decay rates, (H,), <= 0 (so exp(dt * A) <= 1).
        Bm: input projections to the state, (B, T, N), shared by the heads.
        Cm: state read-outs, (B, T, N), shared by the heads.
        chunk_size: tokens per chunk L (min(L, T) is used).

    Returns:
        y, (B, T, H, P), with h_0 = 0.

    Raises:
        ValueError: if chunk_size < 1.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    batch, seq_len, heads, p_dim = x.shape
    n_dim = Bm.shape[-1]
    chunk = min(chunk_size, seq_len)
    n_chunks = math.ceil(seq_len / chunk)
    pad = n_chunks * chunk - seq_len
    # Zero padding at the end: dt = 0 means no decay and no input, and it only reaches
    # padded positions anyway.
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))  # (B, Tp, H, P)
        dt, Bm, Cm = (F.pad(u, (0, 0, 0, pad)) for u in (dt, Bm, Cm))  # (B, Tp, H | N)
    Bm = Bm.view(batch, n_chunks, chunk, n_dim)  # (B, n, L, N)
    Cm = Cm.view(batch, n_chunks, chunk, n_dim)  # (B, n, L, N)

    log_decay = (dt * A).view(batch, n_chunks, chunk, heads).permute(0, 3, 1, 2)  # (B, H, n, L)
    cum = torch.cumsum(log_decay, dim=-1)  # (B, H, n, L): log decay from chunk start to t
    xdt = (x * dt.unsqueeze(-1)).view(batch, n_chunks, chunk, heads, p_dim)  # (B, n, L, H, P)
    xdt = xdt.permute(0, 3, 1, 2, 4)  # (B, H, n, L, P)

    # Intra-chunk: y_t += sum_{s<=t} exp(cum_t - cum_s) (C_t . B_s) dt_s x_s.
    # The s > t entries have positive exponents: clamping them to 0 before exp keeps
    # them from overflowing, and the 0/1 mask then gives them exactly zero weight and
    # zero gradient. (On CPU masked_fill is slow and so is exp(-inf).)
    lower = torch.ones(chunk, chunk, dtype=x.dtype, device=x.device).tril()  # (L, L)
    seg = cum.unsqueeze(-1) - cum.unsqueeze(-2)  # (B, H, n, L, L): [t, s]
    decay = floored_exp(seg, ceiling=0.0) * lower  # (B, H, n, L, L)
    cb = Cm @ Bm.transpose(-1, -2)  # (B, n, L, L)
    y = (decay * cb.unsqueeze(1)) @ xdt  # (B, H, n, L, P)

    # Each chunk's own contribution to the state at its last token. The last chunk's is
    # never read (no final state is returned), so it is not computed.
    to_end = floored_exp(cum[:, :, :-1, -1:] - cum[:, :, :-1])  # (B, H, n-1, L)
    weighted = (xdt[:, :, :-1] * to_end.unsqueeze(-1)).transpose(-1, -2)  # (B, H, n-1, P, L)
    states = weighted @ Bm[:, :-1].unsqueeze(1)  # (B, H, n-1, P, N)

    # Carry the state across chunks: T / L - 1 sequential steps on (P, N) states.
    chunk_decay = floored_exp(cum[..., -1])  # (B, H, n)
    h = torch.zeros(batch, heads, p_dim, n_dim, dtype=x.dtype, device=x.device)  # (B, H, P, N)
    starts = [h]
    for c in range(n_chunks - 1):
        h = chunk_decay[:, :, c, None, None] * h + states[:, :, c]  # (B, H, P, N)
        starts.append(h)
    start = torch.stack(starts, dim=2)  # (B, H, n, P, N): state entering each chunk

    # Inter-chunk: y_t += exp(cum_t) C_t . h_start.
    y_inter = start @ Cm.unsqueeze(1).transpose(-1, -2)  # (B, H, n, P, L)
    y = y + y_inter.transpose(-1, -2) * floored_exp(cum).unsqueeze(-1)  # (B, H, n, L, P)

    y = y.permute(0, 2, 3, 1, 4).reshape(batch, n_chunks * chunk, heads, p_dim)  # (B, Tp, H, P)
    return y[:, :seq_len]  # (B, T, H, P)


def selective_scan_mixer(
    x: Tensor,
    w_xz: Tensor,
    w_bc: Tensor,
    w_dt: Tensor,
    dt_bias: Tensor,
    a_log: Tensor,
    d_skip: Tensor,
    w_out: Tensor,
    head_dim: int,
    causal: bool,
    chunk_size: int = 64,
) -> Tensor:
    """Mamba-2 style mixer: projections, selective scan, skip, gate, output projection.

    Args:
        x: tokens, (B, T, C).
        w_xz: packed [W_x; W_z], (2E, C), E = H * head_dim.
        w_bc: packed [W_B; W_C], (2N, C).
        w_dt: (H, C).
        dt_bias: (H,); dt = softplus(x W_dt^T + dt_bias).
        a_log: (H,); A = -exp(a_log).
        d_skip: (H,); per-head skip y += D_h x.
        w_out: (C, E).
        head_dim: P, channels per head.
        causal: one forward scan; otherwise forward scan plus a scan of the time-reversed
            inputs (same parameters), with the skip added once.
        chunk_size: tokens per chunk of the scan.

    Returns:
        (B, T, C).

    Raises:
        ValueError: if the weight shapes disagree with head_dim.
    """
    batch, seq_len, _ = x.shape
    inner = w_xz.shape[0] // 2
    heads = w_dt.shape[0]
    if w_xz.shape[0] != 2 * heads * head_dim:
        raise ValueError(
            f"w_xz has {w_xz.shape[0]} rows, expected 2 * heads * head_dim = "
            f"{2 * heads * head_dim} (heads from w_dt)"
        )
    state = w_bc.shape[0] // 2
    xz = F.linear(x, w_xz)  # (B, T, 2E)
    xs = xz[..., :inner].reshape(batch, seq_len, heads, head_dim)  # (B, T, H, P)
    z = xz[..., inner:]  # (B, T, E)
    bc = F.linear(x, w_bc)  # (B, T, 2N)
    Bm, Cm = bc[..., :state], bc[..., state:]  # (B, T, N) each
    dt = F.softplus(F.linear(x, w_dt, dt_bias))  # (B, T, H)
    A = -torch.exp(a_log)  # (H,)

    if causal:
        y = selective_scan(xs, dt, A, Bm, Cm, chunk_size)  # (B, T, H, P)
    else:
        # Both directions in one call: the reversed sequences ride along the batch.
        def both(u: Tensor) -> Tensor:
            return torch.cat([u, u.flip(1)], dim=0)  # (2B, T, ...)

        y2 = selective_scan(both(xs), both(dt), A, both(Bm), both(Cm), chunk_size)
        y = y2[:batch] + y2[batch:].flip(1)  # (B, T, H, P)
    y = y + xs * d_skip.unsqueeze(-1)  # (B, T, H, P)
    y = y.reshape(batch, seq_len, inner) * F.silu(z)  # (B, T, E)
    return F.linear(y, w_out)  # (B, T, C)


def selective_scan_core_flops(
    batch: int, seq_len: int, heads: int, head_dim: int, state: int, chunk_size: int = 64
) -> int:
    """Multiply-accumulates of one `selective_scan`, padded last chunk included.

    C B^T (shared by heads), the decay-weighted (L x L) product with x, the states of
    all chunks but the last, and the inter-chunk read-out. The carry loop and the decays
    are elementwise.
    """
    chunk = min(chunk_size, seq_len)
    n_chunks = math.ceil(seq_len / chunk)
    padded = n_chunks * chunk
    cb = batch * padded * chunk * state
    intra = batch * heads * padded * chunk * head_dim
    states = batch * heads * (n_chunks - 1) * chunk * head_dim * state
    readout = batch * heads * padded * head_dim * state
    return cb + intra + states + readout


def selective_scan_flops(
    batch: int,
    seq_len: int,
    d_model: int,
    heads: int,
    head_dim: int,
    state: int,
    causal: bool,
    chunk_size: int = 64,
) -> int:
    """Multiply-accumulates of `selective_scan_mixer` (one multiply-add = one FLOP)."""
    inner = heads * head_dim
    projections = batch * seq_len * d_model * (2 * inner + 2 * state + heads + inner)
    scans = 1 if causal else 2
    return projections + selective_scan_core_flops(
        scans * batch, seq_len, heads, head_dim, state, chunk_size
    )


__all__ = [
    "selective_scan",
    "selective_scan_core_flops",
    "selective_scan_flops",
    "selective_scan_mixer",
]
