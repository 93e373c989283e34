"""Budgets as users write them, and archs spelled as Optuna parameters and read back."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from conftest import make_tiny_space
from nas.search.budget import parse_budget
from nas.search.encoding import decode, distributions, encode
from nas.search_space import BudgetError, SearchSpace


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("10ms", 10.0),
        ("2.5ms", 2.5),
        ("500us", 0.5),
        ("0.01s", 10.0),
        ("10 ms", 10.0),
        (".5ms", 0.5),
        ("7µs", 0.007),
    ],
)
def test_budget_forms(text, ms):
    assert parse_budget(text) == pytest.approx(ms)


@pytest.mark.parametrize(
    "text", ["10", "ms", "10 sec", "-1ms", "0ms", "10msx", "1e3ms", "ten ms", "", "10 m s"]
)
def test_bad_budgets_are_refused_with_the_accepted_forms(text):
    with pytest.raises(BudgetError, match="e.g. 10ms, 2.5ms, 500us or 0.01s"):
        parse_budget(text)


@pytest.mark.parametrize(
    "space", [make_tiny_space(), SearchSpace.default()], ids=["tiny", "default"]
)
def test_encode_decode_round_trip(space):
    archs = [space.smallest(), space.largest(), *space.sample_many(300, seed=3)]
    dists = distributions(space)
    for arch in archs:
        params = encode(space, arch)
        assert set(params) == set(dists)
        for name, value in params.items():  # every value is inside its distribution
            assert dists[name]._contains(dists[name].to_internal_repr(value))
        assert decode(space, params) == arch


def test_decode_ignores_what_the_arch_does_not_use():
    space = make_tiny_space()
    rng = np.random.default_rng(0)
    dists = distributions(space)
    for arch in space.sample_many(100, seed=5):
        params = encode(space, arch)
        # Redraw every parameter the arch does not read: past its depth, and heads or
        # windows its mixers lack. The arch must not change.
        for name, dist in dists.items():
            slot = name.rsplit("_", 1)[-1]
            if not slot.isdigit():
                continue
            i = int(slot)
            unused = (
                i >= arch.depth
                or (name.startswith("heads") and arch.layers[i].heads is None)
                or (name.startswith("window") and arch.layers[i].window is None)
            )
            if unused:
                if isinstance(dist, optuna.distributions.CategoricalDistribution):
                    params[name] = dist.choices[rng.integers(len(dist.choices))]
                else:
                    params[name] = int(rng.integers(dist.low, dist.high + 1))
        assert decode(space, params) == arch


def test_a_study_samples_only_archs_of_the_space():
    space = make_tiny_space()
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0)
    )
    seen = set()
    for _ in range(200):
        trial = study.ask(distributions(space))
        arch = decode(space, trial.params)
        space.validate(arch)
        seen.add(arch.depth)
        study.tell(trial, [0.0, 0.0])
    assert seen == set(space.exits)
