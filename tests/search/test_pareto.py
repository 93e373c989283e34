"""`pareto_front` against a brute-force O(n^2) definition of dominance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nas.search.pareto import pareto_front


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def brute_force_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices kept by the definition: dominated by none, and no equal point earlier."""
    keep = set()
    for i, p in enumerate(points):
        dominated = any(_dominates(q, p) for q in points)
        duplicate = any(points[j] == p for j in range(i))
        if not dominated and not duplicate:
            keep.add(i)
    return keep


def _check(points: list[tuple[float, float]]) -> None:
    front = pareto_front(points)
    assert set(front) == brute_force_front(points)
    assert len(front) == len(set(front))
    latencies = [points[i][1] for i in front]
    losses = [points[i][0] for i in front]
    assert latencies == sorted(latencies)
    assert all(a > b for a, b in zip(losses[:-1], losses[1:], strict=True))  # less loss, more ms


@pytest.mark.parametrize("seed", range(20))
def test_random_continuous_points(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    points = [(float(a), float(b)) for a, b in rng.random((n, 2))]
    _check(points)


@pytest.mark.parametrize("seed", range(30))
def test_random_points_on_a_coarse_grid_have_ties_and_duplicates(seed):
    # Values from {0..4}: many equal points and many ties in one coordinate only.
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 40))
    points = [(float(a), float(b)) for a, b in rng.integers(0, 5, size=(n, 2))]
    _check(points)


def test_equal_points_keep_the_first_index():
    points = [(2.0, 5.0), (1.0, 3.0), (1.0, 3.0), (2.0, 5.0), (1.0, 3.0)]
    assert pareto_front(points) == [1]


def test_tie_in_latency_keeps_only_the_lower_loss():
    assert pareto_front([(3.0, 1.0), (2.0, 1.0), (1.0, 2.0)]) == [1, 2]


def test_tie_in_loss_keeps_only_the_lower_latency():
    assert pareto_front([(1.0, 4.0), (1.0, 2.0), (0.5, 9.0)]) == [1, 2]


def test_empty_and_single():
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_infinite_values_are_ordered_like_any_other():
    points = [(math.inf, 1.0), (math.inf, 2.0), (5.0, 3.0), (5.0, math.inf)]
    assert pareto_front(points) == [0, 2]
    assert set(pareto_front(points)) == brute_force_front(points)


def test_nan_raises():
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([(1.0, 2.0), (math.nan, 1.0)])
