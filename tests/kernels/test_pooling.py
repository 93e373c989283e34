"""Pool mixer against a direct loop over windows."""

from __future__ import annotations

import pytest
import torch

from nas.kernels import pool_mixer


def loop_pool(x: torch.Tensor, pool_size: int, causal: bool) -> torch.Tensor:
    seq_len = x.shape[1]
    left = pool_size - 1 if causal else pool_size // 2
    right = 0 if causal else pool_size - 1 - pool_size // 2
    out = torch.empty_like(x)
    for t in range(seq_len):
        lo, hi = max(0, t - left), min(seq_len - 1, t + right)
        out[:, t] = x[:, lo : hi + 1].mean(dim=1) - x[:, t]
    return out


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("seq_len", [1, 2, 5, 9])
@pytest.mark.parametrize("pool_size", [1, 2, 3, 4, 7, 12])
def test_pool_mixer_matches_loop(seq_len: int, pool_size: int, causal: bool) -> None:
    g = torch.Generator().manual_seed(seq_len * 100 + pool_size)
    x = torch.randn(2, seq_len, 6, generator=g, dtype=torch.float64)
    got = pool_mixer(x, pool_size, causal)
    assert got.shape == x.shape
    torch.testing.assert_close(got, loop_pool(x, pool_size, causal), rtol=1e-12, atol=1e-12)


def test_even_window_puts_extra_token_on_the_left() -> None:
    x = torch.zeros(1, 5, 1, dtype=torch.float64)
    x[0, 1, 0] = 4.0  # seen from t = 2 (window t-2..t+1) but not from t = 0 (0..1 is 0, 1)
    y = pool_mixer(x, 4, causal=False)
    assert y[0, 2, 0] == pytest.approx(4.0 / 4)  # window 0..3, 4 tokens
    assert y[0, 3, 0] == pytest.approx(4.0 / 4)  # window 1..4
    assert y[0, 4, 0] == pytest.approx(0.0)  # window 2..4: token 1 out of reach


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        pool_mixer(torch.zeros(1, 3, 2), 0, causal=True)
