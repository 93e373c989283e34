"""The search's objective against independent computations, for one-shot and few-shot supernets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_space
from nas.search.evaluator import (
    Evaluator,
    build_payload,
    open_supernet,
    payload_from_net,
    validation_batches,
)
from nas.search_space import CheckpointError
from nas.supernet import Supernet
from nas.supernet.checkpoint import load_supernet
from nas.supernet.few_shot import load_few_shot, train_few_shot
from nas.supernet.training import TrainConfig, train


def _reference_loss(net: Supernet, arch, inputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean next-token cross-entropy, batch by batch, with plain torch calls."""
    losses = []
    with torch.no_grad():
        for x, y in zip(inputs, targets, strict=True):
            logits = net.eval()(torch.from_numpy(x), arch)  # (B, T, V)
            losses.append(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    torch.from_numpy(y).reshape(-1),
                    reduction="sum",
                ).item()
            )
    return sum(losses) / targets.size


def test_validation_batches_are_fixed_windows_of_the_split():
    tokens = np.arange(10_000) % 251
    inputs, targets = validation_batches(tokens, 4, 16, 3)
    assert inputs.shape == targets.shape == (3, 4, 16)
    assert np.array_equal(inputs[:, :, 1:], targets[:, :, :-1])  # targets are shifted inputs
    again = validation_batches(tokens, 4, 16, 3)
    assert np.array_equal(again[0], inputs)  # no randomness


def test_inherited_loss_equals_a_plain_cross_entropy(one_thread):
    space = make_tiny_space()
    net = Supernet(space, seed=3)
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 256, (2, 3, 12))
    targets = rng.integers(0, 256, (2, 3, 12))
    evaluator = Evaluator(payload_from_net(net, inputs, targets))
    for arch in [space.smallest(), space.largest(), *space.sample_many(10, seed=1)]:
        assert evaluator.loss(arch) == pytest.approx(
            _reference_loss(net, arch, inputs, targets), rel=1e-6
        )


def test_a_few_shot_supernet_scores_each_arch_with_its_own_sub_supernet(
    tmp_path, corpus, one_thread
):
    space = make_tiny_space(mixers=("attention", "conv", "skip"), exits=(2, 3))
    config = TrainConfig(steps=4, batch_size=4, seq_len=16, eval_every=4, checkpoint_every=4)
    train_few_shot(space, corpus, config, (0,), 2, tmp_path / "fs", device="cpu", progress=False)
    source = open_supernet(tmp_path / "fs")
    assert source.split_layers == (0,) and len(source.checkpoints) == 3
    inputs, targets = validation_batches(corpus.val, 2, 16, 2)
    evaluator = Evaluator(build_payload(source, inputs, targets))
    runs = load_few_shot(tmp_path / "fs")
    for arch in space.sample_many(12, seed=4):
        own = load_supernet(runs.sub_for(arch))
        assert evaluator.loss(arch) == pytest.approx(
            _reference_loss(own, arch, inputs, targets), rel=1e-6
        )
    # The one-shot phase is not what a few-shot arch is scored with.
    one_shot = open_supernet(tmp_path / "fs" / "one_shot")
    plain = Evaluator(build_payload(one_shot, inputs, targets))
    arch = space.sample(seed=4)
    assert plain.loss(arch) != evaluator.loss(arch)


def test_open_supernet_refuses_what_is_not_one(tmp_path, corpus):
    with pytest.raises(CheckpointError, match="no such supernet"):
        open_supernet(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        open_supernet(tmp_path / "empty")
    space = make_tiny_space()
    config = TrainConfig(steps=1, batch_size=2, seq_len=8, eval_every=1, checkpoint_every=1)
    train(space, corpus, config, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(CheckpointError, match="another search space"):
        open_supernet(tmp_path / "run", make_tiny_space(d_model=(16, 24)))
