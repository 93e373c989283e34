"""Token-shift GLU against a per-token loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.kernels import glu_mixer


def loop_glu(x, w_in, b_in, w_out, b_out, causal):
    seq_len = x.shape[1]
    inner = w_in.shape[0] // 2
    w_u, w_g = w_in[:inner], w_in[inner:]
    b_u, b_g = (0.0, 0.0) if b_in is None else (b_in[:inner], b_in[inner:])
    zero = torch.zeros_like(x[:, 0])
    outs = []
    for t in range(seq_len):
        prev = x[:, t - 1] if t > 0 else zero
        nxt = x[:, t + 1] if t + 1 < seq_len else zero
        shifted = prev if causal else (prev + nxt) / 2
        u = x[:, t] @ w_u.T + b_u
        g = shifted @ w_g.T + b_g
        y = (u * F.silu(g)) @ w_out.T
        outs.append(y if b_out is None else y + b_out)
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("seq_len", [1, 2, 7])
@pytest.mark.parametrize("bias", [True, False])
def test_glu_matches_loop(seq_len: int, causal: bool, bias: bool) -> None:
    g = torch.Generator().manual_seed(seq_len)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x = r(2, seq_len, 6)
    w = {
        "w_in": r(10, 6),
        "b_in": r(10) if bias else None,
        "w_out": r(6, 5),
        "b_out": r(6) if bias else None,
    }
    got = glu_mixer(x, **w, causal=causal)
    assert got.shape == x.shape
    torch.testing.assert_close(got, loop_glu(x, **w, causal=causal), rtol=1e-12, atol=1e-12)


def test_odd_w_in_is_rejected() -> None:
    with pytest.raises(ValueError, match="2E rows"):
        glu_mixer(torch.zeros(1, 3, 4), torch.zeros(5, 4), None, torch.zeros(4, 2), None, True)
