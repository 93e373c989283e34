"""Verification: statuses against hand-computed margins, the winner rule, and a real run."""

from __future__ import annotations

import json

import pytest

from conftest import make_tiny_space
from nas.core.errors import NasError
from nas.search.fingerprint import Workload
from nas.search.measure import MeasureConfig, Measurement, random_model
from nas.search.verify import (
    BORDERLINE,
    FITS,
    OVER,
    VerifyError,
    classify,
    judge,
    pick_winner,
    verify,
)
from nas.search_space import Arch, LayerArch

QUICK = MeasureConfig(runs=3, warmup_iters=1, warmup_s=0.0, max_attempts=1, max_waits=0)
WORKLOAD = Workload(seq_len=8, threads=1)


def _m(ms: float, contended: bool = False) -> Measurement:
    """A measurement whose median is `ms`, as one pass of verification would return."""
    return Measurement(
        median_ms=ms,
        iqr_ms=0.01 * ms,
        runs=30,
        inner=1,
        attempts=1,
        noisy=False,
        contended=contended,
        foreign_cores=0.0,
        slowdown=0.0,
        warmup_iters=10,
        warmup_s=0.5,
    )


def _arch(ffn: int) -> Arch:
    return Arch(16, (LayerArch("attention", 1, None, ffn),))


# ------------------------------------------------------------------ classification
@pytest.mark.parametrize(
    "median, spread, budget, noise, expected",
    [
        # margin = max(spread, noise) * median
        (9.0, 0.02, 10.0, 0.08, FITS),  # margin 0.72 ms; 1.0 ms under
        (9.5, 0.02, 10.0, 0.08, BORDERLINE),  # margin 0.76 ms; 0.5 ms under
        (10.5, 0.02, 10.0, 0.08, BORDERLINE),  # margin 0.84 ms; 0.5 ms over
        (11.0, 0.02, 10.0, 0.08, OVER),  # margin 0.88 ms; 1.0 ms over
        (9.0, 0.15, 10.0, 0.08, BORDERLINE),  # wide passes: margin 1.35 ms; 1.0 ms under
        (8.0, 0.15, 10.0, 0.08, FITS),  # margin 1.2 ms; 2.0 ms under
        (10.0, 0.0, 10.0, 0.0, BORDERLINE),  # exactly on the budget
        (9.0, 0.0, 10.0, 0.0, FITS),
    ],
)
def test_classify_against_hand_computed_margins(median, spread, budget, noise, expected):
    assert classify(median, spread, budget, noise) == expected


def test_judge_takes_the_median_and_the_spread_of_the_passes():
    # Passes 9.0, 10.0, 9.5: median 9.5, spread (10 - 9) / 9.5 = 10.5%.
    v = judge(_arch(32), 9.2, [_m(9.0), _m(10.0), _m(9.5)], budget_ms=12.0, noise=0.08)
    assert v.passes_ms == [9.0, 10.0, 9.5]
    assert v.median_ms == pytest.approx(9.5)
    assert v.spread == pytest.approx(1.0 / 9.5)
    assert v.margin == pytest.approx(1.0 / 9.5)
    # 12 - 9.5 = 2.5 ms > margin 1.0 ms -> fits; predicted 9.2 vs 9.5 -> -3.16%.
    assert v.status == FITS
    assert v.error_pct == pytest.approx((9.2 - 9.5) / 9.5 * 100)
    # Two passes 9.0 and 11.0 around a 10 ms budget: median 10, borderline, not a fit.
    v = judge(_arch(32), 9.0, [_m(9.0), _m(11.0, contended=True)], budget_ms=10.0)
    assert v.median_ms == pytest.approx(10.0) and v.spread == pytest.approx(0.2)
    assert v.status == BORDERLINE and v.contended == [False, True]
    data = v.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["arch_id"] == _arch(32).id and data["status"] == BORDERLINE


# ------------------------------------------------------------------ the winner
def _verified(arch: Arch, passes: list[float], budget: float = 10.0):
    return judge(arch, passes[0], [_m(t) for t in passes], budget, noise=0.05)


def test_the_best_candidate_that_fits_wins():
    best, second, third = _arch(64), _arch(32), _arch(0)
    checks = [
        _verified(third, [7.0, 7.1]),  # fits
        _verified(best, [12.0, 12.2]),  # over
        _verified(second, [8.0, 8.2]),  # fits
    ]
    pick = pick_winner([best, second, third], checks)
    assert pick is not None
    assert (pick.index, pick.status) == (1, FITS) and pick.within_budget
    index, status, verification = pick  # a plain tuple as well
    assert verification.arch == second


def test_a_borderline_candidate_is_returned_only_flagged_and_only_if_none_fits():
    best, second = _arch(64), _arch(32)
    checks = [_verified(best, [9.8, 9.9]), _verified(second, [12.0, 12.2])]  # borderline, over
    pick = pick_winner([best, second], checks)
    assert pick is not None and pick.index == 0
    assert pick.status == BORDERLINE and not pick.within_budget
    # With a candidate that fits, a better borderline one does not win.
    checks.append(_verified(_arch(0), [7.0, 7.0]))
    pick = pick_winner([best, second, _arch(0)], checks)
    assert (pick.index, pick.status) == (2, FITS)


def test_nothing_wins_when_every_candidate_is_over():
    checks = [_verified(_arch(64), [12.0, 12.0]), _verified(_arch(32), [13.0, 13.5])]
    assert pick_winner([_arch(64), _arch(32)], checks) is None
    assert pick_winner([_arch(0)], checks) is None  # unmeasured candidates never win


# ------------------------------------------------------------------ real measurements
def test_verify_measures_real_archs_in_interleaved_passes(one_thread):
    space = make_tiny_space(d_model=(16,), exits=(1, 2))
    archs = [_arch(0), _arch(64)]
    steps: list[str] = []
    checks = verify(
        space, archs, [0.05, 0.08], 1000.0, WORKLOAD, QUICK, passes=2, step=steps.append
    )
    assert [v.arch for v in checks] == archs
    for v, pred in zip(checks, [0.05, 0.08], strict=True):
        assert len(v.passes_ms) == 2 and all(t > 0 for t in v.passes_ms)
        assert v.predicted_ms == pred
        assert v.median_ms == pytest.approx(sum(v.passes_ms) / 2)
        assert v.spread == pytest.approx(abs(v.passes_ms[0] - v.passes_ms[1]) / v.median_ms)
        assert v.status == FITS  # a tiny model against a 1 s budget
    # Pass 1 in order, pass 2 in reverse (retries of disturbed ones may follow a pass).
    first = [s for s in steps if s.startswith("verify pass 1:")]
    second = [s for s in steps if s.startswith("verify pass 2:")]
    assert first == [f"verify pass 1: {a.id}" for a in archs]
    assert second == [f"verify pass 2: {a.id}" for a in reversed(archs)]
    assert steps.index(first[-1]) < steps.index(second[0])
    # Far below any real forward pass: every candidate is over.
    tiny = verify(space, archs[:1], [0.05], 1e-6, WORKLOAD, QUICK, passes=3)
    v = tiny[0]
    assert len(v.passes_ms) == 3 and v.median_ms == pytest.approx(sorted(v.passes_ms)[1])
    # Over, unless one pass ran more than twice the median (a busy moment): a spread that
    # wide covers the budget, and then the candidate is honestly borderline.
    assert v.status == (OVER if v.spread < 0.99 else BORDERLINE)
    pick = pick_winner(archs, tiny)
    assert pick is None if v.status == OVER else not pick.within_budget


def test_verify_measures_given_models(one_thread):
    space = make_tiny_space(d_model=(16,), exits=(1, 2))
    archs = [_arch(32)]
    model = random_model(space, archs[0], seed=5).train()  # as a fine-tuned model might be
    checks = verify(space, archs, [0.05], 1000.0, WORKLOAD, QUICK, models=[model])
    assert len(checks[0].passes_ms) == 2 and checks[0].status == FITS
    assert not model.training  # measured in eval mode


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"passes": 1}, "at least 2 passes"),
        ({"predicted_ms": [1.0, 2.0]}, "one prediction"),
        ({"budget_ms": 0.0}, "budget must be positive"),
    ],
)
def test_bad_requests_are_nas_errors(kwargs, words):
    space = make_tiny_space(d_model=(16,), exits=(1, 2))
    call = {
        "space": space,
        "archs": [_arch(0)],
        "predicted_ms": [1.0],
        "budget_ms": 10.0,
        "workload": WORKLOAD,
        "config": QUICK,
        **kwargs,
    }
    with pytest.raises(VerifyError, match=words) as info:
        verify(**call)
    assert isinstance(info.value, NasError)
