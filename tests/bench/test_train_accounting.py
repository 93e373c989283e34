"""The bench's training accounting (bench/train_accounting.py): how many steps trained an
arch's own weights, and how many passes a run logged."""

from __future__ import annotations

import pytest
from bench_modules import bench_module

from conftest import make_tiny_space
from nas import Arch, LayerArch
from nas.supernet.checkpoint import read_checkpoint
from nas.supernet.training import METRICS_FILE, MetricsLog, TrainConfig, train, usage_key

accounting = bench_module("train_accounting")
exposure_steps, logged_passes = accounting.exposure_steps, accounting.logged_passes

TINY = {"batch_size": 2, "seq_len": 16, "eval_batches": 2, "reference_archs": 2, "warmup_steps": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_exposure_is_the_mean_over_layers_of_the_steps_that_trained_each():
    """Against counts written by hand: a skip layer counts every step unless it has an FFN
    of its own; a mixer never drawn at its slot counts 0."""
    usage = {"0:conv": 4, "1:ssm": 2, "2:skip": 3}
    arch = Arch(32, (LayerArch("conv", ffn=32), LayerArch("ssm", ffn=32), LayerArch("skip")))
    assert exposure_steps(arch, usage, 10) == pytest.approx((4 + 2 + 10) / 3)
    assert exposure_steps(arch, usage, 10, ffn_per_mixer=True) == pytest.approx((4 + 2 + 3) / 3)
    never = Arch(32, (LayerArch("glu", ffn=32), LayerArch("conv", ffn=32)))
    assert exposure_steps(never, usage, 10) == 0.0  # conv was drawn at slot 0, not slot 1


def test_exposure_of_a_run_s_archs_follows_its_usage_counts(tiny_space, corpus, tmp_path):
    config = TrainConfig(steps=6, **TINY)
    result = train(tiny_space, corpus, config, tmp_path / "run", progress=False)
    usage = read_checkpoint(result.checkpoint).state["usage"]
    largest, smallest = tiny_space.largest(), tiny_space.smallest()
    assert exposure_steps(largest, usage, 6) == exposure_steps(smallest, usage, 6) == 6
    single = Arch(32, (LayerArch("conv", ffn=32),))
    assert exposure_steps(single, usage, 6) == usage.get(usage_key(0, "conv"), 0) < 6


def test_family_archs_are_exposed_at_every_step(tiny_space, corpus, tmp_path):
    archs = [
        a for a in tiny_space.sample_many(50, seed=11) if len({la.mixer for la in a.layers}) > 1
    ]
    config = TrainConfig(steps=5, family=tuple(a.to_json() for a in archs[:2]), **TINY)
    result = train(tiny_space, corpus, config, tmp_path / "run", progress=False)
    usage = read_checkpoint(result.checkpoint).state["usage"]
    for arch in config.family_archs(tiny_space):
        assert exposure_steps(arch, usage, 5) == 5


def test_logged_passes_sum_a_run_s_metrics_or_are_none_for_an_older_log(corpus, tmp_path):
    one = make_tiny_space(d_model=(32,), heads=(2,), ffn=(32,), exits=(3,))
    pins = tuple(f"{i}:conv" for i in range(one.max_depth))
    config = TrainConfig(steps=3, pinned_mixers=pins, distill_weight=0.0, **TINY)
    train(one, corpus, config, tmp_path / "run", progress=False)
    # Largest, smallest and the random students are all the one arch left: one pass a step.
    assert logged_passes(tmp_path / "run") == 3
    # A run from before the trainer logged passes has no count, rather than a wrong one.
    log = MetricsLog(tmp_path / "run" / METRICS_FILE)
    log.append({"kind": "train", "step": 4})
    assert logged_passes(tmp_path / "run") is None
