"""Features of the two latency baselines the accuracy report compares the predictor with.

A linear fit on fvcore FLOPs and a linear fit on HAT-style architecture features: each is
a `LinearModel` (predictor.py) fitted on these rows, so the report compares like with like.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nas.search_space import Arch, SearchSpace


def hat_features(space: SearchSpace, archs: Sequence[Arch]) -> tuple[np.ndarray, list[str]]:
    """HAT-style architecture features (widths, depth, heads, mixer counts), plus a 1.

    HAT predicts from embedding dim, layer count, average hidden dim and average heads;
    ours adds totals and a count per mixer, as a strong linear baseline should.
    """
    names = [
        "d_model",
        "depth",
        "sum_heads",
        "mean_heads",
        "sum_ffn",
        "mean_ffn",
        "mean_window",
        *(f"n_{m}" for m in space.mixers),
        "const",
    ]
    rows = []
    for arch in archs:
        heads = [la.heads or 0 for la in arch.layers]
        ffn = [la.ffn for la in arch.layers]
        windows = [la.window or 0 for la in arch.layers]
        counts = [sum(la.mixer == m for la in arch.layers) for m in space.mixers]
        rows.append(
            [
                arch.d_model,
                arch.depth,
                sum(heads),
                np.mean(heads),
                sum(ffn),
                np.mean(ffn),
                np.mean(windows),
                *counts,
                1.0,
            ]
        )
    return np.asarray(rows, dtype=np.float64).reshape(len(archs), len(names)), names


def flops_features(flops: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """[FLOPs, 1] rows for the FLOPs-linear baseline (FLOPs in units of 1e6 for conditioning)."""
    f = np.asarray(flops, dtype=np.float64) / 1e6
    return np.stack([f, np.ones_like(f)], axis=1), ["mflops", "const"]


def arch_flops_many(
    space: SearchSpace, archs: Sequence[Arch], batch: int, seq_len: int
) -> list[int]:
    """fvcore's FLOP count (one multiply-add = one FLOP) of each arch at (batch, seq_len).

    Taken from the closed form `analytic_flops`, which equals fvcore's trace-based
    `arch_flops` by test (tests/search/test_arch_flops.py) and costs microseconds instead
    of the ~0.5 s of a trace per arch.
    """
    from nas.search.flops import analytic_flops

    return [int(analytic_flops(space, a, batch, seq_len)) for a in archs]
