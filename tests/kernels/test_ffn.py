"""FFN against manual math (erf GELU)."""

from __future__ import annotations

import math

import pytest
import torch

from nas.kernels import ffn


@pytest.mark.parametrize("bias", [True, False])
def test_ffn_matches_manual_math(bias: bool) -> None:
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x, w1, w2 = r(2, 5, 6), r(16, 6), r(6, 16)
    b1, b2 = (r(16), r(6)) if bias else (None, None)
    h = x @ w1.T + (0.0 if b1 is None else b1)
    h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
    want = h @ w2.T + (0.0 if b2 is None else b2)
    torch.testing.assert_close(ffn(x, w1, b1, w2, b2), want, rtol=1e-12, atol=1e-12)
