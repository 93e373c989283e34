"""Vectorized prediction: equal to a per-arch loop, fast, stored as plain JSON."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from conftest import make_tiny_space
from nas.core.errors import ArchError
from nas.search.baselines import hat_features
from nas.search.predictor import (
    MIN_ENTRY,
    MIN_SCALE,
    ArchEncoder,
    KernelTable,
    LatencyPredictor,
    LinearModel,
    mixer_options,
)
from nas.search_space import Arch, LayerArch, SearchSpace


def _random_predictor(space: SearchSpace, seed: int = 0) -> LatencyPredictor:
    """A predictor with a random (but valid) kernel table, as a profile would hold."""
    rng = np.random.default_rng(seed)
    n_d, n_m = len(space.d_model), len(mixer_options(space))
    mixer_ms = np.concatenate([rng.uniform(0.1, 2.0, (n_d, n_m)), np.zeros((n_d, 1))], axis=1)
    for j, key in enumerate(mixer_options(space)):
        if key[0] == "skip":
            mixer_ms[:, j] = 0.0
    ffn_ms = np.concatenate(
        [rng.uniform(0.1, 2.0, (n_d, len(space.ffn))), np.zeros((n_d, 1))], axis=1
    )
    ffn_ms[:, [i for i, f in enumerate(space.ffn) if f == 0]] = 0.0
    table = KernelTable(rng.uniform(0.05, 0.1, n_d), rng.uniform(0.1, 0.3, n_d), mixer_ms, ffn_ms)
    return LatencyPredictor(ArchEncoder.for_space(space), table)


def _loop_kernel_sum(space: SearchSpace, pred: LatencyPredictor, arch: Arch) -> float:
    """The kernel sum written as the plainest possible loop over layers."""
    t, options = pred.table, mixer_options(space)
    i = space.d_model.index(arch.d_model)
    total = t.embed_ms[i] + t.exit_ms[i]
    for layer in arch.layers:
        total += t.mixer_ms[i, options.index((layer.mixer, layer.heads, layer.window))]
        total += t.ffn_ms[i, space.ffn.index(layer.ffn)]
    return total


@pytest.fixture
def fitted() -> tuple[SearchSpace, LatencyPredictor]:
    space = make_tiny_space()
    pred = _random_predictor(space)
    archs = space.sample_many(60, seed=1)
    rng = np.random.default_rng(2)
    # Whole-model "measurements": the kernel sum, scaled, plus a per-layer overhead.
    measured = 1.1 * pred.kernel_sum(archs) + 0.05 * np.array([a.depth for a in archs])
    measured *= rng.uniform(0.98, 1.02, len(archs))
    pred.fit_correction(archs, measured)
    return space, pred


def test_vectorized_prediction_equals_a_per_arch_loop(fitted):
    space, pred = fitted
    archs = [space.smallest(), space.largest(), *space.sample_many(200, seed=5)]
    batch = pred.predict(archs)
    assert batch.shape == (len(archs),)
    np.testing.assert_allclose(batch, [pred.predict_one(a) for a in archs], rtol=1e-12)
    np.testing.assert_allclose(
        pred.kernel_sum(archs), [_loop_kernel_sum(space, pred, a) for a in archs], rtol=1e-12
    )


def test_correction_learns_what_the_kernel_sum_misses(fitted):
    space, pred = fitted
    archs = space.sample_many(100, seed=9)
    truth = 1.1 * pred.kernel_sum(archs) + 0.05 * np.array([a.depth for a in archs])
    ape_ours = np.abs(pred.predict(archs) - truth) / truth
    ape_sum = np.abs(pred.kernel_sum(archs) - truth) / truth
    assert ape_ours.mean() < 0.02 < ape_sum.mean()


def test_linear_model_recovers_an_exact_relation():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(1, 10, 50), rng.uniform(0, 3, 50), np.ones(50)])
    coef = np.array([2.0, 0.5, 1.0])
    model = LinearModel.fit(X, X @ coef, ["a", "b", "const"])
    np.testing.assert_allclose(model.coef, coef, rtol=1e-3)


def test_a_column_below_its_bound_is_pinned_there_and_the_rest_refitted():
    """A column the data pulls below its lower bound ends exactly at the bound, and the
    other columns equal an unbounded fit of what the pinned column leaves; columns fitted
    above their bounds are untouched."""
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(1, 10, 40), rng.uniform(0, 3, 40), np.ones(40)])
    y = X @ np.array([2.0, -0.5, 4.0])  # b's true coefficient is below the bound, -0.2
    free = LinearModel.fit(X, y, ["a", "b", "const"])
    assert free.coef[1] == pytest.approx(-0.5, rel=1e-3)
    lower = np.array([-np.inf, -0.2, -np.inf])
    pinned = LinearModel.fit(X, y, ["a", "b", "const"], lower=lower)
    assert pinned.coef[1] == pytest.approx(-0.2, abs=1e-12)
    rest = LinearModel.fit(X[:, [0, 2]], y - X[:, 1] * -0.2, ["a", "const"])
    # Same alphas would be needed for equality; an exact relation makes both exact fits.
    residual = X @ pinned.coef - y
    assert np.abs(residual).max() > 0  # the bound costs fit: the data wanted -0.5
    np.testing.assert_allclose(pinned.coef[[0, 2]], rest.coef, rtol=0.05)
    same = LinearModel.fit(X, y, ["a", "b", "const"], lower=np.array([0.0, -1.0, 0.0]))
    np.testing.assert_allclose(same.coef, free.coef, rtol=1e-12)


def test_the_correction_is_bounded_to_what_is_physical(fitted):
    """Per-layer and per-width overheads >= 0; each entry >= MIN_ENTRY, each family scale
    >= MIN_SCALE, so a prediction is at least half the kernel sum, even when the
    measurements say every layer is a saving and every op nearly free."""
    space, pred = fitted
    design = pred.design(space.sample_many(5, seed=0))
    bound = dict(zip(design.names, design.lower, strict=True))
    assert all(bound[n] == 0.0 for n in design.names if n.startswith("n_"))
    assert all(bound[n] == MIN_ENTRY for n in design.names if n.startswith("ms["))
    assert all(bound[n] == MIN_SCALE for n in design.names if n.endswith("_ms"))
    assert all(bound[n] == 0.0 for n in design.names if n[0] == "d" and n[1:].isdigit())
    assert all(np.isfinite(list(bound.values())))
    archs = space.sample_many(40, seed=3)
    depth = np.array([a.depth for a in archs])
    measured = pred.kernel_sum(archs) * 0.2 + 0.3 - 0.01 * depth
    pred.fit_correction(archs, np.maximum(measured, 0.01))
    coef = dict(zip(pred.correction.names, pred.correction.coef, strict=True))
    assert all(coef[n] >= bound[n] - 1e-12 for n in coef)
    assert min(pred.predict(archs) / pred.kernel_sum(archs)) >= 0.5 - 1e-9


def test_prediction_is_fast():
    space = SearchSpace.default()
    pred = _random_predictor(space)
    archs = space.sample_many(500, seed=0)
    pred.fit_correction(archs, pred.kernel_sum(archs) * 1.05 + 0.1)
    archs = space.sample_many(1_000, seed=1) * 10  # 10,000 archs
    best = min(_timed(pred.predict, archs) for _ in range(3))
    assert 10_000 / best >= 10_000, f"{10_000 / best:.0f} archs/s"


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def test_json_round_trip_predicts_the_same(fitted):
    space, pred = fitted
    again = LatencyPredictor.from_dict(json.loads(json.dumps(pred.to_dict())))
    archs = space.sample_many(50, seed=3)
    np.testing.assert_array_equal(again.predict(archs), pred.predict(archs))


def test_arch_outside_the_profiled_space_is_an_arch_error(fitted):
    _, pred = fitted
    with pytest.raises(ArchError, match="outside the profiled space"):
        pred.predict([Arch(999, (LayerArch("skip"),))])
    with pytest.raises(ArchError):
        pred.predict([Arch(16, (LayerArch("attention", heads=7, ffn=0),))])


def test_hat_features_have_one_row_per_arch_and_named_columns():
    space = make_tiny_space()
    archs = space.sample_many(7, seed=0)
    X, names = hat_features(space, archs)
    assert X.shape == (7, len(names))
    assert names[:2] == ["d_model", "depth"]
    np.testing.assert_array_equal(X[:, 1], [a.depth for a in archs])
    np.testing.assert_array_equal(
        X[:, 1], X[:, [names.index(f"n_{m}") for m in space.mixers]].sum(axis=1)
    )


def test_flops_for_the_baseline_are_fvcores_count():
    from nas.search.baselines import arch_flops_many
    from nas.search.flops import arch_flops

    space = make_tiny_space()
    archs = [space.smallest(), space.largest(), *space.sample_many(3, seed=2)]
    assert arch_flops_many(space, archs, 1, 16) == [arch_flops(space, a, 1, 16) for a in archs]


def test_correction_learns_a_mismeasured_kernel_entry():
    space = make_tiny_space()
    pred = _random_predictor(space, seed=4)
    # The truth: one op (attention, d=16, 2 heads) really costs 1.5x its table entry.
    truth_table = KernelTable(**{k: v.copy() for k, v in vars(pred.table).items()})
    j = mixer_options(space).index(("attention", 2, None))
    truth_table.mixer_ms[0, j] *= 1.5
    truth = LatencyPredictor(pred.encoder, truth_table)
    fit_archs = space.sample_many(150, seed=6)
    pred.fit_correction(fit_archs, truth.kernel_sum(fit_archs))
    archs = [
        a
        for a in space.sample_many(400, seed=7)
        if any(la.mixer == "attention" and la.heads == 2 for la in a.layers) and a.d_model == 16
    ]
    true_ms = truth.kernel_sum(archs)
    ours = np.abs(pred.predict(archs) - true_ms) / true_ms
    plain = np.abs(pred.kernel_sum(archs) - true_ms) / true_ms
    assert ours.mean() < 0.3 * plain.mean()
