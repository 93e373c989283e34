"""Gated linear unit whose gate mixes neighbouring tokens.

    y = (u * silu(g)) W_out^T + b_out,   u = x_t W_u^T + b_u,   g = x_shift_t W_g^T + b_g

with x_shift_t = x_{t-1} (causal) or (x_{t-1} + x_{t+1}) / 2 (bidirectional), zero beyond
the ends. The shift is linear and acts on time only, so it commutes with the channel
projection: one packed matmul computes x [W_u; W_g]^T and the shift is applied to the
gate half afterwards, on E channels. The gate bias is added after the shift, which is
what a zero-padded x_shift gives.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def token_shift(u: Tensor, causal: bool) -> Tensor:
    """Shift along T with zero padding.

    Args:
        u: (B, T, D).
        causal: u_{t-1}; otherwise (u_{t-1} + u_{t+1}) / 2.

    Returns:
        (B, T, D).
    """
    seq_len = u.shape[1]
    if causal:
        return F.pad(u, (0, 0, 1, 0))[:, :seq_len]  # (B, T, D)
    padded = F.pad(u, (0, 0, 1, 1))  # (B, T + 2, D)
    return (padded[:, :seq_len] + padded[:, 2:]) * 0.5  # (B, T, D)


def glu_mixer(
    x: Tensor,
    w_in: Tensor,
    b_in: Tensor | None,
    w_out: Tensor,
    b_out: Tensor | None,
    causal: bool,
) -> Tensor:
    """Token-shift-gated GLU.

    Args:
        x: tokens, (B, T, C).
        w_in: packed [W_u; W_g], (2E, C).
        b_in: packed [b_u; b_g], (2E,), or None.
        w_out: (C, E).
        b_out: (C,) or None.
        causal: causal or bidirectional token shift for the gate.

    Returns:
        (B, T, C).

    Raises:
        ValueError: if w_in has an odd number of rows.
    """
    rows = w_in.shape[0]
    if rows % 2 != 0:
        raise ValueError(f"w_in must have 2E rows, got {rows}")
    inner = rows // 2
    ug = F.linear(x, w_in)  # (B, T, 2E)
    u, g = ug[..., :inner], ug[..., inner:]  # (B, T, E) each
    g = token_shift(g, causal)  # (B, T, E)
    if b_in is not None:
        u = u + b_in[:inner]
        g = g + b_in[inner:]
    return F.linear(u * F.silu(g), w_out, b_out)  # (B, T, C)


def glu_flops(batch: int, seq_len: int, d_model: int, inner: int) -> int:
    """Multiply-accumulates of `glu_mixer` with E = inner: 3 * B * T * C * E."""
    return 3 * batch * seq_len * d_model * inner


__all__ = ["glu_flops", "glu_mixer", "token_shift"]
