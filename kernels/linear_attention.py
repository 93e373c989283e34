"""Linear attention (Katharopoulos et al., 2020) with feature map phi(u) = elu(u) + 1.

    y_t = phi(q_t) . S_t / (phi(q_t) . z_t + eps)
    S_t = sum_s phi(k_s) v_s^T,   z_t = sum_s phi(k_s)

where s runs over s <= t (causal) or over the whole sequence (bidirectional).

The values are augmented with a column of ones, so one set of matmuls carries the
numerator (first hd columns) and the normaliser z (last column) together.

Causal mode is chunked: within a chunk of L tokens an (L x L) masked matrix, across chunks
a state carried by an exclusive prefix sum of per-chunk states. Time and memory are O(T).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import attention_projection_flops, output_projection, qkv_projection
from .numerics import floored_exp

EPS = 1e-6  # keeps the normaliser away from 0; phi > 0 already makes it positive


def feature_map(u: Tensor) -> Tensor:
    """phi(u) = elu(u) + 1 = exp(min(u, 0)) + max(u, 0), elementwise and > 0.

    Written with exp and relu because aten's elu is several times slower on CPU; the
    relu side has derivative 0 at u = 0, so the gradient is elu's (1) there too.
    """
    return floored_exp(u, ceiling=0.0) + F.relu(u)


def linear_attention_core(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, chunk_size: int = 64
) -> Tensor:
    """Normalised linear attention on per-head tensors.

    Args:
        q, k: (B, H, T, d).
        v: (B, H, T, dv).
        causal: prefix sums (s <= t) or global sums.
        chunk_size: tokens per chunk L in causal mode (min(L, T) is used).

    Returns:
        (B, H, T, dv).

    Raises:
        ValueError: if chunk_size < 1.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    batch, heads, seq_len, _ = q.shape
    v_dim = v.shape[-1]
    fq, fk = feature_map(q), feature_map(k)  # (B, H, T, d)
    ones = torch.ones(batch, heads, seq_len, 1, dtype=v.dtype, device=v.device)
    va = torch.cat([v, ones], dim=-1)  # (B, H, T, dv + 1)

    if not causal:
        kv = fk.transpose(-1, -2) @ va  # (B, H, d, dv + 1): [S | z]
        out = fq @ kv  # (B, H, T, dv + 1)
        return out[..., :v_dim] / (out[..., v_dim:] + EPS)  # (B, H, T, dv)

    chunk = min(chunk_size, seq_len)
    n_chunks = math.ceil(seq_len / chunk)
    pad = n_chunks * chunk - seq_len
    if pad:
        # Padding sits at the end, so in causal mode it only reaches padded positions.
        fq, fk, va = (F.pad(u, (0, 0, 0, pad)) for u in (fq, fk, va))
    fq = fq.reshape(batch, heads, n_chunks, chunk, -1)  # (B, H, n, L, d)
    fk = fk.reshape(batch, heads, n_chunks, chunk, -1)  # (B, H, n, L, d)
    va = va.reshape(batch, heads, n_chunks, chunk, v_dim + 1)  # (B, H, n, L, dv + 1)

    # Within a chunk: the masked (L x L) score matrix. Multiplying by a 0/1 mask is
    # several times faster on CPU than torch.tril on a batch of matrices.
    lower = torch.ones(chunk, chunk, dtype=fq.dtype, device=fq.device).tril()  # (L, L)
    scores = (fq @ fk.transpose(-1, -2)) * lower  # (B, H, n, L, L)
    out = scores @ va  # (B, H, n, L, dv + 1)

    # Across chunks: each chunk reads the sum of the states of the chunks before it, so
    # the last chunk's state is never needed.
    states = fk[:, :, :-1].transpose(-1, -2) @ va[:, :, :-1]  # (B, H, n-1, d, dv + 1)
    carried = torch.cumsum(states, dim=2)  # (B, H, n-1, d, dv + 1)
    carried = F.pad(carried, (0, 0, 0, 0, 1, 0))  # (B, H, n, d, dv + 1): zero for chunk 0
    out = out + fq @ carried  # (B, H, n, L, dv + 1)

    out = out.reshape(batch, heads, n_chunks * chunk, v_dim + 1)[:, :, :seq_len]
    return out[..., :v_dim] / (out[..., v_dim:] + EPS)  # (B, H, T, dv)


def linear_attention(
    x: Tensor,
    w_qkv: Tensor,
    b_qkv: Tensor | None,
    w_out: Tensor,
    b_out: Tensor | None,
    head_dim: int,
    causal: bool,
    chunk_size: int = 64,
) -> Tensor:
    """Multi-head linear attention.

    Args:
        x: tokens, (B, T, C).
        w_qkv: packed [q; k; v] projection, (3 * H * head_dim, C); H is inferred from it.
        b_qkv: (3 * H * head_dim,) or None.
        w_out: output projection, (C, H * head_dim).
        b_out: (C,) or None.
        head_dim: channels per head.
        causal: causal (chunked prefix sums) or bidirectional (global sums).
        chunk_size: tokens per chunk in causal mode.

    Returns:
        (B, T, C).

    Raises:
        ValueError: if `w_qkv` does not hold a whole number of heads, or chunk_size < 1.
    """
    q, k, v = qkv_projection(x, w_qkv, b_qkv, head_dim)  # each (B, H, T, hd)
    y = linear_attention_core(q, k, v, causal, chunk_size)  # (B, H, T, hd)
    return output_projection(y, w_out, b_out)  # (B, T, C)


def linear_attention_core_flops(
    batch_heads: int, seq_len: int, head_dim: int, causal: bool, chunk_size: int = 64
) -> int:
    """Multiply-accumulates of `linear_attention_core` with d = dv = head_dim.

    The ones column makes every value-side product dv + 1 wide. Causal mode counts the
    padded last chunk; prefix sums and elementwise work are not counted.
    """
    va = head_dim + 1
    if not causal:
        return 2 * batch_heads * seq_len * head_dim * va
    chunk = min(chunk_size, seq_len)
    n_chunks = math.ceil(seq_len / chunk)
    padded = n_chunks * chunk
    intra = batch_heads * padded * chunk * (head_dim + va)  # scores, then scores @ v
    states = batch_heads * (n_chunks - 1) * chunk * head_dim * va  # k^T v, all but last chunk
    inter = batch_heads * padded * head_dim * va  # q @ carried state
    return intra + states + inter


def linear_attention_flops(
    batch: int,
    seq_len: int,
    d_model: int,
    heads: int,
    head_dim: int,
    causal: bool,
    chunk_size: int = 64,
) -> int:
    """Multiply-accumulates of `linear_attention` (one multiply-add = one FLOP)."""
    return attention_projection_flops(
        batch, seq_len, d_model, heads, head_dim
    ) + linear_attention_core_flops(batch * heads, seq_len, head_dim, causal, chunk_size)


__all__ = [
    "feature_map",
    "linear_attention",
    "linear_attention_core",
    "linear_attention_core_flops",
    "linear_attention_flops",
]
