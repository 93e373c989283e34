"""Selective scan against a sequential loop over t, and the mixer around it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.kernels import selective_scan, selective_scan_mixer

BATCH, HEADS, P, N, C = 2, 3, 4, 5, 10
MODES = pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])


def loop_scan(x, dt, A, Bm, Cm):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t (outer) B_t;  y_t = h_t C_t, one t at a time."""
    batch, seq_len, heads, p = x.shape
    h = torch.zeros(batch, heads, p, Bm.shape[-1], dtype=x.dtype)
    ys = []
    for t in range(seq_len):
        decay = torch.exp(dt[:, t] * A)  # (B, H)
        inject = dt[:, t, :, None, None] * x[:, t, :, :, None] * Bm[:, t, None, None, :]
        h = decay[:, :, None, None] * h + inject  # (B, H, P, N)
        ys.append((h * Cm[:, t, None, None, :]).sum(-1))  # (B, H, P)
    return torch.stack(ys, dim=1)  # (B, T, H, P)


def _scan_inputs(seq_len: int, seed: int, decay_scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x = r(BATCH, seq_len, HEADS, P)
    dt = F.softplus(r(BATCH, seq_len, HEADS))
    A = -torch.exp(r(HEADS)) * decay_scale
    return x, dt, A, r(BATCH, seq_len, N), r(BATCH, seq_len, N)


@pytest.mark.parametrize("seq_len", [1, 3, 4, 5, 8, 13, 16])
@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_selective_scan_matches_loop(seq_len: int, chunk_size: int) -> None:
    inputs = _scan_inputs(seq_len, seed=seq_len)
    got = selective_scan(*inputs, chunk_size=chunk_size)
    assert got.shape == inputs[0].shape
    torch.testing.assert_close(got, loop_scan(*inputs), rtol=1e-10, atol=1e-10)


def test_selective_scan_strong_decay_stays_finite() -> None:
    # Decays of exp(-1e3) per token: the masked (s > t) exponents are huge and positive,
    # so this fails loudly if they reach exp before the mask.
    x, dt, A, Bm, Cm = _scan_inputs(20, seed=7, decay_scale=1e3)
    for u in (x, dt, Bm, Cm):
        u.requires_grad_(True)
    got = selective_scan(x, dt, A, Bm, Cm, chunk_size=8)
    torch.testing.assert_close(got, loop_scan(x, dt, A, Bm, Cm), rtol=1e-10, atol=1e-10)
    got.sum().backward()
    for u in (x, dt, Bm, Cm):
        assert torch.isfinite(u.grad).all()


def naive_mixer(x, w_xz, w_bc, w_dt, dt_bias, a_log, d_skip, w_out, head_dim, causal):
    batch, seq_len, _ = x.shape
    inner, state = w_xz.shape[0] // 2, w_bc.shape[0] // 2
    heads = inner // head_dim
    xs = (x @ w_xz[:inner].T).reshape(batch, seq_len, heads, head_dim)
    z = x @ w_xz[inner:].T
    Bm, Cm = x @ w_bc[:state].T, x @ w_bc[state:].T
    dt = F.softplus(x @ w_dt.T + dt_bias)
    A = -torch.exp(a_log)
    y = loop_scan(xs, dt, A, Bm, Cm)
    if not causal:
        flip = [u.flip(1) for u in (xs, dt)]
        y = y + loop_scan(flip[0], flip[1], A, Bm.flip(1), Cm.flip(1)).flip(1)
    y = y + d_skip[:, None] * xs
    y = y.reshape(batch, seq_len, inner) * (z * torch.sigmoid(z))
    return y @ w_out.T


@MODES
@pytest.mark.parametrize("seq_len", [1, 5, 8, 13])
def test_selective_scan_mixer_matches_naive(seq_len: int, causal: bool) -> None:
    g = torch.Generator().manual_seed(11)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    inner = HEADS * P
    weights = {
        "w_xz": r(2 * inner, C) / C**0.5,
        "w_bc": r(2 * N, C) / C**0.5,
        "w_dt": r(HEADS, C) / C**0.5,
        "dt_bias": r(HEADS),
        "a_log": r(HEADS),
        "d_skip": r(HEADS),
        "w_out": r(C, inner) / inner**0.5,
    }
    x = r(BATCH, seq_len, C)
    got = selective_scan_mixer(x, **weights, head_dim=P, causal=causal, chunk_size=4)
    want = naive_mixer(x, **weights, head_dim=P, causal=causal)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_selective_scan_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(*_scan_inputs(4, seed=0), chunk_size=0)
    x = torch.zeros(1, 4, C)
    with pytest.raises(ValueError, match="w_xz"):
        selective_scan_mixer(
            x,
            torch.zeros(10, C),
            torch.zeros(2 * N, C),
            torch.zeros(HEADS, C),
            torch.zeros(HEADS),
            torch.zeros(HEADS),
            torch.zeros(HEADS),
            torch.zeros(C, 5),
            head_dim=P,
            causal=True,
        )
