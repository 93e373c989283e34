"""Sliding-window (local) multi-head attention in O(T * window) time and memory.

Queries are cut into blocks of `window` tokens. Every key a query of block b may see lies
in block b-1 or b (causal), or b-1, b or b+1 (bidirectional), so each query block attends
to a band of 2 or 3 key blocks under one static mask, in a single batched SDPA call. The
key blocks are overlapping strided views of one padded buffer, so building them copies
nothing; no T x T matrix ever exists.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import (
    attention_projection_flops,
    output_projection,
    qkv_projection,
    sdpa_flops,
)


def _band_mask(
    n_blocks: int,
    block: int,
    key_blocks: int,
    seq_len: int,
    window: int,
    causal: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """Additive mask (1, n_blocks, block, key_blocks * block): 0 where allowed, -inf elsewhere.

    Query i of block b sits at t = b * block + i; key j of its band at
    s = (b - 1) * block + j. Keys outside [0, seq_len) are padding and always masked; the
    key s = t (causal) or the nearest real token (padded queries) keeps every row non-empty,
    so no row turns into NaN.
    """
    t = torch.arange(n_blocks * block, device=device).view(n_blocks, block, 1)  # (nb, L, 1)
    j = torch.arange(key_blocks * block, device=device)  # (kb * L,)
    s = t - t % block - block + j  # (nb, L, kb * L): absolute key positions
    lag = t - s  # (nb, L, kb * L)
    allowed = (lag < window) & (s >= 0) & (s < seq_len)
    allowed = allowed & (lag >= 0) if causal else allowed & (lag > -window)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, float("-inf")).unsqueeze(0)  # (1, nb, L, kb * L)


def sliding_window_core(q: Tensor, k: Tensor, v: Tensor, window: int, causal: bool) -> Tensor:
    """Attention restricted to a band of `window` tokens around each query.

    Causal: query t attends keys s with t - window < s <= t.
    Bidirectional: query t attends keys s with |t - s| < window.

    Args:
        q, k, v: (B, H, T, hd); any strides with a contiguous last dimension.
        window: band half-width in tokens, >= 1.
        causal: selects the band above.

    Returns:
        (B, H, T, hd). When T <= window the band covers every pair, so this is plain SDPA.

    Raises:
        ValueError: if window < 1.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    batch, heads, seq_len, head_dim = q.shape
    if seq_len <= window:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, T, hd)

    block = window
    n_blocks = math.ceil(seq_len / block)
    pad = n_blocks * block - seq_len
    after = 0 if causal else block  # the bidirectional band also reaches into block b+1
    key_blocks = 2 if causal else 3
    band = key_blocks * block

    # Queries: (B*H, nb, L, hd). This is the only copy of q, and it is needed anyway to
    # fold B and H into SDPA's 4-D batch (its fused CPU kernel wants a 4-D mask).
    qb = F.pad(q, (0, 0, 0, pad)).reshape(batch * heads, n_blocks, block, head_dim)

    def key_band(u: Tensor) -> Tensor:
        # One zero block in front (and behind) so block b's band starts at padded row
        # b * L; unfold then yields overlapping strided views, no copy.
        up = F.pad(u, (0, 0, block, pad + after))  # (B, H, (nb + kb - 1) * L, hd)
        up = up.reshape(batch * heads, -1, head_dim)  # (B*H, (nb + kb - 1) * L, hd)
        return up.unfold(1, band, block).transpose(-1, -2)  # (B*H, nb, kb * L, hd)

    mask = _band_mask(n_blocks, block, key_blocks, seq_len, window, causal, q.dtype, q.device)
    y = F.scaled_dot_product_attention(qb, key_band(k), key_band(v), attn_mask=mask)
    y = y.reshape(batch, heads, n_blocks * block, head_dim)  # (B, H, nb * L, hd)
    return y[:, :, :seq_len]  # (B, H, T, hd)


def sliding_window_attention(
    x: Tensor,
    w_qkv: Tensor,
    b_qkv: Tensor | None,
    w_out: Tensor,
    b_out: Tensor | None,
    head_dim: int,
    window: int,
    causal: bool,
) -> Tensor:
    """Multi-head sliding-window attention.

    Args:
        x: tokens, (B, T, C).
        w_qkv: packed [q; k; v] projection, (3 * H * head_dim, C); H is inferred from it.
        b_qkv: (3 * H * head_dim,) or None.
        w_out: output projection, (C, H * head_dim).
        b_out: (C,) or None.
        head_dim: channels per head.
        window: tokens each query sees on its side, itself included (see
            `sliding_window_core`).
        causal: causal or bidirectional band.

    Returns:
        (B, T, C).

    Raises:
        ValueError: if `w_qkv` does not hold a whole number of heads, or window < 1.
    """
    q, k, v = qkv_projection(x, w_qkv, b_qkv, head_dim)  # each (B, H, T, hd)
    y = sliding_window_core(q, k, v, window, causal)  # (B, H, T, hd)
    return output_projection(y, w_out, b_out)  # (B, T, C)


def sliding_window_core_flops(
    batch_heads: int, seq_len: int, head_dim: int, window: int, causal: bool
) -> int:
    """Multiply-accumulates of `sliding_window_core`, padding blocks included."""
    if seq_len <= window:
        return sdpa_flops(batch_heads, seq_len, seq_len, head_dim, head_dim)
    n_blocks = math.ceil(seq_len / window)
    key_blocks = 2 if causal else 3
    return sdpa_flops(batch_heads * n_blocks, window, key_blocks * window, head_dim, head_dim)


def sliding_window_flops(
    batch: int,
    seq_len: int,
    d_model: int,
    heads: int,
    head_dim: int,
    window: int,
    causal: bool,
) -> int:
    """Multiply-accumulates of `sliding_window_attention` (one multiply-add = one FLOP)."""
    return attention_projection_flops(
        batch, seq_len, d_model, heads, head_dim
    ) + sliding_window_core_flops(batch * heads, seq_len, head_dim, window, causal)


__all__ = [
    "sliding_window_attention",
    "sliding_window_core",
    "sliding_window_core_flops",
    "sliding_window_flops",
]
