"""Softmax multi-head attention, and the projections every attention kernel shares.

The weights come in as arguments, in the layout of `torch.nn.MultiheadAttention`'s packed
`in_proj_weight`: `w_qkv` stacks the query, key and value projections as [q; k; v], each
`heads * head_dim` rows, head after head. A narrower layer (h heads, width c) is the first
h * head_dim rows of each of the three blocks and their first c columns; a plain prefix
of the packed rows is not (it would mix q and k rows). Holding the full weight as
(3, H, head_dim, C) and passing `w[:, :h, :, :c].reshape(3 * h * head_dim, c)` gives it.

`qkv_projection` and `output_projection` are the only way the attention kernels of this
package enter and leave head space, so they all agree on the layout.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def num_heads(w_qkv: Tensor, head_dim: int) -> int:
    """Number of heads packed in `w_qkv` (3 * heads * head_dim, C).

    Raises:
        ValueError: if the row count is not a multiple of 3 * head_dim.
    """
    rows = w_qkv.shape[0]
    if head_dim <= 0 or rows % (3 * head_dim) != 0:
        raise ValueError(
            f"w_qkv has {rows} rows, not a positive multiple of 3 * head_dim = {3 * head_dim}"
        )
    return rows // (3 * head_dim)


def qkv_projection(
    x: Tensor, w_qkv: Tensor, b_qkv: Tensor | None, head_dim: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Project tokens to per-head queries, keys and values with one matmul.

    Args:
        x: tokens, (B, T, C).
        w_qkv: packed [q; k; v] projection, (3 * H * head_dim, C).
        b_qkv: its bias, (3 * H * head_dim,), or None.
        head_dim: channels per head.

    Returns:
        q, k, v, each (B, H, T, head_dim). They are strided views of one buffer (no copy);
        the last dimension is contiguous, which is all SDPA needs.
    """
    batch, seq_len, _ = x.shape
    heads = num_heads(w_qkv, head_dim)
    qkv = F.linear(x, w_qkv, b_qkv)  # (B, T, 3 * H * hd)
    qkv = qkv.view(batch, seq_len, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
    q, k, v = qkv.unbind(0)  # each (B, H, T, hd)
    return q, k, v


def output_projection(y: Tensor, w_out: Tensor, b_out: Tensor | None) -> Tensor:
    """Merge heads and project back to the model width.

    Args:
        y: per-head outputs, (B, H, T, hd).
        w_out: (C, H * hd).
        b_out: (C,) or None.

    Returns:
        (B, T, C).
    """
    batch, heads, seq_len, head_dim = y.shape
    # SDPA on CPU and CUDA writes its output in (B, T, H, hd) memory order, so this
    # transpose makes it contiguous again and the reshape is a view, not a copy.
    y = y.transpose(1, 2).reshape(batch, seq_len, heads * head_dim)  # (B, T, H * hd)
    return F.linear(y, w_out, b_out)  # (B, T, C)


def softmax_attention(
    x: Tensor,
    w_qkv: Tensor,
    b_qkv: Tensor | None,
    w_out: Tensor,
    b_out: Tensor | None,
    head_dim: int,
    causal: bool,
) -> Tensor:
    """Multi-head scaled dot-product attention over the whole sequence.

    Args:
        x: tokens, (B, T, C).
        w_qkv: packed [q; k; v] projection, (3 * H * head_dim, C); H is inferred from it.
        b_qkv: (3 * H * head_dim,) or None.
        w_out: output projection, (C, H * head_dim).
        b_out: (C,) or None.
        head_dim: channels per head.
        causal: if True, token t attends to tokens s <= t only; else to all tokens.

    Returns:
        (B, T, C).

    Raises:
        ValueError: if `w_qkv` does not hold a whole number of heads.
    """
    q, k, v = qkv_projection(x, w_qkv, b_qkv, head_dim)  # each (B, H, T, hd)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, T, hd)
    return output_projection(y, w_out, b_out)  # (B, T, C)


def attention_projection_flops(
    batch: int, seq_len: int, d_model: int, heads: int, head_dim: int
) -> int:
    """Multiply-accumulates of the qkv and output projections: 4 * B * T * C * H * hd."""
    inner = heads * head_dim
    return batch * seq_len * d_model * 3 * inner + batch * seq_len * inner * d_model


def sdpa_flops(batch_heads: int, q_len: int, k_len: int, head_dim: int, v_dim: int) -> int:
    """Multiply-accumulates of one SDPA call: the two matmuls, B*H * Lq * Lk * (d + dv).

    The causal mask is not credited: the count is that of the dense product, as fvcore's
    convention for matmuls does not look at values.
    """
    return batch_heads * q_len * k_len * (head_dim + v_dim)


def softmax_attention_flops(
    batch: int, seq_len: int, d_model: int, heads: int, head_dim: int
) -> int:
    """Multiply-accumulates of `softmax_attention` (one multiply-add = one FLOP).

    Same count in causal and bidirectional mode (see `sdpa_flops`).
    """
    return attention_projection_flops(batch, seq_len, d_model, heads, head_dim) + sdpa_flops(
        batch * heads, seq_len, seq_len, head_dim, head_dim
    )


__all__ = [
    "attention_projection_flops",
    "num_heads",
    "output_projection",
    "qkv_projection",
    "sdpa_flops",
    "softmax_attention",
    "softmax_attention_flops",
]
