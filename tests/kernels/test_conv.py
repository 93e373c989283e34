"""Depthwise convolution mixer against a direct loop over taps."""

from __future__ import annotations

import pytest
import torch

from nas.kernels import depthwise_conv_mixer


def loop_conv(x, weight, bias, causal):
    seq_len = x.shape[1]
    taps = weight.shape[1]
    left = taps - 1 if causal else (taps - 1) // 2
    out = torch.zeros_like(x)
    for t in range(seq_len):
        for j in range(taps):
            s = t - left + j  # tap j reads token s (cross-correlation)
            if 0 <= s < seq_len:
                out[:, t] += weight[:, j] * x[:, s]
    return out if bias is None else out + bias


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("seq_len", [1, 3, 8])
@pytest.mark.parametrize("taps", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_conv_matches_loop(seq_len: int, taps: int, causal: bool, bias: bool) -> None:
    g = torch.Generator().manual_seed(seq_len * 10 + taps)
    x = torch.randn(2, seq_len, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(5, taps, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64) if bias else None
    got = depthwise_conv_mixer(x, weight, b, causal)
    assert got.shape == x.shape
    torch.testing.assert_close(got, loop_conv(x, weight, b, causal), rtol=1e-12, atol=1e-12)


def test_weight_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="weight must be"):
        depthwise_conv_mixer(torch.zeros(1, 4, 3), torch.zeros(2, 3), None, causal=True)
