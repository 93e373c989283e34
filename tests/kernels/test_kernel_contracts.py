"""Contracts every kernel keeps, parametrized over all of them.

Causal mode never looks ahead; bidirectional mode does; gradients reach the input and
every weight; the sub-quadratic kernels stay O(T) in memory.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nas.kernels import (
    depthwise_conv_mixer,
    ffn,
    glu_mixer,
    linear_attention,
    pool_mixer,
    selective_scan_mixer,
    sliding_window_attention,
    softmax_attention,
)

HEADS, HEAD_DIM, STATE = 2, 4, 4


def _params(g: torch.Generator, dtype: torch.dtype, *shapes: tuple[int, ...]) -> list:
    return [torch.randn(*s, generator=g, dtype=dtype) / math.sqrt(s[-1]) for s in shapes]


def _attention_weights(c: int, g, dtype) -> list:
    inner = HEADS * HEAD_DIM
    return _params(g, dtype, (3 * inner, c), (3 * inner,), (c, inner), (c,))


def build(name: str, c: int, g: torch.Generator, dtype: torch.dtype, scale: int = 4):
    """(kernel(x, causal), weights) for `name`; `scale` sets window / chunk / pool size."""
    inner = HEADS * HEAD_DIM
    if name == "softmax_attention":
        w = _attention_weights(c, g, dtype)
        return (lambda x, causal: softmax_attention(x, *w, HEAD_DIM, causal)), w
    if name == "sliding_window":
        w = _attention_weights(c, g, dtype)
        return (lambda x, causal: sliding_window_attention(x, *w, HEAD_DIM, scale, causal)), w
    if name == "linear_attention":
        w = _attention_weights(c, g, dtype)
        return (lambda x, causal: linear_attention(x, *w, HEAD_DIM, causal, scale)), w
    if name == "pool":
        return (lambda x, causal: pool_mixer(x, 3, causal)), []
    if name == "depthwise_conv":
        w = _params(g, dtype, (c, 4), (c,))
        return (lambda x, causal: depthwise_conv_mixer(x, *w, causal)), w
    if name == "glu":
        w = _params(g, dtype, (2 * inner, c), (2 * inner,), (c, inner), (c,))
        return (lambda x, causal: glu_mixer(x, *w, causal)), w
    if name == "selective_scan":
        w = _params(
            g,
            dtype,
            (2 * inner, c),
            (2 * STATE, c),
            (HEADS, c),
            (HEADS,),
            (HEADS,),
            (HEADS,),
            (c, inner),
        )
        return (lambda x, causal: selective_scan_mixer(x, *w, HEAD_DIM, causal, scale)), w
    if name == "ffn":
        w = _params(g, dtype, (16, c), (16,), (c, 16), (c,))
        return (lambda x, causal: ffn(x, *w)), w
    raise KeyError(name)


MIXERS = [
    "softmax_attention",
    "sliding_window",
    "linear_attention",
    "pool",
    "depthwise_conv",
    "glu",
    "selective_scan",
]
ALL = MIXERS + ["ffn"]
LINEAR_TIME = ["sliding_window", "linear_attention", "selective_scan"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("cut", [0, 4, 9])
def test_causal_output_ignores_future_tokens(name: str, cut: int) -> None:
    g = torch.Generator().manual_seed(0)
    fn, _ = build(name, 8, g, torch.float64)
    x = torch.randn(2, 13, 8, generator=g, dtype=torch.float64)
    changed = x.clone()
    changed[:, cut + 1 :] = torch.randn(2, 13 - cut - 1, 8, generator=g, dtype=torch.float64)
    before, after = fn(x, True), fn(changed, True)
    torch.testing.assert_close(after[:, : cut + 1], before[:, : cut + 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", MIXERS)
def test_bidirectional_output_sees_the_next_token(name: str) -> None:
    g = torch.Generator().manual_seed(1)
    fn, _ = build(name, 8, g, torch.float64)
    x = torch.randn(2, 13, 8, generator=g, dtype=torch.float64)
    changed = x.clone()
    changed[:, 6] += 1.0
    diff = (fn(changed, False) - fn(x, False))[:, 5].abs().max()
    assert diff > 1e-6


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_input_and_weights(name: str, causal: bool) -> None:
    g = torch.Generator().manual_seed(2)
    fn, weights = build(name, 8, g, torch.float32)
    x = torch.randn(2, 11, 8, generator=g, requires_grad=True)
    for w in weights:
        w.requires_grad_(True)
    y = fn(x, causal)
    assert y.shape == x.shape and y.dtype == x.dtype
    (y * torch.randn(y.shape, generator=g)).sum().backward()
    for t in [x, *weights]:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


class _MaxNumel(TorchDispatchMode):
    """Records the largest number of elements of any op output."""

    def __init__(self) -> None:
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("name", LINEAR_TIME)
def test_memory_grows_linearly_with_length(name: str, causal: bool) -> None:
    g = torch.Generator().manual_seed(3)
    fn, _ = build(name, 8, g, torch.float32, scale=32)
    peaks = {}
    for seq_len in (1024, 2048):
        x = torch.randn(1, seq_len, 8, generator=g)
        with torch.no_grad(), _MaxNumel() as rec:
            fn(x, causal)
        peaks[seq_len] = rec.max_numel
        assert rec.max_numel < HEADS * seq_len * seq_len  # no T x T per (batch * head)
    assert peaks[2048] <= 2.1 * peaks[1024], peaks
