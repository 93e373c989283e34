"""Attention kernels (softmax, sliding window, linear) against explicit T x T references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nas.kernels import (
    linear_attention,
    linear_attention_core,
    num_heads,
    sliding_window_attention,
    sliding_window_core,
    softmax_attention,
)

C, HEADS, HEAD_DIM = 12, 2, 4
INNER = HEADS * HEAD_DIM
LENGTHS = [1, 3, 4, 5, 8, 13]  # with window / chunk 4: T < L, T = L, ragged, T = 1
MODES = pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])


def _weights(seed: int, bias: bool) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w_qkv": torch.randn(3 * INNER, C, generator=g, dtype=torch.float64) / math.sqrt(C),
        "b_qkv": torch.randn(3 * INNER, generator=g, dtype=torch.float64) if bias else None,
        "w_out": torch.randn(C, INNER, generator=g, dtype=torch.float64) / math.sqrt(INNER),
        "b_out": torch.randn(C, generator=g, dtype=torch.float64) if bias else None,
    }


def _tokens(seq_len: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, seq_len, C, generator=g, dtype=torch.float64)


def _naive_heads(x, w_qkv, b_qkv):
    """Per-head (q, k, v) lists of (B, T, hd), computed one head at a time."""
    heads = []
    for h in range(HEADS):
        parts = []
        for part in range(3):  # q, k, v blocks of the packed weight
            rows = slice(part * INNER + h * HEAD_DIM, part * INNER + (h + 1) * HEAD_DIM)
            out = x @ w_qkv[rows].T
            if b_qkv is not None:
                out = out + b_qkv[rows]
            parts.append(out)
        heads.append(parts)
    return heads


def _naive_out(per_head, w_out, b_out):
    y = torch.cat(per_head, dim=-1) @ w_out.T
    return y if b_out is None else y + b_out


def _allowed(seq_len: int, window: int | None, causal: bool) -> torch.Tensor:
    """(T, T) bool: may query t see key s."""
    t = torch.arange(seq_len).view(-1, 1)
    s = torch.arange(seq_len).view(1, -1)
    ok = torch.ones(seq_len, seq_len, dtype=torch.bool)
    if causal:
        ok &= s <= t
    if window is not None:
        ok &= (t - s).abs() < window
    return ok


def naive_softmax_attention(x, w_qkv, b_qkv, w_out, b_out, window, causal):
    mask = _allowed(x.shape[1], window, causal)
    outs = []
    for q, k, v in _naive_heads(x, w_qkv, b_qkv):
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(HEAD_DIM)  # (B, T, T)
        scores = scores.masked_fill(~mask, float("-inf"))
        outs.append(torch.softmax(scores, dim=-1) @ v)
    return _naive_out(outs, w_out, b_out)


def naive_linear_attention(x, w_qkv, b_qkv, w_out, b_out, causal, eps=1e-6):
    mask = _allowed(x.shape[1], None, causal).to(x.dtype)
    outs = []
    for q, k, v in _naive_heads(x, w_qkv, b_qkv):
        a = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-1, -2) * mask  # (B, T, T)
        outs.append((a @ v) / (a.sum(-1, keepdim=True) + eps))
    return _naive_out(outs, w_out, b_out)


@MODES
@pytest.mark.parametrize("seq_len", LENGTHS)
@pytest.mark.parametrize("bias", [True, False])
def test_softmax_attention_matches_naive(seq_len: int, causal: bool, bias: bool) -> None:
    w, x = _weights(0, bias), _tokens(seq_len)
    got = softmax_attention(x, **w, head_dim=HEAD_DIM, causal=causal)
    want = naive_softmax_attention(x, **w, window=None, causal=causal)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@MODES
@pytest.mark.parametrize("seq_len", LENGTHS + [16, 17])
@pytest.mark.parametrize("window", [1, 4, 5])
def test_sliding_window_matches_naive(seq_len: int, window: int, causal: bool) -> None:
    w, x = _weights(2, True), _tokens(seq_len)
    got = sliding_window_attention(x, **w, head_dim=HEAD_DIM, window=window, causal=causal)
    want = naive_softmax_attention(x, **w, window=window, causal=causal)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@MODES
def test_sliding_window_wider_than_sequence_is_full_attention(causal: bool) -> None:
    w, x = _weights(3, True), _tokens(6)
    got = sliding_window_attention(x, **w, head_dim=HEAD_DIM, window=64, causal=causal)
    want = softmax_attention(x, **w, head_dim=HEAD_DIM, causal=causal)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@MODES
def test_sliding_window_core_float32_strided_inputs(causal: bool) -> None:
    # q, k, v as qkv_projection returns them: strided views of one buffer.
    g = torch.Generator().manual_seed(4)
    qkv = torch.randn(2, 37, 3, 2, 8, generator=g).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, H, T, hd), non-contiguous
    got = sliding_window_core(q, k, v, window=8, causal=causal)
    t = torch.arange(37)
    lag = t.view(-1, 1) - t.view(1, -1)
    allowed = (lag >= 0) & (lag < 8) if causal else lag.abs() < 8
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@MODES
@pytest.mark.parametrize("seq_len", LENGTHS + [16, 17])
@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_linear_attention_matches_naive(seq_len: int, chunk_size: int, causal: bool) -> None:
    w, x = _weights(5, True), _tokens(seq_len)
    got = linear_attention(x, **w, head_dim=HEAD_DIM, causal=causal, chunk_size=chunk_size)
    want = naive_linear_attention(x, **w, causal=causal)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_linear_attention_core_value_width_may_differ() -> None:
    g = torch.Generator().manual_seed(6)
    q, k = torch.randn(2, 1, 3, 9, 4, generator=g, dtype=torch.float64).unbind(0)
    v = torch.randn(1, 3, 9, 5, generator=g, dtype=torch.float64)
    got = linear_attention_core(q, k, v, causal=True, chunk_size=4)
    a = ((F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-1, -2)).tril()
    want = (a @ v) / (a.sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_num_heads_rejects_partial_heads() -> None:
    assert num_heads(torch.zeros(3 * INNER, C), HEAD_DIM) == HEADS
    with pytest.raises(ValueError, match="multiple of 3 \\* head_dim"):
        num_heads(torch.zeros(3 * INNER + 1, C), HEAD_DIM)


def test_bad_window_and_chunk_are_rejected() -> None:
    q = torch.zeros(1, 1, 4, 2)
    with pytest.raises(ValueError, match="window"):
        sliding_window_core(q, q, q, window=0, causal=True)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention_core(q, q, q, causal=True, chunk_size=0)
