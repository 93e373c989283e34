"""fvcore counts (with our handles) agree with each kernel's analytic FLOP formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.kernels import (
    depthwise_conv_flops,
    depthwise_conv_mixer,
    ffn,
    ffn_flops,
    glu_flops,
    glu_mixer,
    linear_attention,
    linear_attention_flops,
    pool_flops,
    pool_mixer,
    selective_scan_flops,
    selective_scan_mixer,
    sliding_window_attention,
    sliding_window_flops,
    softmax_attention,
    softmax_attention_flops,
)
from nas.search.flops import count_flops, count_flops_fn, flop_analysis

# (batch, seq_len, d_model, heads, head_dim, window / chunk / pool / taps, state)
SHAPES = [(2, 13, 16, 2, 8, 4, 4), (1, 40, 24, 3, 8, 16, 8), (1, 5, 8, 1, 8, 8, 2)]


def _r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def _case(name: str, shape: tuple[int, ...], causal: bool) -> tuple[int, int]:
    """(fvcore count, analytic count) for kernel `name` at `shape`."""
    b, t, c, h, hd, k, n = shape
    e = h * hd
    x = _r(b, t, c)
    attn = (_r(3 * e, c), _r(3 * e), _r(c, e), _r(c))
    if name == "softmax_attention":
        got = count_flops_fn(softmax_attention, x, *attn, hd, causal)
        return got, softmax_attention_flops(b, t, c, h, hd)
    if name == "sliding_window":
        got = count_flops_fn(sliding_window_attention, x, *attn, hd, k, causal)
        return got, sliding_window_flops(b, t, c, h, hd, k, causal)
    if name == "linear_attention":
        got = count_flops_fn(linear_attention, x, *attn, hd, causal, chunk_size=k)
        return got, linear_attention_flops(b, t, c, h, hd, causal, k)
    if name == "pool":
        return count_flops_fn(pool_mixer, x, k, causal), pool_flops(b, t, c, k)
    if name == "depthwise_conv":
        got = count_flops_fn(depthwise_conv_mixer, x, _r(c, k), _r(c), causal)
        return got, depthwise_conv_flops(b, t, c, k)
    if name == "glu":
        got = count_flops_fn(glu_mixer, x, _r(2 * e, c), _r(2 * e), _r(c, e), None, causal)
        return got, glu_flops(b, t, c, e)
    if name == "selective_scan":
        weights = (_r(2 * e, c), _r(2 * n, c), _r(h, c), _r(h), _r(h), _r(h), _r(c, e))
        got = count_flops_fn(selective_scan_mixer, x, *weights, hd, causal, chunk_size=k)
        return got, selective_scan_flops(b, t, c, h, hd, n, causal, k)
    if name == "ffn":
        got = count_flops_fn(ffn, x, _r(4 * c, c), _r(4 * c), _r(c, 4 * c), None)
        return got, ffn_flops(b, t, c, 4 * c)
    raise KeyError(name)


KERNELS = [
    "softmax_attention",
    "sliding_window",
    "linear_attention",
    "pool",
    "depthwise_conv",
    "glu",
    "selective_scan",
    "ffn",
]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", KERNELS)
def test_fvcore_count_matches_analytic(name: str, shape: tuple[int, ...], causal: bool) -> None:
    got, want = _case(name, shape, causal)
    assert want > 0
    assert got == pytest.approx(want, rel=0.01)


def test_count_flops_sums_over_a_module() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w_qkv = nn.Parameter(_r(48, 16))
            self.w_out = nn.Parameter(_r(16, 16))
            self.w1, self.w2 = nn.Parameter(_r(32, 16)), nn.Parameter(_r(16, 32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + softmax_attention(x, self.w_qkv, None, self.w_out, None, 8, True)
            return x + ffn(x, self.w1, None, self.w2, None)

    want = softmax_attention_flops(2, 10, 16, 2, 8) + ffn_flops(2, 10, 16, 32)
    assert count_flops(Block(), _r(2, 10, 16)) == want


def test_matmul_handle_broadcasts_both_operands() -> None:
    class Product(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, None] @ torch.ones(3, 5, 7, 2)  # (3, 1, 7) @ (3, 5, 7, 2)

    # (B=3, 1, 7) broadcasts to (3, 5, 1, 7): 3 * 5 * 1 * 7 * 2 multiply-adds.
    assert count_flops(Product(), _r(3, 1, 7)) == 3 * 5 * 1 * 7 * 2


def test_sdpa_handle_counts_both_matmuls_and_ignores_the_mask() -> None:
    class Attend(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            k, v = torch.ones(2, 3, 6, 8), torch.ones(2, 3, 6, 5)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(4, 6) > 0)

    analysis = flop_analysis(Attend(), (_r(2, 3, 4, 8),))
    assert analysis.total() == 2 * 3 * 4 * 6 * (8 + 5)
    assert "scaled_dot_product_attention" in analysis.by_operator()


def test_avg_pool_handle_counts_one_add_per_window_element() -> None:
    class Pool(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.avg_pool1d(x, 3, stride=1)

    assert count_flops(Pool(), _r(2, 4, 10)) == 2 * 4 * 8 * 3
